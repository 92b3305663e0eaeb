"""The CLIP family of the trainer: the knowledge base's image/text model, contrastive loss."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from open_clip.loss import ClipLoss
from torch.distributed.device_mesh import DeviceMesh
from torch.utils.data import DataLoader

from kb_platform.training import checkpoints
from kb_platform.training.config import TrainConfig
from kb_platform.training.data import PairDataset, collate, read_manifest
from kb_platform.training.sharding import ShardingPlan, shard_model
from kb_platform.training.spec import WEIGHTS, build_model, image_preprocess, tokenizer


class ClipFamily:
    unit = "pairs"

    def __init__(self, config: TrainConfig, device: torch.device) -> None:
        self.config = config
        self.device = device
        self.dataset: PairDataset | None = None
        self.loss_fn = ClipLoss(
            rank=dist.get_rank(), world_size=dist.get_world_size(), gather_with_grad=True
        )

    def build(self, plan: ShardingPlan, mesh: DeviceMesh) -> torch.nn.Module:
        model = build_model(self.config.spec)
        if self.config.init_from:
            from safetensors.torch import load_file

            model.load_state_dict(load_file(str(Path(self.config.init_from) / WEIGHTS)))
        model.to(self.device)
        # FSDP's implicit prefetch: the two towers run in an order the loss decides
        model = shard_model(
            model,
            activation_checkpointing=self.config.activation_checkpointing,
            plan=dataclasses.replace(plan, prefetch=0),
            mesh=mesh,
        )
        examples = read_manifest(Path(self.config.manifest))
        self.dataset = PairDataset(
            examples, image_preprocess(self.config.spec, model), tokenizer(self.config.spec)
        )
        return model

    def examples(self) -> int:
        assert self.dataset is not None, "build() first"
        return len(self.dataset)

    def batches(self, index_batches: Iterable[list[int]]) -> Iterator[Any]:
        yield from DataLoader(
            self.dataset,
            batch_sampler=list(index_batches),
            collate_fn=collate,
            num_workers=self.config.num_workers,
        )

    def loss(self, model: torch.nn.Module, batch: Any) -> tuple[torch.Tensor, int]:
        images, texts = batch
        image_features, text_features, logit_scale = model(
            images.to(self.device), texts.to(self.device)
        )[:3]
        loss = self.loss_fn(image_features.float(), text_features.float(), logit_scale.float())
        return loss, int(images.shape[0])

    def after_step(self, model: torch.nn.Module) -> None:
        with torch.no_grad():  # CLIP's temperature stays within 100, as in open_clip
            model.logit_scale.clamp_(0, math.log(100))

    def describe(self) -> dict[str, Any]:
        return {"pairs": self.examples()}

    def export(self, model: torch.nn.Module, target: Path, metrics: dict[str, Any]) -> None:
        checkpoints.export(model, self.config.spec, target, metrics)
