"""The FSDP memory plan against numbers computed by hand, and the architectures it counts."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from kb_platform.training.architectures import model_shape
from kb_platform.training.commands import train
from kb_platform.training.memory_plan import (
    Cluster,
    ModelShape,
    Strategy,
    Workload,
    activation_bytes,
    plan,
    plan_all,
)

SHAPE = ModelShape(
    name="hand",
    total_params=1000,
    layer_params=100,
    num_layers=4,
    embedding_params=200,
    head_params=200,
    hidden=8,
    q_dim=8,
    kv_dim=4,
    ffn=16,
    vocab=50,
)
CLUSTER = Cluster(nodes=2, gpus_per_node=4, gpu_memory_gib=1.0)
WORKLOAD = Workload(micro_batch=2, seq_len=10, prefetch=1, reserve_gib=0.0)


def test_full_shard_divides_the_state_by_every_gpu() -> None:
    row = plan(SHAPE, CLUSTER, WORKLOAD, Strategy("full", False, False))
    assert row.shard_degree == 8
    assert (row.parameters, row.gradients, row.optimizer) == (500, 500, 1000)
    # largest unit 200 (embeddings): bf16 x (1 + prefetch) + its fp32 gradients
    assert row.gathered == 2 * 200 * 2 + 4 * 200
    # a layer: 2 B x 2 x 10 tokens x (4*8 + 2*8 + 2*4 + 4*16) = 4800; logits 20 x 50 x 10 B
    assert row.activations == 4 * 4800 + 10_000
    assert row.total == 500 + 500 + 1000 + 1600 + 29_200
    assert row.host_per_node == 0


def test_hybrid_shard_divides_by_one_node_and_checkpointing_keeps_layer_inputs() -> None:
    row = plan(SHAPE, CLUSTER, WORKLOAD, Strategy("hybrid", True, False))
    assert row.shard_degree == 4
    assert (row.parameters, row.gradients, row.optimizer) == (1000, 1000, 2000)
    # 4 layer inputs of 2 B x 20 tokens x 8, one layer recomputed, the logits
    assert row.activations == 4 * 2 * 20 * 8 + 4800 + 10_000


def test_cpu_offload_moves_the_sharded_state_to_the_host() -> None:
    row = plan(SHAPE, CLUSTER, WORKLOAD, Strategy("full", True, True))
    assert (row.parameters, row.gradients, row.optimizer) == (0, 0, 0)
    assert row.host_per_node == 4 * (500 + 500 + 1000)
    assert row.total == row.gathered + row.activations


def test_fits_compares_with_the_gpu_memory_including_the_reserve() -> None:
    tiny_gpu = Cluster(2, 4, gpu_memory_gib=30_000 / 1024**3)
    row = plan(SHAPE, tiny_gpu, WORKLOAD, Strategy("full", True, False))
    assert row.total < 30_000 and row.fits
    reserved = Workload(2, 10, 1, reserve_gib=30_000 / 1024**3)
    assert not plan(SHAPE, tiny_gpu, reserved, Strategy("full", True, False)).fits


def test_more_nodes_shrink_full_sharding_but_not_hybrid() -> None:
    small, large = Cluster(2, 8, 80), Cluster(4, 8, 80)
    for strategy_rows in zip(
        plan_all(SHAPE, small, WORKLOAD), plan_all(SHAPE, large, WORKLOAD), strict=True
    ):
        few, many = strategy_rows
        if few.strategy.sharding == "full":
            assert many.total <= few.total
        else:
            assert many.total == few.total


def test_invalid_clusters_and_workloads_are_refused() -> None:
    with pytest.raises(ValueError):
        Cluster(0, 8, 80)
    with pytest.raises(ValueError):
        Workload(seq_len=0)
    assert activation_bytes(SHAPE, WORKLOAD, True) < activation_bytes(SHAPE, WORKLOAD, False)


def test_meta_model_counts_a_llama_by_hand() -> None:
    shape = model_shape("tiny-llama")
    # h 64, ffn 160, 4 heads of 16, 2 key/value heads: q 64x64, k and v 64x32, o 64x64,
    # gate/up/down 3 x 64x160, two RMSNorms of 64
    layer = 4096 + 2048 + 2048 + 4096 + 3 * 64 * 160 + 2 * 64
    assert shape.layer_params == layer
    assert shape.embedding_params == shape.head_params == 512 * 64
    assert shape.total_params == 2 * 512 * 64 + 2 * layer + 64
    assert (shape.q_dim, shape.kv_dim, shape.num_layers) == (64, 32, 2)


def test_tied_heads_count_once() -> None:
    shape = model_shape("gemma-3-270m")
    assert shape.head_params == 0
    assert 260e6 < shape.total_params < 275e6
    assert shape.largest_unit == shape.embedding_params == 262144 * 640


def test_plan_command_prints_every_strategy_and_refuses_unknown_models(tmp_path) -> None:
    result = CliRunner().invoke(
        train,
        [
            "plan",
            "--model",
            "tiny-llama",
            "--nodes",
            "2",
            "--gpu-memory-gib",
            "1",
            "--reserve-gib",
            "0",
        ],
    )
    assert result.exit_code == 0, result.output
    assert result.output.count("| yes |") == 8
    assert "full shard + AC + CPU offload | 16 GPUs" in result.output
    refused = CliRunner().invoke(train, ["plan", "--model", str(tmp_path / "nothing")])
    assert refused.exit_code == 2
    assert "neither a preset" in refused.output
