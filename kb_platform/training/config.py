"""What one training run is asked to do (a JSON file handed to ``torchrun``)."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kb_platform.training.spec import ClipSpec

FAMILIES = ("clip", "causal_lm")


@dataclass
class TrainConfig:
    out_dir: str  # checkpoints/ and export/ go here
    family: str = "clip"  # "clip" | "causal_lm" (one loop: kb_platform/training/train.py)
    # clip: JSON lines of {"image": file, "text": ..., "doc_id": ...}
    manifest: str = ""
    spec: ClipSpec = field(default_factory=ClipSpec)
    # clip: an export to fine-tune (the promoted checkpoint); causal_lm: the model to fine-tune,
    # a Hugging Face folder (config.json, *.safetensors, tokenizer) read shard by shard
    init_from: str | None = None
    # causal_lm: a folder (or s3:// prefix) of tokenised Parquet shards (token_shards.py)
    tokens: str = ""
    steps: int = 200
    batch_size: int = 32  # per rank and micro-step
    grad_accumulation: int = 1  # micro-steps per optimizer step
    max_grad_norm: float | None = None  # clip the global gradient norm
    lr: float = 5e-4
    weight_decay: float = 0.1
    warmup_steps: int = 10
    mixed_precision: str = "auto"  # "auto" (bf16 on GPUs that have it) | "bf16" | "no"
    activation_checkpointing: bool = False
    cpu_offload: bool = False  # sharded parameters, gradients and optimizer state on the host
    reshard_after_forward: bool = True  # False: keep gathered units for backward (more memory)
    prefetch: int = 1  # causal_lm: decoder layers all-gathered ahead (0: FSDP's own order)
    replicate: int = 1  # hybrid sharding: replica groups (nodes); ranks / replicate shard each
    checkpoint_every: int = 50
    log_every: int = 10
    num_workers: int = 0
    threads_per_rank: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"family {self.family!r} is not one of {FAMILIES}")
        if self.family == "clip" and not self.manifest:
            raise ValueError("a CLIP run needs a manifest of image/text pairs")
        if self.family == "causal_lm" and not (self.init_from and self.tokens):
            raise ValueError("a causal-LM run needs init_from (the model) and tokens (the data)")
        if self.grad_accumulation < 1 or self.batch_size < 1:
            raise ValueError("batch_size and grad_accumulation must be at least 1")

    @property
    def checkpoint_dir(self) -> Path:
        return Path(self.out_dir) / "checkpoints"

    @property
    def export_dir(self) -> Path:
        return Path(self.out_dir) / "export"

    @property
    def metrics_file(self) -> Path:
        return Path(self.out_dir) / "metrics.jsonl"

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2))

    def launch_command(self, ranks: int) -> list[str]:
        """Writes the config into ``out_dir`` and returns the ``torchrun`` command that trains
        with it: one node, a free rendezvous port of its own, ``ranks`` processes."""
        path = Path(self.out_dir) / "config.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        self.save(path)
        return [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={ranks}",
            "-m",
            "kb_platform.training.train",
            "--config",
            str(path),
        ]

    @classmethod
    def load(cls, path: Path) -> TrainConfig:
        data: dict[str, Any] = json.loads(path.read_text())
        data["spec"] = ClipSpec.from_dict(data.get("spec") or {})
        return cls(**data)
