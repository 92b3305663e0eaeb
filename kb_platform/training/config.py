"""What one training run is asked to do (a JSON file handed to ``torchrun``)."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kb_platform.training.spec import ClipSpec


@dataclass
class TrainConfig:
    manifest: str  # JSON lines of {"image": file, "text": ..., "doc_id": ...}
    out_dir: str  # checkpoints/ and export/ go here
    spec: ClipSpec = field(default_factory=ClipSpec)
    init_from: str | None = None  # an export to fine-tune (the promoted checkpoint)
    steps: int = 200
    batch_size: int = 32  # per rank
    lr: float = 5e-4
    weight_decay: float = 0.1
    warmup_steps: int = 10
    mixed_precision: str = "auto"  # "auto" (bf16 on GPUs that have it) | "bf16" | "no"
    activation_checkpointing: bool = False
    checkpoint_every: int = 50
    log_every: int = 10
    num_workers: int = 0
    threads_per_rank: int = 1
    seed: int = 0

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
