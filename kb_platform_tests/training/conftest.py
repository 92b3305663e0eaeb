"""Real training pairs from corpus PDFs (text layers and page renders), and torchrun runs."""

from __future__ import annotations

import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from kb_platform.extraction.limits import Limits
from kb_platform.resources.blob_store import LocalBlobStore
from kb_platform.training.config import TrainConfig
from kb_platform.training.corpus import examples_on_disk, pairs_from_files
from kb_platform.training.data import Example, write_manifest
from kb_platform.training.spec import ClipSpec

PAIRS = 16
SMALL = ClipSpec(context_length=32, vision_layers=2, vision_width=128)


@pytest.fixture(scope="session")
def pair_examples(tmp_path_factory: pytest.TempPathFactory, corpus_dir: Path) -> list[Example]:
    base = tmp_path_factory.mktemp("pairs")
    files = sorted((corpus_dir / "documents/py-pdf-sample-files").rglob("*.pdf"))[:12]
    store = LocalBlobStore(base_dir=str(base / "blobs"))
    pairs = pairs_from_files(files, store, Limits(render_dpi=50))
    assert len(pairs) >= PAIRS, "the sample PDFs should give enough pairs"
    return examples_on_disk(pairs[:PAIRS], store, base / "images")


@pytest.fixture
def train_config(tmp_path: Path, pair_examples: list[Example]) -> TrainConfig:
    write_manifest(tmp_path / "train.jsonl", pair_examples)
    return TrainConfig(
        manifest=str(tmp_path / "train.jsonl"),
        out_dir=str(tmp_path / "run"),
        spec=SMALL,
        steps=8,
        batch_size=4,
        lr=2e-3,
        warmup_steps=2,
        checkpoint_every=2,
        log_every=1,
    )


def torchrun(config: TrainConfig, ranks: int = 2, **changes: object) -> subprocess.Popen:
    """Starts ``torchrun`` on the config (changed as asked) in a process group of its own."""
    return subprocess.Popen(
        replace(config, **changes).launch_command(ranks),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def finish(process: subprocess.Popen, timeout: float = 300) -> str:
    output, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, output[-4000:]
    return output
