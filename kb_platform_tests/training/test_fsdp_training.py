"""FSDP training with 2 ranks on CPU (gloo): checkpoints, a kill and a resume on the same loss
curve, the export loaded by the inference encoder, deterministic vectors, the promotion gate."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
from PIL import Image

from kb_platform.models.clip_encoder import ClipEncoder
from kb_platform.training.checkpoints import LATEST
from kb_platform.training.config import TrainConfig
from kb_platform.training.data import Example, load_image
from kb_platform.training.evaluation import text_to_image_recall
from kb_platform.training.promotion import promotion_gate
from kb_platform_tests.training.conftest import finish, torchrun


def losses(config: TrainConfig) -> dict[int, float]:
    lines = config.metrics_file.read_text().splitlines()
    return {row["step"]: row["loss"] for row in map(json.loads, lines)}


def kill_tree(pid: int) -> None:
    parent = psutil.Process(pid)
    for process in [*parent.children(recursive=True), parent]:
        process.send_signal(signal.SIGKILL)


def latest_step(config: TrainConfig) -> int | None:
    marker = config.checkpoint_dir / LATEST
    return int(marker.read_text().split("-")[1]) if marker.exists() else None


def test_a_killed_run_resumes_on_the_same_loss_curve_and_exports(
    train_config: TrainConfig, tmp_path: Path
) -> None:
    reference = TrainConfig(**{**train_config.__dict__, "out_dir": str(tmp_path / "reference")})
    finish(torchrun(reference))
    expected = losses(reference)
    assert sorted(expected) == list(range(1, 9))

    process = torchrun(train_config)
    deadline = time.monotonic() + 240
    while (latest_step(train_config) or 0) < 4:
        assert process.poll() is None, process.stdout.read()
        assert time.monotonic() < deadline, "no checkpoint at step 4"
        time.sleep(0.05)
    kill_tree(process.pid)  # torchrun and both ranks (each in a session of its own), mid-training
    process.wait()
    saved = latest_step(train_config)
    assert saved is not None and 4 <= saved < 8
    assert not train_config.export_dir.exists()

    finish(torchrun(train_config))
    metrics = json.loads((train_config.export_dir / "metrics.json").read_text())
    assert metrics["resumed"] is True
    assert metrics["steps"] == 8 and metrics["steps_this_run"] == 8 - saved
    assert metrics["ranks"] == 2 and len(metrics["samples_per_s_per_rank"]) == 2
    resumed = losses(train_config)
    for step in range(saved + 1, 9):  # the steps after the resume repeat the reference's
        assert resumed[step] == pytest.approx(expected[step], rel=1e-3, abs=1e-4), step

    encoder = ClipEncoder(train_config.export_dir)
    image = load_image(json.loads(Path(train_config.manifest).read_text().splitlines()[0])["image"])
    first = encoder.encode_images([image, Image.new("RGB", (80, 120), "white")])
    again = ClipEncoder(train_config.export_dir).encode_images(
        [image, Image.new("RGB", (80, 120), "white")]
    )
    assert first.shape == (2, 512)
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(first, again)  # same checkpoint, same input: same vector
    texts = encoder.encode_texts(["a page of a report", "a page of a report"])
    np.testing.assert_array_equal(texts[0], texts[1])


def test_the_promotion_gate_rejects_a_worse_checkpoint(
    train_config: TrainConfig, pair_examples: list[Example], tmp_path: Path
) -> None:
    trained = TrainConfig(**{**train_config.__dict__, "out_dir": str(tmp_path / "trained")})
    untrained = TrainConfig(**{**train_config.__dict__, "out_dir": str(tmp_path / "untrained")})
    finish(torchrun(trained, steps=12, checkpoint_every=12, activation_checkpointing=True))
    finish(torchrun(untrained, steps=0))  # the initial weights, exported as they are

    good = text_to_image_recall(ClipEncoder(trained.export_dir), pair_examples)
    bad = text_to_image_recall(ClipEncoder(untrained.export_dir), pair_examples)
    assert good["recall@1"] > bad["recall@1"]

    rejected = promotion_gate(bad, good)
    assert not rejected.passed and "recall@1" in rejected.regressions
    assert promotion_gate(good, bad).passed
    assert promotion_gate(good, None).passed  # the first checkpoint has nothing to beat
