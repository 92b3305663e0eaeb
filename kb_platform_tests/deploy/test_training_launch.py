"""The answer generator fine-tuned on the cluster: ``generator_checkpoint`` with
``launch_on_cluster`` creates the trainer's Indexed Job on the throwaway API server, through
Dagster Pipes, and reads rank 0's report back; a trainer that fails ends the Job Failed and the
step with the pods' state; a Job that never runs is deleted at the timeout, freeing its GPUs.

kube-scheduler places the pod on the one fake node whose pods really run (local_kubelet.py:
the container's command as a process here, over the shared volume mounted at the same path),
so the whole path is real but the container runtime and the cluster DNS.
"""

import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dagster import (
    AssetExecutionContext,
    ExecuteInProcessResult,
    MaterializeResult,
    PipesSubprocessClient,
    asset,
    materialize,
)

from kb_platform.contracts import Chunk, Modality, compute_doc_id
from kb_platform.defs.generator import generator_checkpoint
from kb_platform.evaluation.cranfield import load_documents
from kb_platform.resources.generator_training import GeneratorTrainingResource
from kb_platform.resources.training_cluster import RUN_ID_LABEL, TrainingClusterResource
from kb_platform.training.config import TrainConfig
from kb_platform.training.pairs import is_held_out
from kb_platform_tests.deploy.kube_cluster import (
    GPU_RESOURCE,
    LOCAL_NODE_NAME,
    NODE_GROUP_LABEL,
    KubeCluster,
    bind_shared_claim,
    wait_for,
)
from kb_platform_tests.deploy.local_kubelet import LOCAL_NODE_GROUP, LocalKubelet
from kb_platform_tests.ports import free_port
from kb_platform_tests.training.tiny_llama import tiny_llama, whisper_bpe_tokenizer

pytestmark = pytest.mark.kube

NAMESPACE = "kb-training-launch"
CLAIM = "kb-platform-training"
STEPS = 4


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory, kube_cluster: KubeCluster) -> Path:
    """The training volume: a hostPath PersistentVolume of a folder here, claimed ReadWriteMany
    in the namespace, mounted by the pods and by this process at the same path."""
    folder = tmp_path_factory.mktemp("training-shared")
    kube_cluster.kubectl("create", "namespace", NAMESPACE)
    bind_shared_claim(kube_cluster, NAMESPACE, CLAIM, str(folder), size="10Gi")
    return folder


@pytest.fixture(scope="module")
def kubelet(kube_cluster: KubeCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    running = LocalKubelet(kube_cluster, tmp_path_factory.mktemp("kubelet-logs")).start()
    yield running
    running.stop()
    assert not running.errors, running.errors


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Outside the shared volume, as the model store's generator is: the asset stages it."""
    folder = tmp_path_factory.mktemp("tiny-llama-bpe")
    return tiny_llama(folder, whisper_bpe_tokenizer(), "<|endoftext|>", "<|endoftext|>")


def cranfield_chunks(corpus_dir: Path, train: int = 6, held_out: int = 2) -> list[Chunk]:
    """Cranfield abstracts, three to a document and one chunk each, on both sides of the
    held-out split."""
    abstracts = load_documents(corpus_dir / "retrieval/cranfield")
    chunks: list[Chunk] = []
    wanted = {False: train, True: held_out}
    for start in range(0, len(abstracts), 3):
        text = "\n\n".join(f"{a.title}.\n{a.text}" for a in abstracts[start : start + 3])
        doc_id = compute_doc_id(text.encode())
        side = is_held_out(doc_id)
        if wanted[side]:
            wanted[side] -= 1
            chunks.append(
                Chunk(
                    chunk_id=f"{doc_id}-0",
                    doc_id=doc_id,
                    text=text,
                    token_count=len(text.split()),
                    source_uri=f"cranfield://{start}",
                    title=f"Cranfield {start}",
                    modality=Modality.TEXT,
                )
            )
        if not any(wanted.values()):
            return chunks
    raise AssertionError("Cranfield gives too few documents on one side of the split")


def cluster(kube_cluster: KubeCluster, shared: Path, **changes: Any) -> TrainingClusterResource:
    fields: dict[str, Any] = {
        "namespace": NAMESPACE,
        "image": "kb-platform:test",
        "kubeconfig_file": str(kube_cluster.kubeconfig),
        "nodes": 1,
        "gpus_per_node": 2,
        "node_selector": {NODE_GROUP_LABEL: LOCAL_NODE_GROUP},
        "checkpoint_claim": CLAIM,
        "shared_mount": str(shared),
        "cpu": "2",
        "memory": "4Gi",
        "rendezvous_port": free_port(),
        "poll_interval_s": 0.5,
        "timeout_s": 300.0,
    }
    return TrainingClusterResource(**{**fields, **changes})


def job_of(kube_cluster: KubeCluster, name: str) -> dict[str, Any]:
    return kube_cluster.get_json("job", name, "-n", NAMESPACE)


def pods_of(kube_cluster: KubeCluster, name: str) -> list[dict[str, Any]]:
    return kube_cluster.get_json("pods", "-n", NAMESPACE, "-l", f"job-name={name}")["items"]


def failure_text(result: ExecuteInProcessResult) -> str:
    texts = []
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data is not None:
            data = event.step_failure_data
            texts.append(str(data.error.to_string() if data.error else ""))
            if data.user_failure_data is not None:
                texts.append(data.user_failure_data.description or "")
    return "\n".join(texts)


def test_the_generator_is_fine_tuned_by_a_job_on_the_cluster(
    kube_cluster: KubeCluster,
    shared: Path,
    kubelet: LocalKubelet,
    tiny_model: Path,
    corpus_dir: Path,
) -> None:
    chunks = cranfield_chunks(corpus_dir)

    @asset(name="text_chunks")
    def text_chunks() -> list[Chunk]:
        return chunks

    training = GeneratorTrainingResource(
        root_dir=str(shared / "generator"),
        launch_on_cluster=True,
        base_model_dir=str(tiny_model),
        steps=STEPS,
        batch_size=4,
        seq_len=32,
        lr=3e-3,
        warmup_steps=1,
        checkpoint_every=STEPS,
        eval_blocks=16,
        citation_questions=0,
    )
    result = materialize(
        [text_chunks, generator_checkpoint],
        resources={
            "generator_training": training,
            "training_cluster": cluster(kube_cluster, shared),
            "pipes_subprocess_client": PipesSubprocessClient(),
        },
        raise_on_error=False,
    )
    name = f"kb-train-{result.run_id[:8]}-0"
    pods = pods_of(kube_cluster, name)
    logs = "\n".join(kubelet.log_of(p["metadata"]["name"])[-3000:] for p in pods)
    assert result.success, failure_text(result) + logs

    metadata = result.asset_materializations_for_node("generator_checkpoint")[0].metadata
    assert metadata["k8s_job"].value == name and metadata["k8s_namespace"].value == NAMESPACE
    assert metadata["steps"].value == STEPS and metadata["ranks"].value == 2  # rank 0, via Pipes
    assert math.isfinite(metadata["held_out_perplexity"].value)
    export = Path(str(metadata["export_dir"].value))
    assert export.is_relative_to(shared) and any(export.glob("*.safetensors"))
    source = Path(str(metadata["source_dir"].value))  # the model, staged where pods read it
    assert source.is_relative_to(shared / "generator" / "sources")

    job = job_of(kube_cluster, name)
    assert any(c["type"] == "Complete" and c["status"] == "True"
               for c in job["status"]["conditions"])  # fmt: skip
    assert job["metadata"]["labels"][RUN_ID_LABEL] == result.run_id
    container = job["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"] for e in container["env"]}
    assert {"DAGSTER_PIPES_CONTEXT", "DAGSTER_PIPES_MESSAGES"} <= env
    assert "--nnodes=1" in container["command"] and "--nproc-per-node=2" in container["command"]
    (pod,) = pods
    assert pod["spec"]["nodeName"] == LOCAL_NODE_NAME
    assert pod["spec"]["containers"][0]["resources"]["limits"][GPU_RESOURCE] == "2"
    assert kubelet.exit_codes[pod["metadata"]["name"]] == 0
    assert f"step {STEPS} loss" in kubelet.log_of(pod["metadata"]["name"])
    service = kube_cluster.get_json("service", name, "-n", NAMESPACE)
    (owner,) = service["metadata"]["ownerReferences"]  # deleted with the Job
    assert (owner["kind"], owner["name"]) == ("Job", name)


