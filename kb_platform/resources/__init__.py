"""Resources for each environment: local files and loopback services, or S3 and managed services."""

from __future__ import annotations

from typing import Any

from dagster import EnvVar, FilesystemIOManager, PipesSubprocessClient

from kb_platform.config import Environment, Settings
from kb_platform.resources.blob_store import BlobStore, LocalBlobStore
from kb_platform.resources.clip import ClipResource
from kb_platform.resources.clip_encoder import ClipEncoderResource
from kb_platform.resources.elasticsearch import ElasticsearchResource
from kb_platform.resources.generator_training import generator_training_for
from kb_platform.resources.kafka import KafkaResource
from kb_platform.resources.parquet_io import ParquetIOManager
from kb_platform.resources.processing import ProcessingResource
from kb_platform.resources.text_encoder import TextEncoderResource
from kb_platform.resources.training_cluster import TrainingClusterResource


def kafka_names(settings: Settings) -> dict[str, Any]:
    """Broker address, topic names and consumer group: the same settings in every environment."""
    return {
        "bootstrap_servers": settings.kafka_bootstrap_servers,
        "ingest_topic_prefix": settings.kafka_ingest_topic_prefix,
        "dlq_topic_prefix": settings.kafka_dlq_topic_prefix,
        "audit_topic": settings.kafka_audit_topic,
        "consumer_group": settings.kafka_consumer_group,
        "topic_partitions": settings.kafka_topic_partitions,
        "idle_wait_s": settings.kafka_idle_wait_s,
    }


def encoder_resources(settings: Settings) -> dict[str, Any]:
    """Text and CLIP embeddings through the encoder service where one is configured, else with
    the models in the run process."""
    service = (
        {"service_url": settings.encoder_url, "service_token": EnvVar("KB_ENCODER_TOKEN")}
        if settings.encoder_url
        else {}
    )
    return {
        "text_encoder": TextEncoderResource(**service),
        "clip_encoder": ClipEncoderResource(**service),
    }


def blob_store_for(settings: Settings) -> BlobStore:
    """Original bytes, page renders and images: a folder of the data dir, or S3 in production
    (the pipeline writes there, the RAG service reads the images answers cite)."""
    if settings.env is Environment.PROD:
        from dagster_aws.s3 import S3Resource

        from kb_platform.resources.s3_blob_store import S3BlobStore

        return S3BlobStore(s3=S3Resource(), bucket=settings.s3_bucket, prefix="blobs")
    return LocalBlobStore(base_dir=str(settings.data_dir / "blobs"))


def build_resources(settings: Settings) -> dict[str, Any]:
    processing = ProcessingResource.from_settings(settings)
    shared = {
        "processing": processing,
        **encoder_resources(settings),
        "clip": ClipResource.from_settings(settings),
        "generator_training": generator_training_for(settings),
        "pipes_subprocess_client": PipesSubprocessClient(),
        "training_cluster": TrainingClusterResource(
            namespace=settings.training_namespace,
            image=settings.training_image,
            checkpoint_claim=settings.training_claim,
            shared_mount=settings.training_mount,
        ),
    }
    if settings.env is Environment.PROD:
        # dagster-aws takes seconds to import: only production pays for it.
        from dagster_aws.s3 import S3PickleIOManager, S3Resource

        return {
            **shared,
            "blob_store": blob_store_for(settings),
            "parquet_io_manager": ParquetIOManager(
                base_uri=f"s3://{settings.s3_bucket}/{settings.s3_prefix}/tables"
            ),
            "io_manager": S3PickleIOManager(
                s3_resource=S3Resource(), s3_bucket=settings.s3_bucket, s3_prefix=settings.s3_prefix
            ),
            "kafka": KafkaResource(
                **kafka_names(settings),
                security_protocol=settings.kafka_security_protocol,
                sasl_mechanism=settings.kafka_sasl_mechanism,
                sasl_username=EnvVar("KB_KAFKA_SASL_USERNAME"),
                sasl_password=EnvVar("KB_KAFKA_SASL_PASSWORD"),
            ),
            "elasticsearch": ElasticsearchResource(
                url=settings.elasticsearch_url,
                api_key=EnvVar("KB_ELASTICSEARCH_API_KEY"),
                request_timeout_s=settings.elasticsearch_request_timeout_s,
                index_base=settings.elasticsearch_index_base,
                replicas=settings.elasticsearch_replicas,
            ),
        }
    return {
        **shared,
        "blob_store": blob_store_for(settings),
        "parquet_io_manager": ParquetIOManager(base_uri=str(settings.data_dir / "tables")),
        "io_manager": FilesystemIOManager(base_dir=str(settings.data_dir / "assets")),
        "kafka": KafkaResource(**kafka_names(settings)),
        "elasticsearch": ElasticsearchResource(
            url=settings.elasticsearch_url,
            request_timeout_s=settings.elasticsearch_request_timeout_s,
            index_base=settings.elasticsearch_index_base,
            replicas=settings.elasticsearch_replicas,
        ),
    }
