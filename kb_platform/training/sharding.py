"""FSDP2 (``fully_shard``) wrapping: each vision block, each unlocked text layer, then the root.
bf16 mixed precision where the device has it; activation checkpointing on request."""

from __future__ import annotations

import torch
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard


def wants_bf16(setting: str, device: torch.device) -> bool:
    if setting == "no":
        return False
    if setting == "bf16":
        return True
    return device.type == "cuda" and torch.cuda.is_bf16_supported()  # "auto"


def shard_model(
    model: torch.nn.Module, *, bf16: bool, activation_checkpointing: bool
) -> torch.nn.Module:
    policy = (
        MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
        if bf16
        else MixedPrecisionPolicy()
    )
    if activation_checkpointing:
        model.visual.set_grad_checkpointing(True)
    for block in model.visual.transformer.resblocks:
        fully_shard(block, mp_policy=policy)
    for layer in _text_layers(model):
        if any(p.requires_grad for p in layer.parameters()):
            fully_shard(layer, mp_policy=policy)
    fully_shard(model, mp_policy=policy)
    return model


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
