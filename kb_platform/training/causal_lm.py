"""The causal-LM family of the trainer: a Hugging Face Llama/Gemma/Qwen model fine-tuned on
tokenised blocks (next-token loss).

The model is built on the meta device from its config, ``fully_shard``-ed per decoder layer
(plus the embeddings and an untied head), materialised empty on the device and filled by
``torch.distributed.checkpoint`` from the Hugging Face safetensors: every rank reads only its
shards, none holds the whole model. The export is written the same way
(``HuggingFaceStorageWriter``, consolidated into safetensors with the config and tokenizer
beside them), so ``AutoModelForCausalLM.from_pretrained`` and the generator load it.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
import torch.nn.functional as F
from torch.distributed.checkpoint.state_dict import get_model_state_dict
from torch.distributed.device_mesh import DeviceMesh

from kb_platform.training.architectures import decoder_layers, meta_model
from kb_platform.training.config import TrainConfig
from kb_platform.training.sharding import ShardingPlan, shard_units
from kb_platform.training.token_shards import TokenBlocks

# What a Hugging Face model folder carries besides its weights, copied into an export.
SIDE_FILES = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "chat_template.jinja",
)


def tied_parameters(model: torch.nn.Module) -> frozenset[str]:
    """Names that share another parameter's tensor (a head tied to the embeddings)."""
    every = {name for name, _ in model.named_parameters(remove_duplicate=False)}
    return frozenset(every - {name for name, _ in model.named_parameters()})


def fsdp_units(model: torch.nn.Module, tied: frozenset[str]) -> list[torch.nn.Module]:
    """Each decoder layer; the embeddings and the head as units of their own unless tied (a
    tied pair stays in the root, one tensor in one unit)."""
    units = decoder_layers(model)
    if not tied:
        units = [model.get_input_embeddings(), *units, model.get_output_embeddings()]
    return units


def _init_buffers(model: Any) -> None:
    """Non-persistent buffers (rotary frequencies, embedding scales) are computed, not stored:
    after ``to_empty`` the model's own initialiser recomputes them."""
    for module in model.modules():
        if next(module.buffers(recurse=False), None) is not None:
            model._init_weights(module)


class CausalLmFamily:
    unit = "tokens"

    def __init__(self, config: TrainConfig, device: torch.device) -> None:
        from transformers import AutoConfig

        self.config = config
        self.device = device
        self.source = Path(config.init_from or "")
        self.model_config = AutoConfig.from_pretrained(  # nosec B615 # local folder, no download
            str(self.source), local_files_only=True
        )
        self.blocks = TokenBlocks(config.tokens)
        self.tied: frozenset[str] = frozenset()

    def build(self, plan: ShardingPlan, mesh: DeviceMesh) -> torch.nn.Module:
        model = meta_model(self.model_config)
        self.tied = tied_parameters(model)
        if self.config.activation_checkpointing:
            model.gradient_checkpointing_enable(
                gradient_checkpointing_kwargs={"use_reentrant": False}
            )
        model.config.use_cache = False
        shard_units(model, fsdp_units(model, self.tied), plan, mesh)
        model.to_empty(device=self.device)
        with torch.no_grad():
            _init_buffers(model)
        dcp.load(self._state(model), storage_reader=dcp.HuggingFaceStorageReader(str(self.source)))
        return model

    def _state(self, model: torch.nn.Module) -> dict[str, Any]:
        state = get_model_state_dict(model)
        for name in self.tied:
            state.pop(name, None)
        return state

    def examples(self) -> int:
        return len(self.blocks)

    def batches(self, index_batches: Iterable[list[int]]) -> Iterator[torch.Tensor]:
        for indices in index_batches:
            yield self.blocks.take(indices)

    def loss(self, model: torch.nn.Module, batch: torch.Tensor) -> tuple[torch.Tensor, int]:
        ids = batch.to(self.device)
        inputs, labels = ids[:, :-1], ids[:, 1:]
        logits = model(input_ids=inputs).logits
        loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), labels.reshape(-1))
        return loss, labels.numel()

    def after_step(self, model: torch.nn.Module) -> None:
        pass

    def describe(self) -> dict[str, Any]:
        return {"blocks": len(self.blocks), "seq_len": self.blocks.seq_len}

    def export(self, model: torch.nn.Module, target: Path, metrics: dict[str, Any]) -> None:
        """Every rank writes its shards, then they are consolidated into safetensors."""
        if dist.get_rank() == 0 and target.exists():
            shutil.rmtree(target)
        dist.barrier()
        writer = dcp.HuggingFaceStorageWriter(
            str(target), save_distributed=True, enable_consolidation=True
        )
        dcp.save(self._state(model), storage_writer=writer)
        dist.barrier()
        if dist.get_rank() == 0:
            shutil.rmtree(target / "sharded", ignore_errors=True)
            for name in SIDE_FILES:
                if (self.source / name).is_file():
                    shutil.copyfile(self.source / name, target / name)
            (target / "metrics.json").write_text(json.dumps(metrics, indent=2))
        dist.barrier()
