"""FSDP2 (``fully_shard``) for both model families: the units each family shards (the CLIP
model's vision blocks and unlocked text layers; a causal LM's decoder layers, its embeddings and
an untied head), then the root. bf16 mixed precision where the device has it, activation
checkpointing, CPU offload, explicit prefetch, and hybrid sharding over a 2-D mesh."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh
from torch.distributed.fsdp import (
    CPUOffloadPolicy,
    MixedPrecisionPolicy,
    OffloadPolicy,
    fully_shard,
)


def wants_bf16(setting: str, device: torch.device) -> bool:
    if setting == "no":
        return False
    if setting == "bf16":
        return True
    return device.type == "cuda" and torch.cuda.is_bf16_supported()  # "auto"


@dataclass(frozen=True)
class ShardingPlan:
    bf16: bool = False
    cpu_offload: bool = False
    reshard_after_forward: bool = True
    prefetch: int = 1  # units all-gathered ahead of the one computing (0: FSDP's own order)

    def kwargs(self, mesh: DeviceMesh | None) -> dict[str, object]:
        policy = (
            MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
            if self.bf16
            else MixedPrecisionPolicy()
        )
        return {
            "mesh": mesh,
            "mp_policy": policy,
            "offload_policy": CPUOffloadPolicy() if self.cpu_offload else OffloadPolicy(),
            "reshard_after_forward": self.reshard_after_forward,
        }


def device_mesh(device: torch.device, world: int, replicate: int) -> DeviceMesh:
    """A 1-D mesh (full sharding over every rank) or, with ``replicate`` > 1, a 2-D
    (replicate, shard) mesh: shard inside a group of ``world / replicate`` ranks (a node),
    replicate across groups (hybrid sharding: only gradient all-reduces cross nodes)."""
    if replicate < 1 or world % replicate:
        raise ValueError(f"{world} ranks cannot be split into {replicate} replica groups")
    if replicate == 1:
        return init_device_mesh(device.type, (world,), mesh_dim_names=("shard",))
    return init_device_mesh(
        device.type, (replicate, world // replicate), mesh_dim_names=("replicate", "shard")
    )


def shard_units(
    model: torch.nn.Module,
    units: Sequence[torch.nn.Module],
    plan: ShardingPlan,
    mesh: DeviceMesh | None = None,
) -> torch.nn.Module:
    """``fully_shard`` each unit, then the root (which keeps what no unit holds); the units
    prefetch the next ``plan.prefetch`` ones in forward and the previous ones in backward."""
    kwargs = plan.kwargs(mesh)
    for unit in units:
        fully_shard(unit, **kwargs)
    fully_shard(model, **kwargs)
    if plan.prefetch > 0 and len(units) > 1:
        for i, unit in enumerate(units):
            ahead = list(units[i + 1 : i + 1 + plan.prefetch])
            behind = list(reversed(units[max(0, i - plan.prefetch) : i]))
            if ahead:
                unit.set_modules_to_forward_prefetch(ahead)  # type: ignore[operator]
            if behind:
                unit.set_modules_to_backward_prefetch(behind)  # type: ignore[operator]
    return model


def shard_model(
    model: torch.nn.Module,
    *,
    activation_checkpointing: bool,
    plan: ShardingPlan,
    mesh: DeviceMesh | None = None,
) -> torch.nn.Module:
    """The CLIP model: each vision block, each unlocked text layer, then the root."""
    if activation_checkpointing:
        model.visual.set_grad_checkpointing(True)
    units = list(model.visual.transformer.resblocks) + [
        layer for layer in _text_layers(model) if any(p.requires_grad for p in layer.parameters())
    ]
    return shard_units(model, units, plan, mesh)


def _text_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The text tower's blocks: a Hugging Face encoder's layers (the MiniLM tower) or an
    open_clip text transformer's residual blocks (pretrained open_clip models)."""
    hf_encoder = getattr(
        getattr(getattr(model, "text", None), "transformer", None), "encoder", None
    )
    if hf_encoder is not None:
        return list(hf_encoder.layer)
    transformer = getattr(model, "transformer", None)
    return list(getattr(transformer, "resblocks", []))
