"""``torchrun --nproc_per_node N -m kb_platform.training.train --config run.json``

One FSDP training loop for two model families (``family`` in the config): the CLIP spec with a
contrastive loss (clip_family.py) and Hugging Face causal LMs with the next-token loss
(causal_lm.py); gloo on CPU, NCCL on GPUs, same code. Gradient accumulation and clipping,
hybrid sharding over a 2-D mesh, CPU offload and prefetch are settings. Resumes
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
from torch.distributed.tensor import DTensor

from kb_platform.training import checkpoints
from kb_platform.training.checkpoints import Progress, TrainingState
from kb_platform.training.config import TrainConfig
from kb_platform.training.data import ShardedOrder
from kb_platform.training.family import Family
from kb_platform.training.sharding import ShardingPlan, device_mesh, wants_bf16

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
    """Dagster Pipes on rank 0 when launched by Dagster; None otherwise (and dagster-pipes is
    then not needed: a GPU box may run the trainer with torch and transformers alone)."""
    if dist.get_rank() != 0 or "DAGSTER_PIPES_CONTEXT" not in os.environ:
        yield None
        return
    from dagster_pipes import PipesEnvVarParamsLoader, open_dagster_pipes

    if PipesEnvVarParamsLoader().is_dagster_pipes_process():
        with open_dagster_pipes() as pipes:
            yield pipes
    else:
        yield None


def make_family(config: TrainConfig, device: torch.device) -> Family:
    if config.family == "causal_lm":
        from kb_platform.training.causal_lm import CausalLmFamily

        return CausalLmFamily(config, device)
    from kb_platform.training.clip_family import ClipFamily

    return ClipFamily(config, device)


def micro_batches(family: Family, order: ShardedOrder, progress: Progress) -> Iterator[Any]:
    """The batches from where ``progress`` stands on, epoch after epoch."""
    epoch, start = progress.epoch, progress.batch_in_epoch
    while True:
        yield from family.batches(order.epoch(epoch, start))
        epoch, start = epoch + 1, 0


def advance(progress: Progress, order: ShardedOrder) -> None:
    progress.batch_in_epoch += 1
    if progress.batch_in_epoch >= order.batches_per_epoch:
        progress.epoch += 1
        progress.batch_in_epoch = 0


def clip_gradients(parameters: list[torch.nn.Parameter], max_norm: float) -> float:
    norm = torch.nn.utils.clip_grad_norm_(parameters, max_norm)
    if isinstance(norm, DTensor):
        norm = norm.full_tensor()
    return float(norm)


def train(config: TrainConfig, device: torch.device, pipes: Any) -> dict[str, Any]:
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(config.seed)
    torch.set_num_threads(config.threads_per_rank)
    family = make_family(config, device)
    bf16 = wants_bf16(config.mixed_precision, device)
    plan = ShardingPlan(bf16, config.cpu_offload, config.reshard_after_forward, config.prefetch)
    model = family.build(plan, device_mesh(device, world, config.replicate))
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.lr, weight_decay=config.weight_decay)
    progress = Progress()
    state = TrainingState(model, optimizer, progress)
    resumed = checkpoints.resume(config.checkpoint_dir, state)
    if resumed:
        log.info("rank %d resumed at step %d", rank, progress.step)

    # every rank is data-parallel (hybrid sharding replicates the model, not the data)
    order = ShardedOrder(family.examples(), config.batch_size, rank, world, config.seed)
    if order.batches_per_epoch == 0:
        raise ValueError(
            f"{family.examples()} examples are fewer than one batch of {config.batch_size} x "
            f"{world} ranks"
        )
    model.train()
    started_at = progress.step
    window_start, window_samples = time.perf_counter(), 0
    last: dict[str, Any] = {}
    stream = micro_batches(family, order, progress)
    accumulation = config.grad_accumulation
    while progress.step < config.steps:
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(config, progress.step)
        step_loss = torch.zeros((), dtype=torch.float32)
        grad_norm = None
        for micro in range(accumulation):
            batch = next(stream)
            # Randomness (dropout) as a function of step, micro-step and rank: a resumed run
            # draws what the uninterrupted one would have drawn.
            torch.manual_seed(config.seed + 1_000_003 * progress.step + 7_919 * micro + rank)
            if accumulation > 1:  # reduce-scatter the gradients on the last micro-step only
                model.set_requires_gradient_sync(micro == accumulation - 1)  # type: ignore[operator]
            loss, samples = family.loss(model, batch)
            (loss / accumulation).backward()
            step_loss += loss.detach().float().cpu() / accumulation
            window_samples += samples
            advance(progress, order)
        if config.max_grad_norm is not None:
            grad_norm = clip_gradients(trainable, config.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        family.after_step(model)
        progress.step += 1
        if progress.step % config.log_every == 0 or progress.step == config.steps:
            last = report(
                config, progress, step_loss, window_start, window_samples, pipes, family.unit
            )
            if grad_norm is not None:
                last["grad_norm"] = grad_norm
            window_start, window_samples = time.perf_counter(), 0
        if progress.step % config.checkpoint_every == 0 or progress.step == config.steps:
            checkpoints.save(config.checkpoint_dir, state)
    metrics = {
        **last,
        "steps": progress.step,
        "steps_this_run": progress.step - started_at,
        "resumed": resumed,
        "ranks": world,
        "device": device.type,
        "bf16": bf16,
        "family": config.family,
        **family.describe(),
        "batches_per_epoch": order.batches_per_epoch,
    }
    family.export(model, config.export_dir, metrics)
    return metrics


def report(
    config: TrainConfig,
    progress: Progress,
    loss: torch.Tensor,
    window_start: float,
    window_samples: int,
    pipes: Any,
    unit: str = "pairs",
) -> dict[str, Any]:
    """Loss averaged over ranks and samples (pairs or tokens) per second of every rank, on
    rank 0."""
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
        "unit": unit,
    }
    if torch.cuda.is_available():  # the peak of any rank, to set against `train plan`
        peak = torch.tensor(float(torch.cuda.max_memory_allocated()), device="cuda")
        dist.all_reduce(peak, op=dist.ReduceOp.MAX)
        line["peak_gpu_memory_gib"] = round(float(peak) / 2**30, 2)
    if dist.get_rank() == 0:
        with config.metrics_file.open("a") as out:
            out.write(json.dumps(line) + "\n")
        message = f"step {line['step']} loss {line['loss']:.4f} {unit}/s per rank {rates}"
        log.info(message)
        if pipes is not None:
            pipes.log.info(message)
    return line


def main() -> None:
    parser = argparse.ArgumentParser(description="FSDP training (CLIP or a causal LM)")
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
