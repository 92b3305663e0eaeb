"""Every setting of the platform, read once from the environment (prefix ``KB_``).

Secrets are not read here: resources take them through ``dagster.EnvVar`` so they never land
in run configuration or logs.
"""

from __future__ import annotations

from enum import StrEnum
from functools import lru_cache
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from kb_platform.contracts import Modality

REPO_ROOT = Path(__file__).resolve().parent.parent


class Environment(StrEnum):
    LOCAL = "local"
    PROD = "prod"


class RunPodResources(BaseModel):
    """Requests and limits of a run pod's container, as Kubernetes writes them."""

    model_config = ConfigDict(extra="forbid")

    requests: dict[str, str] = Field(default_factory=dict)  # e.g. {"cpu": "1", "memory": "2Gi"}
    limits: dict[str, str] = Field(default_factory=dict)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="KB_", extra="ignore")

    env: Environment = Environment.LOCAL

    # services
    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    kafka_security_protocol: str = "PLAINTEXT"
    kafka_sasl_mechanism: str | None = None
    kafka_ingest_topic_prefix: str = "kb.ingest."  # + document, image, text, audio
    kafka_dlq_topic_prefix: str = "dlq."  # + <modality>.processing, general
    kafka_audit_topic: str = "kb.audit"  # the ingestion audit trail
    kafka_consumer_group: str = "kb-ingest"
    kafka_topic_partitions: int = 3
    kafka_idle_wait_s: float = 3.5  # the ingest sensor's long poll when caught up
    elasticsearch_url: str = "http://127.0.0.1:9200"
    elasticsearch_request_timeout_s: float = 30.0
    elasticsearch_index_base: str = "kb-chunks"  # kb-chunks-v{N} indices, kb-chunks(-write) aliases
    elasticsearch_replicas: int = 0
    # kNN: candidates per shard = k * factor (at least 100); int8 candidates re-scored with
    # full-precision vectors over oversample * k
    knn_num_candidates_factor: int = 10
    knn_rescore_oversample: float = 2.0
    rrf_k: int = 60
    # the warm encoder service (bentos/encoder); unset: text embeddings in the run process. Its
    # token is the secret KB_ENCODER_TOKEN, read by the resource through dagster.EnvVar.
    encoder_url: str | None = None
    # the RAG service (bentos/rag) that `kb-platform ask` queries; its key in a file
    rag_url: str = "http://127.0.0.1:3030"
    rag_api_key_file: Path = REPO_ROOT / ".kb-local" / "rag" / "api-key"

    # storage
    data_dir: Path = REPO_ROOT / ".kb-data"
    s3_bucket: str = "kb-platform"
    s3_prefix: str = "assets"

    # processing limits (bytes, pages, pixels, audio seconds) and per-modality time limits
    max_bytes: int = 200 * 1024 * 1024
    max_pages: int = 1000
    max_pixels: int = 90_000_000
    max_audio_seconds: float = 4 * 3600
    render_dpi: int = 100
    ocr_dpi: int = 300
    ocr_languages: str = "eng"
    ocr_page_timeout_s: float = 60.0
    timeout_text_s: float = 60.0
    timeout_image_s: float = 300.0
    timeout_document_s: float = 180.0
    timeout_audio_s: float = 120.0
    # the ingest sensor stops reading while this many runs wait in the queue (backpressure)
    max_queued_runs: int = 8
    # a failed document run nothing settled this long after it ended (its code location gone,
    # its retry never made) is adopted by the ingest lease holder (adopt_orphaned_runs)
    orphaned_run_grace_s: float = 60.0
    # Kubernetes resources of a document's run pod, per modality (K8sRunLauncher), as JSON:
    # KB_RUN_RESOURCES='{"document": {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": ...}}'
    run_resources: dict[Modality, RunPodResources] = Field(default_factory=dict)

    # CLIP (kb_platform.training): checkpoints, training runs and the promoted pointer live in
    # clip_dir (a volume shared by the run workers in production); training runs with
    # clip_ranks processes under torchrun. clip_open_clip_model + clip_pretrained fine-tune a
    # pretrained open_clip model instead of the MiniLM-text-tower default.
    clip_dir: Path | None = None  # default: <data_dir>/clip
    clip_ranks: int = 2
    clip_steps: int = 200
    clip_batch_size: int = 32
    clip_lr: float = 5e-4
    clip_text_unlocked_layers: int = 0
    clip_mixed_precision: str = "auto"
    clip_max_recall_drop: float = 0.0
    clip_open_clip_model: str | None = None
    clip_pretrained: str | None = None

    @property
    def clip_root(self) -> Path:
        return self.clip_dir or self.data_dir / "clip"

    # Training on the cluster (kb_platform.resources.training_cluster): the namespace and image
    # of the trainer's Indexed Job, the shared volume's claim and mount path; nodes, GPUs and
    # the rest are the resource's run config. With training_run_service_account set (the
    # chart's training.launchOnCluster), train_generator's run pods run as that account and
    # mount the claim (generator.training_run_tags).
    training_namespace: str = "kb-platform"
    training_image: str = ""
    training_run_service_account: str = ""
    training_claim: str = "kb-platform-training"
    training_mount: str = "/shared"

    # backups (`kb-platform backup|restore`, kb_platform.backup): one folder per backup under
    # backup_dir (default: .kb-backups beside the data dir). Retention after each good backup:
    # keep the newest backup_keep_last and those younger than backup_keep_days (unset: that rule
    # keeps nothing; both unset: keep all); the newest good backup is never deleted.
    backup_dir: Path | None = None
    backup_keep_last: int | None = 7
    backup_keep_days: float | None = None
    # Elasticsearch snapshot repository: "fs" (location relative to the node's path.repo, or
    # absolute inside it) or "s3" (repository-s3: bucket, base_path, client)
    backup_es_repository: str = "kb-backups"
    backup_es_repository_type: str = "fs"
    backup_es_fs_location: str = "kb-backups"
    backup_es_s3_bucket: str | None = None
    backup_es_s3_base_path: str = "elasticsearch"
    backup_es_s3_client: str = "default"

    @property
    def backup_root(self) -> Path:
        return self.backup_dir or self.data_dir.parent / ".kb-backups"

    # inputs: file:// URIs are only read inside these roots
    corpus_dir: Path = REPO_ROOT.parent / "shared" / "corpus"
    allowed_roots: list[Path] = Field(default_factory=lambda: [REPO_ROOT.parent / "shared"])


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
