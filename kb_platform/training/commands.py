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


@train.command("manifest")
@click.option("--name", required=True, help="the Job's and rendezvous Service's name")
@click.option("--image", required=True, help="the training image (deploy/images: training)")
@click.option("--config", "config_path", required=True, help="the run's config on the volume")
@click.option("--nodes", type=click.IntRange(min=1), required=True)
@click.option("--gpus-per-node", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--namespace", default="kb-platform", show_default=True)
@click.option(
    "--claim",
    default="kb-platform-training",
    show_default=True,
    help="a ReadWriteMany claim for checkpoints and the export",
)
@click.option(
    "--efa",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="EFA interfaces per pod (p4d: 4, p5: 32); 0 for NCCL over sockets",
)
@click.option("--node-group", default="gpu-training", show_default=True)
@click.option("--cpu", default="32", show_default=True, help="CPU request per node's pod")
@click.option("--memory", default="256Gi", show_default=True, help="memory per node's pod")
def manifest(
    name: str,
    image: str,
    config_path: str,
    nodes: int,
    gpus_per_node: int,
    namespace: str,
    claim: str,
    efa: int,
    node_group: str,
    cpu: str,
    memory: str,
) -> None:
    """The Kubernetes objects of an N-node x G-GPU fine-tune (an Indexed Job, its headless
    rendezvous Service, its ServiceAccount) as YAML for kubectl apply."""
    import yaml

    from kb_platform.training.k8s_job import TrainingJob

    try:
        job = TrainingJob(
            name=name,
            image=image,
            config_path=config_path,
            nodes=nodes,
            gpus_per_node=gpus_per_node,
            namespace=namespace,
            checkpoint_claim=claim,
            efa_interfaces=efa,
            node_selector={"kb-platform/node-group": node_group},
            cpu=cpu,
            memory=memory,
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    click.echo(yaml.safe_dump_all(job.manifests(), sort_keys=False), nl=False)
