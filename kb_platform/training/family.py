"""What the training loop asks of a model family (clip_family.py, causal_lm.py)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Protocol

import torch
from torch.distributed.device_mesh import DeviceMesh

from kb_platform.training.sharding import ShardingPlan


class Family(Protocol):
    unit: str  # what a batch's sample count counts: "pairs", "tokens"

    def build(self, plan: ShardingPlan, mesh: DeviceMesh) -> torch.nn.Module:
        """The model, sharded, with its starting weights."""
        ...

    def examples(self) -> int: ...

    def batches(self, index_batches: Iterable[list[int]]) -> Iterator[Any]: ...

    def loss(self, model: torch.nn.Module, batch: Any) -> tuple[torch.Tensor, int]:
        """The batch's mean loss and how many samples it held."""
        ...

    def after_step(self, model: torch.nn.Module) -> None: ...

    def describe(self) -> dict[str, Any]: ...

    def export(self, model: torch.nn.Module, target: Path, metrics: dict[str, Any]) -> None: ...
