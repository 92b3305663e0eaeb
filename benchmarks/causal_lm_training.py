"""Fine-tuning a causal LM with the FSDP trainer: tokens/s per rank, scaling efficiency from one
rank to N, MFU on GPUs, peak GPU memory, and held-out perplexity before and after.

On this CPU machine (the answer generator, real weights from the model store, Cranfield text):

    .venv/bin/python benchmarks/causal_lm_training.py --model gemma-3-270m --ranks 1,2

On a GPU machine (benchmarks/gpu_fsdp.sh causal-lm: an architecture with random weights made
there, random tokens; throughput does not depend on what the weights are):

    python3 benchmarks/causal_lm_training.py --model llama-3.2-1b --random-init --data random \\
        --ranks 1 --steps 30 --batch 8 --seq-len 2048

Needs torch, transformers, pyarrow, fsspec, safetensors and tokenizers only (what a GPU image
has): the platform's settings and services are not imported.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kb_platform.training.architectures import PRESETS, load_config
from kb_platform.training.config import TrainConfig
from kb_platform.training.token_shards import TokenBlocks, write_shards

# bf16 dense peak per GPU, TFLOP/s (spec sheets), for MFU
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10G": 125.0}


def model_folder(args: argparse.Namespace, work: Path) -> Path:
    if Path(args.model).is_dir():
        return Path(args.model)
    if args.model == "gemma-3-270m" and not args.random_init:
        from kb_platform.models.generator import ensure_in_store

        return ensure_in_store()
    if args.model not in PRESETS:
        raise SystemExit(f"--model: a folder or one of {sorted(PRESETS)}")
    if not args.random_init:
        raise SystemExit(f"{args.model}: no weights here; pass --random-init to time it")
    from transformers import AutoModelForCausalLM

    folder = work / "random-init"
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(load_config(args.model))
    model.save_pretrained(folder)
    del model
    return folder


def token_data(args: argparse.Namespace, folder: Path, work: Path) -> tuple[Path, Path]:
    train, held = work / "tokens-train", work / "tokens-held"
    if args.data == "random":
        vocab = load_config(str(folder)).vocab_size
        rng = np.random.default_rng(0)
        docs = [rng.integers(0, vocab, 4096).tolist() for _ in range(args.random_docs)]
        write_shards(docs[:-4], list, 0, args.seq_len, str(train))
        write_shards(docs[-4:], list, 0, args.seq_len, str(held))
        return train, held
    from tokenizers import Tokenizer

    from kb_platform.evaluation.cranfield import load_documents

    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    eos = load_config(str(folder)).eos_token_id
    eos = eos[0] if isinstance(eos, list) else eos
    docs = load_documents(Path(args.corpus) / "retrieval/cranfield")

    def ids(text: str) -> list[int]:
        return tokenizer.encode(text, add_special_tokens=False).ids

    held_docs = docs[: args.held_out_docs]  # the first documents are held out
    write_shards((d.text for d in docs[args.held_out_docs :]), ids, eos, args.seq_len, str(train))
    write_shards((d.text for d in held_docs), ids, eos, args.seq_len, str(held))
    return train, held


@torch.no_grad()
def perplexity(model_dir: Path, held: Path, limit: int) -> float:
    from transformers import AutoModelForCausalLM

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    model.to(device).eval()
    blocks = TokenBlocks(str(held))
    total = count = 0.0
    for start in range(0, min(len(blocks), limit), 4):
        batch = blocks.take(list(range(start, min(start + 4, len(blocks), limit)))).to(device)
        logits = model(input_ids=batch[:, :-1]).logits.float()
        loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1), reduction="sum"
        )
        total += float(loss)
        count += batch[:, 1:].numel()
    return math.exp(total / count)


def train(config: TrainConfig, ranks: int) -> list[dict]:
    started = time.perf_counter()
    result = subprocess.run(
        config.launch_command(ranks), capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        print(result.stdout[-3000:], result.stderr[-3000:], file=sys.stderr)
        raise SystemExit(f"training with {ranks} rank(s) failed")
    lines = [json.loads(x) for x in config.metrics_file.read_text().splitlines()]
    print(f"  {ranks} rank(s): {len(lines)} windows in {time.perf_counter() - started:.0f} s")
    return lines


def flops_per_token(folder: Path, seq_len: int) -> float:
    """6 x the parameters a token passes through (the embedding lookup is free) + attention's
    12 x layers x hidden x sequence (forward and backward; recomputation not counted)."""
    from kb_platform.training.architectures import model_shape

    shape = model_shape(str(folder))
    dense = shape.total_params - shape.embedding_params
    if shape.head_params == 0:  # tied: the head's matmul is still done
        dense += shape.embedding_params
    return 6.0 * dense + 12.0 * shape.num_layers * shape.hidden * seq_len


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gemma-3-270m")
    parser.add_argument("--random-init", action="store_true")
    parser.add_argument("--data", choices=["cranfield", "random"], default="cranfield")
    parser.add_argument("--corpus", default="../shared/corpus")
    parser.add_argument("--held-out-docs", type=int, default=40)
    parser.add_argument("--random-docs", type=int, default=400)
    parser.add_argument("--ranks", default="1,2")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--batch", type=int, default=2, help="blocks per rank and micro-step")
    parser.add_argument("--grad-accumulation", type=int, default=1)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--threads-per-rank", type=int, default=1)
    parser.add_argument("--no-activation-checkpointing", action="store_true")
    parser.add_argument("--perplexity-blocks", type=int, default=64)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    work = args.out or Path(tempfile.mkdtemp(prefix="kb-lm-bench-"))
    gpus = torch.cuda.device_count()
    name = torch.cuda.get_device_name() if gpus else f"{os.cpu_count()} CPUs"
    print(f"machine: {platform.machine()}, {name}, torch {torch.__version__}; work: {work}")

    folder = model_folder(args, work)
    train_dir, held = token_data(args, folder, work)
    print(
        f"model {args.model} ({folder}); blocks of {args.seq_len} tokens: "
        f"{len(TokenBlocks(str(train_dir)))} training, {len(TokenBlocks(str(held)))} held out"
    )
    base = TrainConfig(
        out_dir="",
        family="causal_lm",
        init_from=str(folder),
        tokens=str(train_dir),
        steps=args.steps,
        batch_size=args.batch,
        grad_accumulation=args.grad_accumulation,
        max_grad_norm=1.0,
        lr=args.lr,
        warmup_steps=2,
        activation_checkpointing=not args.no_activation_checkpointing,
        checkpoint_every=args.steps,
        log_every=max(1, args.steps // 6),
        threads_per_rank=args.threads_per_rank,
    )
    runs: dict[int, tuple[TrainConfig, list[dict]]] = {}
    for ranks in [int(r) for r in args.ranks.split(",")]:
        config = TrainConfig(**{**base.__dict__, "out_dir": str(work / f"ranks-{ranks}")})
        runs[ranks] = (config, train(config, ranks))

    per_token = flops_per_token(folder, args.seq_len)
    peak = next((v for k, v in PEAK_TFLOPS.items() if k in name), None) if gpus else None
    print("\n| ranks | tokens/s | per rank | scaling efficiency | MFU | peak GPU GiB | loss |")
    print("|---|---|---|---|---|---|---|")
    base_rate = None
    for ranks, (_, lines) in sorted(runs.items()):
        steady = lines[1:] or lines  # the first window holds the warm-up
        rate = float(np.mean([line["samples_per_s"] for line in steady]))
        base_rate = base_rate or rate / ranks
        mfu = f"{rate / ranks * per_token / (peak * 1e12):.1%}" if peak else "-"
        memory = lines[-1].get("peak_gpu_memory_gib", "-")
        print(
            f"| {ranks} | {rate:,.0f} | {rate / ranks:,.0f} | {rate / (ranks * base_rate):.2f} "
            f"| {mfu} | {memory} | {lines[-1]['loss']:.3f} |"
        )
    print(f"FLOPs per token (6N + attention): {per_token / 1e9:.2f} G")
    if args.data == "cranfield":
        last = runs[max(runs)][0]
        before = perplexity(folder, held, args.perplexity_blocks)
        after = perplexity(last.export_dir, held, args.perplexity_blocks)
        print(
            f"held-out perplexity ({args.held_out_docs} Cranfield abstracts never trained on): "
            f"{before:.2f} before, {after:.2f} after {args.steps} steps on {max(runs)} ranks"
        )


if __name__ == "__main__":
    main()