def test_a_failing_trainer_fails_the_job_and_the_step(
    kube_cluster: KubeCluster, shared: Path, kubelet: LocalKubelet, tiny_model: Path
) -> None:
    @asset
    def broken_checkpoint(
        context: AssetExecutionContext, training_cluster: TrainingClusterResource
    ) -> MaterializeResult:
        config = TrainConfig(
            out_dir=str(shared / "broken" / context.run.run_id),
            family="causal_lm",
            init_from=str(tiny_model),
            tokens=str(shared / "no-such-tokens"),
            steps=2,
        )
        return training_cluster.run(context=context, config=config).get_materialize_result()

    result = materialize(
        [broken_checkpoint],
        resources={"training_cluster": cluster(kube_cluster, shared, max_restarts=0)},
        raise_on_error=False,
    )
    assert not result.success
    name = f"kb-train-{result.run_id[:8]}-0"
    text = failure_text(result)
    assert f"training job {NAMESPACE}/{name} failed" in text and "BackoffLimitExceeded" in text
    job = job_of(kube_cluster, name)
    assert job["status"].get("failed") == 1 and not job["status"].get("succeeded")
    (pod,) = pods_of(kube_cluster, name)
    assert kubelet.exit_codes[pod["metadata"]["name"]] != 0


def test_a_job_that_never_runs_is_deleted_at_the_timeout(
    kube_cluster: KubeCluster, shared: Path, kubelet: LocalKubelet, tiny_model: Path
) -> None:
    @asset
    def unplaceable_checkpoint(
        context: AssetExecutionContext, training_cluster: TrainingClusterResource
    ) -> MaterializeResult:
        config = TrainConfig(
            out_dir=str(shared / "unplaceable"),
            family="causal_lm",
            init_from=str(tiny_model),
            tokens=str(shared / "never-read"),
        )
        return training_cluster.run(context=context, config=config).get_materialize_result()

    nowhere = cluster(
        kube_cluster, shared, node_selector={NODE_GROUP_LABEL: "no-such-nodes"}, timeout_s=3.0
    )
    started = time.monotonic()
    result = materialize(
        [unplaceable_checkpoint], resources={"training_cluster": nowhere}, raise_on_error=False
    )
    assert not result.success and time.monotonic() - started < 60
    name = f"kb-train-{result.run_id[:8]}-0"
    assert "did not finish within 3 s (deleted)" in failure_text(result)

    def gone() -> bool:
        found = kube_cluster.kubectl("get", "job,service", "-n", NAMESPACE, "-o", "name")
        return name not in found.stdout

    wait_for(f"job {name} and its service to be deleted", gone, timeout_s=60)
