"""``kb-platform train ...``: the training commands of the operator's command line."""

from __future__ import annotations

import click

from kb_platform.training.architectures import PRESETS, UnknownArchitecture, model_shape
from kb_platform.training.memory_plan import Cluster, Workload, render_table


@click.group()
def train() -> None:
    """Plan and run fine-tunes."""


@train.command("plan")
@click.option(
    "--model",
    required=True,
    help=f"a preset ({', '.join(sorted(PRESETS))}) or a Hugging Face config.json / its folder",
)
@click.option("--nodes", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--gpus-per-node", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--gpu-memory-gib", type=click.FloatRange(min=0, min_open=True), default=80.0)
@click.option("--seq-len", type=click.IntRange(min=1), default=4096, show_default=True)
@click.option("--micro-batch", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--prefetch", type=click.IntRange(min=0), default=1, show_default=True)
@click.option("--reserve-gib", type=click.FloatRange(min=0), default=4.0, show_default=True)
def plan(
    model: str,
    nodes: int,
    gpus_per_node: int,
    gpu_memory_gib: float,
    seq_len: int,
    micro_batch: int,
    prefetch: int,
    reserve_gib: float,
) -> None:
    """Per-GPU memory of an FSDP fine-tune for each sharding strategy, and which fit: the
    architecture is built on the meta device (its config only, no weights)."""
    try:
        shape = model_shape(model)
    except UnknownArchitecture as exc:
        raise click.BadParameter(str(exc), param_hint="--model") from exc
    cluster = Cluster(nodes, gpus_per_node, gpu_memory_gib)
    workload = Workload(micro_batch, seq_len, prefetch, reserve_gib)
    click.echo(render_table(shape, cluster, workload))
