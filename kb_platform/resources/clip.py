"""Where CLIP checkpoints live and how a training run is configured, as a resource."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from dagster import ConfigurableResource

from kb_platform.config import Settings
from kb_platform.training.config import TrainConfig
from kb_platform.training.promotion import Promoted, promote, promoted
from kb_platform.training.spec import SPEC, ClipSpec


class ClipResource(ConfigurableResource):
    root_dir: str
    ranks: int = 2
    steps: int = 200
    batch_size: int = 32
    lr: float = 5e-4
    warmup_steps: int = 10
    checkpoint_every: int = 50
    threads_per_rank: int = 1
    text_unlocked_layers: int = 0
    mixed_precision: str = "auto"
    max_recall_drop: float = 0.0
    open_clip_model: str | None = None
    pretrained: str | None = None
    context_length: int = 64

    @classmethod
    def from_settings(cls, settings: Settings) -> ClipResource:
        return cls(
            root_dir=str(settings.clip_root),
            ranks=settings.clip_ranks,
            steps=settings.clip_steps,
            batch_size=settings.clip_batch_size,
            lr=settings.clip_lr,
            text_unlocked_layers=settings.clip_text_unlocked_layers,
            mixed_precision=settings.clip_mixed_precision,
            max_recall_drop=settings.clip_max_recall_drop,
            open_clip_model=settings.clip_open_clip_model,
            pretrained=settings.clip_pretrained,
        )

    @property
    def root(self) -> Path:
        return Path(self.root_dir)

    def promoted(self) -> Promoted | None:
        return promoted(self.root)

    def promote(self, checkpoint: Promoted) -> Promoted:
        return promote(self.root, checkpoint)

    def train_config(self, manifest: Path, out_dir: Path) -> TrainConfig:
        """A run that fine-tunes the promoted checkpoint, or starts from the spec's weights."""
        current = self.promoted()
        if current is not None:  # same architecture as the checkpoint it continues from
            spec = replace(
                ClipSpec.load(Path(current.export_dir) / SPEC),
                text_unlocked_layers=self.text_unlocked_layers,
            )
        else:
            spec = ClipSpec(
                context_length=self.context_length,
                text_unlocked_layers=self.text_unlocked_layers,
                open_clip_model=self.open_clip_model,
                pretrained=self.pretrained,
            )
        return TrainConfig(
            manifest=str(manifest),
            out_dir=str(out_dir),
            spec=spec,
            init_from=current.export_dir if current else None,
            steps=self.steps,
            batch_size=self.batch_size,
            lr=self.lr,
            warmup_steps=self.warmup_steps,
            mixed_precision=self.mixed_precision,
            checkpoint_every=self.checkpoint_every,
            threads_per_rank=self.threads_per_rank,
        )
