"""Distributed checkpoints (``torch.distributed.checkpoint``): every rank writes its shards of the
model and optimizer, plus the training progress, under ``<dir>/step-<N>``; ``latest`` names the
newest complete one. An export is the consolidated, unsharded model that inference loads."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_state_dict,
)
from torch.distributed.checkpoint.stateful import Stateful

from kb_platform.training.spec import SPEC, WEIGHTS, ClipSpec

LATEST = "latest"


@dataclass
class Progress:
    step: int = 0  # optimizer steps done
    epoch: int = 0
    batch_in_epoch: int = 0  # batches of ``epoch`` already consumed


class TrainingState(Stateful):
    def __init__(
        self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, progress: Progress
    ) -> None:
        self.model = model
        self.optimizer = optimizer
        self.progress = progress

    def state_dict(self) -> dict[str, Any]:
        model_state, optimizer_state = get_state_dict(self.model, self.optimizer)
        return {"model": model_state, "optim": optimizer_state, "progress": asdict(self.progress)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        set_state_dict(
            self.model,
            self.optimizer,
            model_state_dict=state_dict["model"],
            optim_state_dict=state_dict["optim"],
        )
        self.progress.__dict__.update(state_dict["progress"])


def save(directory: Path, state: TrainingState) -> Path:
    target = directory / f"step-{state.progress.step}"
    dcp.save({"training": state}, checkpoint_id=str(target))
    dist.barrier()
    if dist.get_rank() == 0:  # only a finished checkpoint is ever named latest
        marker = directory / f".{LATEST}.tmp"
        marker.write_text(target.name)
        marker.replace(directory / LATEST)
    dist.barrier()
    return target


def resume(directory: Path, state: TrainingState) -> bool:
    """Loads the latest complete checkpoint into ``state``; False when there is none."""
    marker = directory / LATEST
    if not marker.exists():
        return False
    dcp.load({"training": state}, checkpoint_id=str(directory / marker.read_text().strip()))
    return True


def export(model: torch.nn.Module, spec: ClipSpec, target: Path, metrics: dict[str, Any]) -> None:
    """The full model gathered on rank 0 and written as safetensors with its spec."""
    from safetensors.torch import save_file

    full = get_model_state_dict(
        model, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
    )
    if dist.get_rank() == 0:
        target.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().float().contiguous() for k, v in full.items()}
        save_file(tensors, str(target / WEIGHTS))
        (target / SPEC).write_text(spec.to_json())
        (target / "metrics.json").write_text(json.dumps(metrics, indent=2))
    dist.barrier()
