"""Where answer-generator checkpoints live, how a fine-tuning run is configured and what the
promotion gate asks, as a resource."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from dagster import ConfigurableResource
from pydantic import Field

from kb_platform.config import Settings
from kb_platform.models.generator import MODEL_NAME
from kb_platform.training.config import TrainConfig
from kb_platform.training.generator_promotion import (
    PromotedGenerator,
    promote,
    promoted,
    weights_version,
)


class GeneratorTrainingResource(ConfigurableResource):
    root_dir: str = Field(description="runs, exports and promoted.json (a shared volume in prod)")
    ranks: int = Field(default=2, description="torchrun processes beside the run")
    launch_on_cluster: bool = Field(
        default=False,
        description="train as a Kubernetes Job (the training_cluster resource: nodes x GPUs) "
        "instead of torchrun beside the run; root_dir must then be the shared training volume",
    )
    steps: int = 100
    batch_size: int = Field(default=2, description="blocks per rank and micro-step")
    grad_accumulation: int = 1
    seq_len: int = 256
    lr: float = 5e-5
    warmup_steps: int = 10
    max_grad_norm: float | None = 1.0
    checkpoint_every: int = 50
    threads_per_rank: int = 1
    mixed_precision: str = "auto"
    activation_checkpointing: bool = True
    eval_blocks: int = Field(default=64, description="held-out blocks the perplexity reads")
    max_perplexity_increase: float = Field(
        default=0.0, description="relative: 0.02 lets the held-out perplexity rise by 2 %"
    )
    base_model_dir: str | None = Field(
        default=None,
        description="the model fine-tuned while none is promoted (a Hugging Face folder); "
        "default: the generator in the BentoML model store",
    )
    model_name: str = Field(default=MODEL_NAME, description="the generator's model-store name")
    # The citation part of the gate (benchmarks/answers.py's measure, on a Cranfield index of
    # its own); 0 questions turns it off.
    citation_questions: int = 30
    citation_sources: int = 4
    max_citation_precision_drop: float = 0.05
    citation_corpus_dir: str = ""  # the Cranfield folder (cran.all.1400, cran.qry, cranqrel)
    citation_index_base: str = "generator-gate-cranfield"
    citation_index_docs: int = 1400

    @classmethod
    def fields_from(cls, settings: Settings) -> dict[str, Any]:
        """The fields this environment's settings give (the rest keep their defaults)."""
        return {
            "root_dir": str(settings.data_dir / "generator"),
            "citation_corpus_dir": str(settings.corpus_dir / "retrieval" / "cranfield"),
        }

    @property
    def root(self) -> Path:
        return Path(self.root_dir)

    def promoted(self) -> PromotedGenerator | None:
        return promoted(self.root)

    def promote(self, checkpoint: PromotedGenerator) -> PromotedGenerator:
        return promote(self.root, checkpoint)

    def base_model(self) -> Path:
        """The model fine-tuned while none is promoted."""
        if self.base_model_dir:
            return Path(self.base_model_dir)
        from kb_platform.models.generator import ensure_in_store

        return ensure_in_store(self.model_name)

    def source_model(self) -> Path:
        """What a run fine-tunes and a candidate is measured against: the promoted export, or
        the base model."""
        current = self.promoted()
        return Path(current.export_dir) if current else self.base_model()

    def staged(self, source: Path) -> Path:
        """``source`` where training pods can read it: itself when it is on the shared volume
        (a promoted export), else a copy under ``root_dir/sources``, one per weights version."""
        if source.is_relative_to(self.root):
            return source
        target = self.root / "sources" / weights_version(source)
        if not target.is_dir():
            partial = target.with_name(target.name + ".partial")
            shutil.rmtree(partial, ignore_errors=True)
            shutil.copytree(source, partial)
            partial.rename(target)
        return target

    def train_config(self, source: Path, tokens: Path, out_dir: Path) -> TrainConfig:
        return TrainConfig(
            out_dir=str(out_dir),
            family="causal_lm",
            init_from=str(source),
            tokens=str(tokens),
            steps=self.steps,
            batch_size=self.batch_size,
            grad_accumulation=self.grad_accumulation,
            max_grad_norm=self.max_grad_norm,
            lr=self.lr,
            warmup_steps=self.warmup_steps,
            mixed_precision=self.mixed_precision,
            activation_checkpointing=self.activation_checkpointing,
            checkpoint_every=self.checkpoint_every,
            log_every=max(1, min(10, self.steps // 5)),
            threads_per_rank=self.threads_per_rank,
        )


def generator_training_for(settings: Settings) -> GeneratorTrainingResource:
    """The resource with this environment's folders (the rest of its fields keep their defaults,
    and a run's resource config can change them)."""
    return GeneratorTrainingResource(**GeneratorTrainingResource.fields_from(settings))
