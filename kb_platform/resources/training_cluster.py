"""A multi-node training run on Kubernetes through Dagster Pipes: the trainer as an Indexed Job
of N pods x G GPUs (``kb_platform.training.k8s_job``), its rank 0 reporting to the asset.

dagster-k8s's ``PipesK8sClient`` launches one pod and reads its messages from that pod's log; a
multi-node run is N pods meeting at one rendezvous, and only rank 0 (on pod 0) reports. So the
run opens a Pipes session of its own: the context goes into every pod's environment
(``PipesEnvContextInjector``) and rank 0 appends its messages to a file on the shared training
volume (``PipesFileMessageReader``), which the Dagster run pod mounts at the same path as the
trainer pods (``shared_mount``). dagster-k8s's client reads the failed job's pods for the error.

The Job is deleted when the step is interrupted (run terminated) or times out, so GPUs are
never held by a run Dagster gave up on; a finished Job stays for inspection until its TTL, and
its rendezvous Service, owned by the Job, goes with it.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from dagster import (
    AssetExecutionContext,
    ConfigurableResource,
    Failure,
    PipesClientCompletedInvocation,
    PipesEnvContextInjector,
    PipesFileMessageReader,
    open_pipes_session,
)
from pydantic import Field

from kb_platform.config import Settings
from kb_platform.training.config import TrainConfig
from kb_platform.training.k8s_job import CHECKPOINT_MOUNT, RENDEZVOUS_PORT, TrainingJob

log = logging.getLogger(__name__)

RUN_ID_LABEL = "dagster/run-id"
K8S_CONFIG_TAG = "dagster-k8s/config"
LAUNCHER_LABEL = "kb-platform/training-launcher"  # the chart's network policy selects it


def training_run_tags(settings: Settings) -> dict[str, Any]:
    """The run tag that gives a training run's pod (K8sRunLauncher) the account allowed to
    create the trainer's Job and the shared training volume; none where training stays beside
    the run (no ``training_run_service_account``)."""
    if not settings.training_run_service_account:
        return {}
    volume = "training-shared"
    claim = {"claim_name": settings.training_claim}
    return {
        K8S_CONFIG_TAG: {
            "pod_spec_config": {
                "service_account_name": settings.training_run_service_account,
                "volumes": [{"name": volume, "persistent_volume_claim": claim}],
            },
            "pod_template_spec_metadata": {"labels": {LAUNCHER_LABEL: "true"}},
            "container_config": {
                "volume_mounts": [{"name": volume, "mount_path": settings.training_mount}]
            },
        }
    }


class TrainingJobFailed(Exception):
    """The training Job ended Failed (its pods ran out of restarts) or never finished in time."""


class TrainingClusterResource(ConfigurableResource):
    namespace: str = "kb-platform"
    image: str = Field(default="", description="the platform image (it carries the trainer)")
    kubeconfig_file: str | None = Field(
        default=None, description="None: the run pod's own service account (in-cluster)"
    )
    kube_context: str | None = None
    nodes: int = 1
    gpus_per_node: int = 8
    node_selector: dict[str, str] = Field(
        default_factory=lambda: {"kb-platform/node-group": "gpu-training"}
    )
    checkpoint_claim: str = "kb-platform-training"
    shared_mount: str = Field(
        default=CHECKPOINT_MOUNT,
        description="where the training volume is mounted, in this process and in every pod",
    )
    efa_interfaces: int = 0
    cpu: str = "32"
    memory: str = "256Gi"
    max_restarts: int = 3
    rendezvous_port: int = RENDEZVOUS_PORT
    poll_interval_s: float = 5.0
    timeout_s: float = Field(default=7 * 24 * 3600.0, description="the whole run, queueing too")

    @property
    def world_size(self) -> int:
        return self.nodes * self.gpus_per_node

    def job_for(self, name: str, config_path: str, env: dict[str, str], run_id: str) -> TrainingJob:
        return TrainingJob(
            name=name,
            image=self.image,
            config_path=config_path,
            nodes=self.nodes,
            gpus_per_node=self.gpus_per_node,
            namespace=self.namespace,
            checkpoint_claim=self.checkpoint_claim,
            efa_interfaces=self.efa_interfaces,
            cpu=self.cpu,
            memory=self.memory,
            node_selector=dict(self.node_selector),
            max_restarts=self.max_restarts,
            mount_path=self.shared_mount,
            rendezvous_port=self.rendezvous_port,
            env=env,
            extra_labels={RUN_ID_LABEL: run_id},
        )

    def run(
        self,
        *,
        context: AssetExecutionContext,
        config: TrainConfig,
        extras: dict[str, Any] | None = None,
    ) -> PipesClientCompletedInvocation:
        """Trains with ``config`` on the cluster and returns when the Job has completed; raises
        ``Failure`` when it failed or timed out. ``config.out_dir`` must be on the shared
        volume: the pods read the config and write checkpoints and the export there."""
        out_dir = Path(config.out_dir)
        if not out_dir.is_relative_to(self.shared_mount):
            raise ValueError(
                f"{out_dir} is not on the shared training volume ({self.shared_mount}): "
                "the training pods could not read the config or write the export"
            )
        if not self.image:
            raise ValueError("the training image is not set (training_cluster.image)")
        out_dir.mkdir(parents=True, exist_ok=True)
        config_path = out_dir / "config.json"
        config.save(config_path)
        run_id = context.run.run_id
        name = f"kb-train-{run_id[:8]}-{context.retry_number}"
        messages = out_dir / f"pipes-messages-{context.retry_number}.jsonl"
        with open_pipes_session(
            context=context,
            context_injector=PipesEnvContextInjector(),
            message_reader=PipesFileMessageReader(str(messages)),
            extras=extras,
        ) as session:
            job = self.job_for(name, str(config_path), session.get_bootstrap_env_vars(), run_id)
            cluster = _Cluster(self.kubeconfig_file, self.kube_context)
            cluster.create(job)
            context.log.info(
                "training job %s/%s: %d node(s) x %d GPU(s)",
                self.namespace,
                name,
                self.nodes,
                self.gpus_per_node,
            )
            try:
                cluster.wait(job, self.poll_interval_s, self.timeout_s)
            except TrainingJobFailed as failed:
                raise Failure(str(failed), metadata={"k8s_job": name}) from failed
            except BaseException:
                # interrupted (the run was terminated) or the API failed: free the GPUs
                context.log.warning("deleting training job %s/%s", self.namespace, name)
                cluster.delete(job)
                raise
        return PipesClientCompletedInvocation(
            session, metadata={"k8s_job": name, "k8s_namespace": self.namespace}
        )


class _Cluster:
    """The Kubernetes API calls of one training run."""

    def __init__(self, kubeconfig_file: str | None, kube_context: str | None) -> None:
        import kubernetes
        from dagster_k8s.client import DagsterKubernetesClient

        if kubeconfig_file:
            api = kubernetes.config.new_client_from_config(kubeconfig_file, context=kube_context)
        else:
            configuration = kubernetes.client.Configuration()
            kubernetes.config.load_incluster_config(client_configuration=configuration)
            api = kubernetes.client.ApiClient(configuration)
        self.core = kubernetes.client.CoreV1Api(api)
        self.batch = kubernetes.client.BatchV1Api(api)
        self.dagster_k8s = DagsterKubernetesClient(
            self.batch, self.core, log.info, time.sleep, time.time
        )
        self._api_exception = kubernetes.client.ApiException

    def create(self, job: TrainingJob) -> None:
        try:  # the chart makes it; a cluster without the chart gets it from the first run
            self.core.read_namespaced_service_account(job.service_account, job.namespace)
        except self._api_exception as error:
            if error.status != 404:
                raise
            self.core.create_namespaced_service_account(
                job.namespace, job.service_account_manifest()
            )
        created = self.batch.create_namespaced_job(job.namespace, job.job())
        service = job.service()
        service["metadata"]["ownerReferences"] = [
            {
                "apiVersion": "batch/v1",
                "kind": "Job",
                "name": job.name,
                "uid": created.metadata.uid,
                "blockOwnerDeletion": True,
            }
        ]
        self.core.create_namespaced_service(job.namespace, service)

    def wait(self, job: TrainingJob, poll_interval_s: float, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            status = self.batch.read_namespaced_job_status(job.name, job.namespace).status
            ended = {c.type: c for c in status.conditions or [] if c.status == "True"}
            if "Complete" in ended:
                return
            if "Failed" in ended:
                condition = ended["Failed"]
                debug = self.dagster_k8s.get_job_debug_info(job.name, job.namespace)
                raise TrainingJobFailed(
                    f"training job {job.namespace}/{job.name} failed: {condition.reason}: "
                    f"{condition.message}\n{debug}"
                )
            if time.monotonic() > deadline:
                debug = self.dagster_k8s.get_job_debug_info(job.name, job.namespace)
                self.delete(job)
                raise TrainingJobFailed(
                    f"training job {job.namespace}/{job.name} did not finish within "
                    f"{timeout_s:.0f} s (deleted)\n{debug}"
                )
            time.sleep(poll_interval_s)

    def delete(self, job: TrainingJob) -> None:
        """The Job, its pods (foreground) and, through its owner reference, its Service."""
        try:
            self.batch.delete_namespaced_job(
                job.name, job.namespace, propagation_policy="Foreground"
            )
        except self._api_exception as error:
            if error.status != 404:
                raise
