"""Per-GPU memory of an FSDP2 fine-tune, for each sharding strategy: what fits on a cluster.

The trainer's layout is what is counted: fp32 master weights sharded by ``fully_shard`` per
decoder layer, the input embeddings and an untied output head each their own unit, bf16
compute (``MixedPrecisionPolicy(param_dtype=bf16, reduce_dtype=fp32)``), AdamW.

Per GPU, with D the shard degree (every GPU of the job for full sharding, one node's GPUs for
hybrid sharding, which replicates across nodes):

- parameters 4 B x P / D, gradients 4 B x P / D, AdamW's two moments 8 B x P / D (on the host
  instead with CPU offload);
- gathered units: the largest unit U all-gathered in bf16, once for the unit computing and once
  per prefetched one (2 B x U x (1 + prefetch)), plus its unsharded fp32 gradients before the
  reduce-scatter (4 B x U);
- activations (bf16, per micro-batch b of s tokens; attention by SDPA/flash, so no s x s term):
  a decoder layer keeps 2 B x b x s x (4 h + 2 q + 2 kv + 4 f): its input, the two norms'
  outputs, the attention residual, q, k, v, the attention output and the MLP's gate, up,
  activation and product. With activation checkpointing a layer keeps only its input
  (2 B x b x s x h) and one layer is recomputed at a time. The logits add b x s x V x 10 B
  (bf16 logits, their fp32 copy for the loss and its gradient);
- a fixed reserve for the CUDA context, NCCL buffers and allocator fragmentation.

These are estimates for planning, not measurements: a real run's peak is what
``torch.cuda.max_memory_allocated`` says (benchmarks/gpu_fsdp.sh prints it).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Literal

GIB = 1024**3
MASTER_BYTES = 4  # fp32 sharded parameters
GRAD_BYTES = 4  # fp32 sharded gradients (reduce_dtype)
ADAM_BYTES = 8  # AdamW: exp_avg + exp_avg_sq in fp32
COMPUTE_BYTES = 2  # bf16 gathered parameters and activations
LOGIT_BYTES = 2 + 4 + 4  # bf16 logits, fp32 copy for the loss, its gradient


@dataclass(frozen=True)
class ModelShape:
    name: str
    total_params: int
    layer_params: int  # the largest decoder layer
    num_layers: int
    embedding_params: int
    head_params: int  # 0 when the output head is tied to the embeddings
    hidden: int
    q_dim: int  # attention heads x head dim
    kv_dim: int  # key/value heads x head dim
    ffn: int
    vocab: int

    @property
    def largest_unit(self) -> int:
        return max(self.layer_params, self.embedding_params, self.head_params)


@dataclass(frozen=True)
class Cluster:
    nodes: int
    gpus_per_node: int
    gpu_memory_gib: float

    def __post_init__(self) -> None:
        if self.nodes < 1 or self.gpus_per_node < 1 or self.gpu_memory_gib <= 0:
            raise ValueError(f"a cluster needs nodes, GPUs and memory above 0: {self}")

    @property
    def world(self) -> int:
        return self.nodes * self.gpus_per_node


@dataclass(frozen=True)
class Workload:
    micro_batch: int = 1
    seq_len: int = 4096
    prefetch: int = 1  # units all-gathered ahead of the one computing
    reserve_gib: float = 4.0

    def __post_init__(self) -> None:
        if self.micro_batch < 1 or self.seq_len < 1 or self.prefetch < 0 or self.reserve_gib < 0:
            raise ValueError(f"invalid workload: {self}")


@dataclass(frozen=True)
class Strategy:
    sharding: Literal["full", "hybrid"]
    activation_checkpointing: bool
    cpu_offload: bool

    @property
    def name(self) -> str:
        parts = [f"{self.sharding} shard"]
        if self.activation_checkpointing:
            parts.append("AC")
        if self.cpu_offload:
            parts.append("CPU offload")
        return " + ".join(parts)


@dataclass(frozen=True)
class PerGpu:
    strategy: Strategy
    shard_degree: int
    parameters: int
    gradients: int
    optimizer: int
    gathered: int
    activations: int
    reserve: int
    host_per_node: int  # offloaded state one node's host memory holds
    capacity: int

    @property
    def total(self) -> int:
        return (
            self.parameters
            + self.gradients
            + self.optimizer
            + self.gathered
            + self.activations
            + self.reserve
        )

    @property
    def fits(self) -> bool:
        return self.total <= self.capacity


def all_strategies() -> list[Strategy]:
    return [
        Strategy(sharding, checkpointing, offload)
        for sharding, checkpointing, offload in itertools.product(
            ("full", "hybrid"), (False, True), (False, True)
        )
    ]


def layer_activation_bytes(shape: ModelShape, workload: Workload) -> int:
    per_token = 4 * shape.hidden + 2 * shape.q_dim + 2 * shape.kv_dim + 4 * shape.ffn
    return COMPUTE_BYTES * workload.micro_batch * workload.seq_len * per_token


def activation_bytes(shape: ModelShape, workload: Workload, checkpointing: bool) -> int:
    tokens = workload.micro_batch * workload.seq_len
    logits = tokens * shape.vocab * LOGIT_BYTES
    one_layer = layer_activation_bytes(shape, workload)
    if checkpointing:
        kept_inputs = shape.num_layers * COMPUTE_BYTES * tokens * shape.hidden
        return kept_inputs + one_layer + logits
    return shape.num_layers * one_layer + logits


def plan(shape: ModelShape, cluster: Cluster, workload: Workload, strategy: Strategy) -> PerGpu:
    degree = cluster.world if strategy.sharding == "full" else cluster.gpus_per_node

    def sharded(bytes_per_param: int) -> int:
        return math.ceil(shape.total_params * bytes_per_param / degree)

    states = (sharded(MASTER_BYTES), sharded(GRAD_BYTES), sharded(ADAM_BYTES))
    unit = shape.largest_unit
    on_gpu = (0, 0, 0) if strategy.cpu_offload else states
    return PerGpu(
        strategy=strategy,
        shard_degree=degree,
        parameters=on_gpu[0],
        gradients=on_gpu[1],
        optimizer=on_gpu[2],
        gathered=COMPUTE_BYTES * unit * (1 + workload.prefetch) + GRAD_BYTES * unit,
        activations=activation_bytes(shape, workload, strategy.activation_checkpointing),
        reserve=int(workload.reserve_gib * GIB),
        host_per_node=cluster.gpus_per_node * sum(states) if strategy.cpu_offload else 0,
        capacity=int(cluster.gpu_memory_gib * GIB),
    )


def plan_all(shape: ModelShape, cluster: Cluster, workload: Workload) -> list[PerGpu]:
    return [plan(shape, cluster, workload, strategy) for strategy in all_strategies()]


def render_table(shape: ModelShape, cluster: Cluster, workload: Workload) -> str:
    """A Markdown table, GiB per GPU, one row per strategy."""

    def gib(n: int) -> str:
        return f"{n / GIB:.1f}"

    def count(n: int) -> str:
        return f"{n / 1e9:.2f} B" if n >= 1e9 else f"{n / 1e6:.2f} M"

    lines = [
        f"{shape.name}: {count(shape.total_params)} parameters, {shape.num_layers} layers, "
        f"largest FSDP unit {count(shape.largest_unit)}; {cluster.nodes} node(s) x "
        f"{cluster.gpus_per_node} GPU(s) x {cluster.gpu_memory_gib:g} GiB; micro-batch "
        f"{workload.micro_batch} x {workload.seq_len} tokens, prefetch {workload.prefetch}, "
        f"reserve {workload.reserve_gib:g} GiB",
        "",
        "| strategy | shard over | params | grads | optimizer | gathered | activations "
        "| total GiB/GPU | fits | host GiB/node |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in plan_all(shape, cluster, workload):
        lines.append(
            f"| {row.strategy.name} | {row.shard_degree} GPUs | {gib(row.parameters)} "
            f"| {gib(row.gradients)} | {gib(row.optimizer)} | {gib(row.gathered)} "
            f"| {gib(row.activations)} | {gib(row.total)} | {'yes' if row.fits else 'no'} "
            f"| {gib(row.host_per_node)} |"
        )
    return "\n".join(lines)
