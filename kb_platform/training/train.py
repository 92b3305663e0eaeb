"""``torchrun --nproc_per_node N -m kb_platform.training.train --config run.json``

Contrastive training of the CLIP spec under FSDP: gloo on CPU, NCCL on GPUs, same code. Resumes
from the latest distributed checkpoint in the run's folder, writes one metrics line per logged
step and a consolidated export at the end. Under Dagster Pipes (the ``clip_checkpoint`` asset)
rank 0 sends logs and the final metrics to the UI."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from open_clip.loss import ClipLoss
from torch.utils.data import DataLoader

from kb_platform.training import checkpoints
from kb_platform.training.checkpoints import Progress, TrainingState
from kb_platform.training.config import TrainConfig
from kb_platform.training.data import PairDataset, ShardedOrder, collate, read_manifest
from kb_platform.training.sharding import shard_model, wants_bf16
from kb_platform.training.spec import WEIGHTS, build_model, image_preprocess, tokenizer

log = logging.getLogger("kb_platform.training")


def setup() -> torch.device:
    if torch.cuda.is_available():
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local_rank)
        dist.init_process_group("nccl")
        return torch.device("cuda", local_rank)
    dist.init_process_group("gloo")
    return torch.device("cpu")


def learning_rate(config: TrainConfig, step: int) -> float:
    """Linear warm-up, then cosine decay to a tenth."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(config.steps - config.warmup_steps, 1)
    return config.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


@contextlib.contextmanager
def pipes_session() -> Iterator[Any]:
    """Dagster Pipes on rank 0 when launched by Dagster; None otherwise."""
    from dagster_pipes import PipesEnvVarParamsLoader, open_dagster_pipes

    if dist.get_rank() == 0 and PipesEnvVarParamsLoader().is_dagster_pipes_process():
        with open_dagster_pipes() as pipes:
            yield pipes
    else:
        yield None


def initialise(model: torch.nn.Module, config: TrainConfig) -> None:
    if config.init_from:
        from safetensors.torch import load_file

        model.load_state_dict(load_file(str(Path(config.init_from) / WEIGHTS)))


def train(config: TrainConfig, device: torch.device, pipes: Any) -> dict[str, Any]:
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(config.seed)
    torch.set_num_threads(config.threads_per_rank)
    model = build_model(config.spec)
    initialise(model, config)
    model.to(device)
    bf16 = wants_bf16(config.mixed_precision, device)
    model = shard_model(model, bf16=bf16, activation_checkpointing=config.activation_checkpointing)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.lr, weight_decay=config.weight_decay)
    progress = Progress()
    state = TrainingState(model, optimizer, progress)
    resumed = checkpoints.resume(config.checkpoint_dir, state)
    if resumed:
        log.info("rank %d resumed at step %d", rank, progress.step)

    examples = read_manifest(Path(config.manifest))
    dataset = PairDataset(examples, image_preprocess(config.spec, model), tokenizer(config.spec))
    order = ShardedOrder(len(dataset), config.batch_size, rank, world, config.seed)
    if order.batches_per_epoch == 0:
        raise ValueError(
            f"{len(dataset)} pairs are fewer than one batch of {config.batch_size} x {world} ranks"
        )
    loss_fn = ClipLoss(rank=rank, world_size=world, gather_with_grad=True)
    model.train()
    started_at = progress.step
    window_start, window_samples = time.perf_counter(), 0
    last: dict[str, Any] = {}
    while progress.step < config.steps:
        batches = list(order.epoch(progress.epoch, progress.batch_in_epoch))
        loader = DataLoader(
            dataset, batch_sampler=batches, collate_fn=collate, num_workers=config.num_workers
        )
        for images, texts in loader:
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(config, progress.step)
            # Randomness (dropout) as a function of step and rank: a resumed run draws what the
            # uninterrupted one would have drawn.
            torch.manual_seed(config.seed + 1_000_003 * progress.step + rank)
            image_features, text_features, logit_scale = model(images.to(device), texts.to(device))[
                :3
            ]
            loss = loss_fn(image_features.float(), text_features.float(), logit_scale.float())
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            with torch.no_grad():  # CLIP's temperature stays within 100, as in open_clip
                model.logit_scale.clamp_(0, math.log(100))
            progress.step += 1
            progress.batch_in_epoch += 1
            window_samples += images.shape[0]
            if progress.step % config.log_every == 0 or progress.step == config.steps:
                last = report(config, progress, loss, window_start, window_samples, pipes)
                window_start, window_samples = time.perf_counter(), 0
            if progress.step % config.checkpoint_every == 0 or progress.step == config.steps:
                checkpoints.save(config.checkpoint_dir, state)
            if progress.step >= config.steps:
                break
        else:
            progress.epoch += 1
            progress.batch_in_epoch = 0
    metrics = {
        **last,
        "steps": progress.step,
        "steps_this_run": progress.step - started_at,
        "resumed": resumed,
        "ranks": world,
        "device": device.type,
        "bf16": bf16,
        "pairs": len(dataset),
        "batches_per_epoch": order.batches_per_epoch,
    }
    checkpoints.export(model, config.spec, config.export_dir, metrics)
    return metrics


def report(
    config: TrainConfig,
    progress: Progress,
    loss: torch.Tensor,
    window_start: float,
    window_samples: int,
    pipes: Any,
) -> dict[str, Any]:
    """Loss averaged over ranks and samples per second of every rank, on rank 0."""
    rate = window_samples / max(time.perf_counter() - window_start, 1e-9)
    mean_loss = loss.detach().float().cpu().clone()
    dist.all_reduce(mean_loss)
    rates: list[float] = [0.0] * dist.get_world_size()
    dist.all_gather_object(rates, rate)
    line = {
        "step": progress.step,
        "epoch": progress.epoch,
        "loss": float(mean_loss) / dist.get_world_size(),
        "samples_per_s_per_rank": [round(r, 2) for r in rates],
        "samples_per_s": round(sum(rates), 2),
        "lr": learning_rate(config, progress.step - 1),
    }
    if dist.get_rank() == 0:
        with config.metrics_file.open("a") as out:
            out.write(json.dumps(line) + "\n")
        message = f"step {line['step']} loss {line['loss']:.4f} samples/s per rank {rates}"
        log.info(message)
        if pipes is not None:
            pipes.log.info(message)
    return line


def main() -> None:
    parser = argparse.ArgumentParser(description="CLIP training under FSDP")
    parser.add_argument("--config", type=Path, required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    config = TrainConfig.load(args.config)
    Path(config.out_dir).mkdir(parents=True, exist_ok=True)
    device = setup()
    try:
        with pipes_session() as pipes:
            metrics = train(config, device, pipes)
            if pipes is not None:
                pipes.report_asset_materialization(
                    metadata={
                        **{k: v for k, v in metrics.items() if not isinstance(v, list)},
                        "samples_per_s_per_rank": {
                            "raw_value": metrics.get("samples_per_s_per_rank", []),
                            "type": "json",
                        },
                        "export_dir": {"raw_value": str(config.export_dir), "type": "path"},
                    }
                )
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
