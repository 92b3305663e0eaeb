"""CLIP training under FSDP on the knowledge base's own pairs: throughput and retrieval quality.

    .venv/bin/python benchmarks/training.py [--steps 60] [--batch-size 16] [--out DIR]

Builds image-text pairs from the corpus PDFs (page renders with their text layer), split by
document into training and held-out pairs, then with ``torchrun``:
- samples per second with 1 rank and with 2 ranks (one CPU thread per rank here; one GPU per
  rank on a GPU machine), the scaling efficiency and the time per epoch;
- text-to-image recall@1/5/10 on the held-out pairs and on the Flickr30k captions of the
  shared corpus for the initial weights, after training, and after fine-tuning that checkpoint
  for as many steps again.
The exports stay in ``--out`` (benchmarks/crossmodal.py can use them).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import tempfile
from dataclasses import replace
from pathlib import Path

import torch
from machine_load import printed_machine_load  # benchmarks/, next to this script

from kb_platform.config import get_settings
from kb_platform.models.clip_encoder import ClipEncoder
from kb_platform.training.config import TrainConfig
from kb_platform.training.corpus import corpus_pdf_examples, flickr_examples
from kb_platform.training.data import Example, write_manifest
from kb_platform.training.evaluation import text_to_image_recall


def torchrun(config: TrainConfig, ranks: int) -> dict:
    subprocess.run(config.launch_command(ranks), check=True, capture_output=True)
    return json.loads((config.export_dir / "metrics.json").read_text())


def samples_per_s(config: TrainConfig) -> float:
    """Mean over logged windows, the first (start-up, first batches) left out."""
    rows = [json.loads(line) for line in config.metrics_file.read_text().splitlines()]
    rates = [row["samples_per_s"] for row in rows[1:]] or [rows[0]["samples_per_s"]]
    return statistics.mean(rates)


def recall(export: Path, sets: dict[str, list[Example]]) -> dict[str, dict[str, float]]:
    encoder = ClipEncoder(export)
    return {name: text_to_image_recall(encoder, examples) for name, examples in sets.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=get_settings().corpus_dir)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=16, help="per rank")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    work = args.out or Path(tempfile.mkdtemp(prefix="kb-train-bench-"))
    train, held_out = corpus_pdf_examples(args.corpus, work)
    write_manifest(work / "train.jsonl", train)
    flickr = flickr_examples(args.corpus)
    sets = {"held-out corpus pairs": held_out, "flickr30k captions": flickr}
    base = TrainConfig(
        manifest=str(work / "train.jsonl"),
        out_dir="",
        steps=args.steps,
        batch_size=args.batch_size,
        lr=1e-3,
        warmup_steps=5,
        checkpoint_every=args.steps,
        log_every=5,
    )
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, device {device}"
        + (f" ({torch.cuda.get_device_name()})" if device == "cuda" else "")
    )
    print(f"pairs: {len(train)} training, {len(held_out)} held out, {len(flickr)} flickr captions")

    initial = replace(base, out_dir=str(work / "initial"), steps=0)
    torchrun(initial, 1)
    one = replace(base, out_dir=str(work / "one-rank"), steps=max(args.steps // 2, 10))
    torchrun(one, 1)
    two = replace(base, out_dir=str(work / "two-ranks"))
    trained = torchrun(two, 2)
    tuned = replace(base, out_dir=str(work / "fine-tuned"), init_from=str(two.export_dir), lr=3e-4)
    torchrun(tuned, 2)

    rate_one, rate_two = samples_per_s(one), samples_per_s(two)
    print("\n| ranks | samples/s | per rank | scaling efficiency | time per epoch |")
    print("|---|---|---|---|---|")
    for ranks, rate in ((1, rate_one), (2, rate_two)):
        efficiency = rate / (ranks * rate_one)
        epoch = len(train) / rate
        print(f"| {ranks} | {rate:.1f} | {rate / ranks:.1f} | {efficiency:.2f} | {epoch:.0f} s |")
    print(
        f"2-rank run: {trained['steps']} steps, loss {trained['loss']:.3f}, bf16 {trained['bf16']}"
    )

    print("\n| checkpoint | set | recall@1 | recall@5 | recall@10 |")
    print("|---|---|---|---|---|")
    for name, config in (
        ("initial weights", initial),
        (f"trained ({args.steps} steps)", two),
        (f"fine-tuned (+{args.steps} steps)", tuned),
    ):
        for set_name, scores in recall(config.export_dir, sets).items():
            print(
                f"| {name} | {set_name} | {scores['recall@1']:.3f} | {scores['recall@5']:.3f} "
                f"| {scores['recall@10']:.3f} |"
            )
    print(f"\nexports under {work}")


if __name__ == "__main__":
    with printed_machine_load():
        main()
