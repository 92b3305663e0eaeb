"""The causal-LM path of the one FSDP trainer, 2 ranks on CPU (gloo) with a tiny random Llama:
weights loaded shard by shard and exported back unchanged (full and hybrid sharding), the loss
falls, a killed run resumes on the uninterrupted run's losses, and the export loads in the
answer generator."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from kb_platform.evaluation.cranfield import load_documents
from kb_platform.models.generator import LocalGenerator
from kb_platform.training.config import TrainConfig
from kb_platform.training.token_shards import TokenBlocks, write_shards
from kb_platform_tests.training.conftest import finish, torchrun
from kb_platform_tests.training.test_fsdp_training import kill_tree, latest_step, losses
from kb_platform_tests.training.tiny_llama import tiny_llama

pytestmark = pytest.mark.numerics

SEQ_LEN = 32


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """With the packaged MiniLM's WordPiece vocabulary."""
    from kb_platform.models.registry import text_encoder_path

    tokenizer = text_encoder_path() / "tokenizer.json"
    return tiny_llama(tmp_path_factory.mktemp("tiny-llama"), tokenizer, "[SEP]", "[PAD]")


@pytest.fixture(scope="module")
def token_folders(tmp_path_factory: pytest.TempPathFactory, corpus_dir: Path, tiny_model: Path):
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tiny_model / "tokenizer.json"))
    docs = load_documents(corpus_dir / "retrieval/cranfield")
    base = tmp_path_factory.mktemp("tokens")
    eos = tokenizer.token_to_id("[SEP]")

    def ids(text: str) -> list[int]:
        return tokenizer.encode(text, add_special_tokens=False).ids

    train = write_shards(
        (d.text for d in docs[:60]), ids, eos, SEQ_LEN, str(base / "train"), rows_per_shard=64
    )
    held = write_shards((d.text for d in docs[60:75]), ids, eos, SEQ_LEN, str(base / "held"))
    assert train >= 64 and held >= 8
    return base / "train", base / "held"


def lm_config(tiny_model: Path, tokens: Path, out: Path, **changes: object) -> TrainConfig:
    config = TrainConfig(
        out_dir=str(out),
        family="causal_lm",
        init_from=str(tiny_model),
        tokens=str(tokens),
        steps=8,
        batch_size=4,
        grad_accumulation=2,
        max_grad_norm=1.0,
        lr=3e-3,
        warmup_steps=1,
        activation_checkpointing=True,
        checkpoint_every=2,
        log_every=1,
    )
    return replace(config, **changes)


def tensors(folder: Path) -> dict[str, torch.Tensor]:
    out = {}
    for file in sorted(folder.glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as handle:
            out.update({name: handle.get_tensor(name) for name in handle.keys()})  # noqa: SIM118
    return out


@pytest.mark.parametrize("replicate", [1, 2], ids=["full-shard", "hybrid-shard"])
def test_weights_load_shard_by_shard_and_export_unchanged(
    tiny_model: Path, token_folders: tuple[Path, Path], tmp_path: Path, replicate: int
) -> None:
    config = lm_config(tiny_model, token_folders[0], tmp_path / "run", steps=0, replicate=replicate)
    finish(torchrun(config))
    source, exported = tensors(tiny_model), tensors(config.export_dir)
    assert source.keys() == exported.keys()
    for name, tensor in source.items():
        assert torch.equal(tensor, exported[name]), name
    assert (config.export_dir / "config.json").is_file()
    assert (config.export_dir / "tokenizer.json").is_file()


def held_out_loss(model_dir: Path, held: Path) -> float:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    blocks = TokenBlocks(str(held))
    batch = blocks.take(list(range(len(blocks))))
    with torch.no_grad():
        return float(model(input_ids=batch[:, :-1], labels=batch[:, :-1]).loss)


def test_the_loss_falls_a_killed_run_resumes_on_its_curve_and_the_export_generates(
    tiny_model: Path, token_folders: tuple[Path, Path], tmp_path: Path
) -> None:
    train, held = token_folders
    reference = lm_config(tiny_model, train, tmp_path / "reference")
    finish(torchrun(reference))
    expected = losses(reference)
    assert sorted(expected) == list(range(1, 9))
    assert max(expected[7], expected[8]) < expected[1]
    metrics = json.loads((reference.export_dir / "metrics.json").read_text())
    assert metrics["family"] == "causal_lm" and metrics["unit"] == "tokens"
    assert metrics["grad_norm"] > 0
    # tokens per optimizer step: 2 ranks x 2 micro-steps x 4 blocks x 32 tokens
    assert metrics["samples_per_s"] > 0 and len(metrics["samples_per_s_per_rank"]) == 2
    assert held_out_loss(reference.export_dir, held) < held_out_loss(tiny_model, held)

    killed = lm_config(tiny_model, train, tmp_path / "killed")
    process = torchrun(killed)
    deadline = time.monotonic() + 240
    while (latest_step(killed) or 0) < 4:
        assert process.poll() is None, process.stdout.read()
        assert time.monotonic() < deadline, "no checkpoint at step 4"
        time.sleep(0.05)
    kill_tree(process.pid)
    process.wait()
    saved = latest_step(killed)
    assert saved is not None and 4 <= saved < 8
    finish(torchrun(killed))
    resumed = losses(killed)
    for step in range(saved + 1, 9):
        assert resumed[step] == pytest.approx(expected[step], rel=1e-3, abs=1e-4), step

    generator = LocalGenerator(killed.export_dir, quantize=False)
    generation = generator.generate(
        "the lift of a wing", max_new_tokens=5, stop=["\n\n"], deadline=time.monotonic() + 60
    )
    assert generation.tokens > 0
