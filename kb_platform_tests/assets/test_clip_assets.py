"""CLIP through Dagster, on real documents, the real index and a real 2-rank torchrun: pairs per
document, training through Pipes, the blocking promotion gate, promotion, the roll-out sensor
re-embedding every document and rolling the index to a new version, cross-modal retrieval."""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from dagster import (
    DagsterInstance,
    Definitions,
    FilesystemIOManager,
    PipesSubprocessClient,
    SensorResult,
    SkipReason,
    build_sensor_context,
)
from elasticsearch import Elasticsearch
from PIL import Image
from prometheus_client import CollectorRegistry

from kb_platform.config import Settings, get_settings
from kb_platform.contracts import IngestMessage, Modality
from kb_platform.definitions import build_definitions
from kb_platform.defs.clip.rollout_sensor import clip_rollout
from kb_platform.index.lifecycle import alias_targets, delete_family
from kb_platform.index.mapping import IndexNames
from kb_platform.index.retriever import Retriever
from kb_platform.intake import admit
from kb_platform.models.registry import clip_encoder, text_encoder
from kb_platform.observability.training_metrics import TrainingMetrics
from kb_platform.resources.blob_store import LocalBlobStore
from kb_platform.resources.clip import ClipResource
from kb_platform.resources.elasticsearch import ElasticsearchResource
from kb_platform.resources.kafka import KafkaResource
from kb_platform.resources.parquet_io import ParquetIOManager
from kb_platform.resources.processing import ProcessingResource
from kb_platform.training.pairs import is_held_out

pytestmark = pytest.mark.numerics

SAMPLES = "documents/py-pdf-sample-files"
TRAIN = [
    "014-outlines/mistitled_outlines_example.pdf",
    "015-arabic/habibi-rotated.pdf",
    "011-google-doc-document/google-doc-document.pdf",
    "016-libre-office-link/libre-office-link.pdf",
    "013-reportlab-overlay/reportlab-overlay.pdf",
]
HELD_OUT = ["004-pdflatex-4-pages/pdflatex-4-pages.pdf"]


class Stack:
    def __init__(self, root: Path, settings: Settings, index_base: str) -> None:
        self.root = root
        self.blob_store = LocalBlobStore(base_dir=str(root / "blobs"))
        self.processing = ProcessingResource.from_settings(settings)
        self.clip_config = {
            "root_dir": str(root / "clip"),
            "ranks": 2,
            "steps": 8,
            "batch_size": 4,
            "lr": 2e-3,
            "warmup_steps": 2,
            "checkpoint_every": 8,
            "context_length": 32,
        }
        self.clip = ClipResource(**self.clip_config)
        self.elasticsearch = ElasticsearchResource(
            url=settings.elasticsearch_url, index_base=index_base
        )

    def definitions(self, clip: ClipResource | None = None) -> Definitions:
        return build_definitions(
            {
                "kafka": KafkaResource(bootstrap_servers=get_settings().kafka_bootstrap_servers),
                "blob_store": self.blob_store,
                "processing": self.processing,
                "clip": clip or self.clip,
                "pipes_subprocess_client": PipesSubprocessClient(),
                "elasticsearch": self.elasticsearch,
                "parquet_io_manager": ParquetIOManager(base_uri=str(self.root / "tables")),
                "io_manager": FilesystemIOManager(base_dir=str(self.root / "assets")),
            }
        )


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, settings: Settings, es: Elasticsearch
) -> Iterator[Stack]:
    index_base = f"clip-chunks-{uuid.uuid4().hex[:8]}"
    yield Stack(tmp_path_factory.mktemp("clip"), settings, index_base)
    delete_family(es, IndexNames(index_base))


def process(stack: Stack, instance: DagsterInstance, defs: Definitions, path: Path) -> str:
    message = IngestMessage(source_id=path.name, uri=path.as_uri(), modality=Modality.DOCUMENT)
    doc_id = admit(
        message,
        stack.blob_store,
        allowed_roots=[Path(r) for r in stack.processing.allowed_roots],
        max_bytes=stack.processing.max_bytes,
    )
    instance.add_dynamic_partitions("documents", [doc_id])
    result = defs.resolve_job_def("process_documents").execute_in_process(
        partition_key=doc_id, instance=instance
    )
    assert result.success
    return doc_id


def tick(instance: DagsterInstance, clip: ClipResource, cursor: str | None):
    with build_sensor_context(instance=instance, cursor=cursor, resources={"clip": clip}) as ctx:
        return clip_rollout(ctx)


def test_clip_is_trained_gated_promoted_and_rolled_into_the_index(
    stack: Stack, corpus_dir: Path, es: Elasticsearch
) -> None:
    defs = stack.definitions()
    with DagsterInstance.ephemeral() as instance:
        doc_ids = [process(stack, instance, defs, corpus_dir / SAMPLES / f) for f in TRAIN]
        held_out = [process(stack, instance, defs, corpus_dir / SAMPLES / f) for f in HELD_OUT]
        assert not any(map(is_held_out, doc_ids)) and all(map(is_held_out, held_out))
        # Before any checkpoint: no CLIP vectors, nothing for the roll-out sensor to do.
        assert isinstance(tick(instance, stack.clip, None), SkipReason)

        trained = defs.resolve_job_def("train_clip").execute_in_process(instance=instance)
        assert trained.success
        checkpoint = trained.asset_materializations_for_node("clip_checkpoint")[0].metadata
        assert checkpoint["steps"].value == 8 and checkpoint["ranks"].value == 2
        assert len(checkpoint["samples_per_s_per_rank"].value) == 2
        assert checkpoint["train_pairs"].value >= 8 and checkpoint["held_out_pairs"].value >= 1
        pipes_logs = [
            e.message
            for e in instance.all_logs(trained.run_id)
            if e.dagster_event_type is None and "loss" in (e.message or "")
        ]
        assert any("step 8 loss" in m for m in pipes_logs), pipes_logs  # rank 0's log, via Pipes
        (gate,) = trained.get_asset_check_evaluations()
        assert gate.passed  # the first checkpoint has nothing to beat
        # The pipeline exporter's training metrics are the run's own numbers.
        registry = CollectorRegistry()
        registry.register(TrainingMetrics(instance))
        clip_labels = {"model": "clip"}
        assert registry.get_sample_value("kb_training_loss", clip_labels) == pytest.approx(
            checkpoint["loss"].value
        )
        throughput = registry.get_sample_value("kb_training_samples_per_second", clip_labels)
        assert throughput == pytest.approx(checkpoint["samples_per_s"].value) and throughput > 0
        recall_at_1 = {"model": "clip", "metric": "recall@1"}
        assert registry.get_sample_value("kb_training_held_out_recall", recall_at_1) is not None
        promoted = stack.clip.promoted()
        assert promoted is not None and promoted.version == checkpoint["version"].value

        # Promotion makes every document's image embeddings stale: the sensor re-embeds them
        # (one run each) and, once all succeeded, rolls the index to a new version.
        first = tick(instance, stack.clip, None)
        assert isinstance(first, SensorResult)
        partitions = sorted(r.partition_key for r in first.run_requests)
        assert partitions == sorted(doc_ids + held_out)
        reembed = defs.resolve_job_def("reembed_images")
        for request in first.run_requests:
            run = reembed.execute_in_process(
                partition_key=request.partition_key, tags=request.tags, instance=instance
            )
            assert run.success
            metadata = run.asset_materializations_for_node("image_embeddings")[0].metadata
            assert metadata["clip_version"].value == promoted.version
        second = tick(instance, stack.clip, first.cursor)
        assert isinstance(second, SensorResult) and len(second.run_requests) == 1
        names = stack.elasticsearch.names
        before = alias_targets(es, names.read_alias)
        rolled = defs.resolve_job_def("roll_index_version").execute_in_process(instance=instance)
        assert rolled.success
        assert all(check.passed for check in rolled.get_asset_check_evaluations())
        after = alias_targets(es, names.read_alias)
        assert after != before and names.version_of(after[0]) == names.version_of(before[0]) + 1
        assert isinstance(tick(instance, stack.clip, second.cursor), SkipReason)

        # Cross-modal retrieval on the rolled index, hits with their provenance.
        encoder = clip_encoder(Path(promoted.export_dir))
        minilm = text_encoder()
        retriever = Retriever(
            es, lambda q: minilm.encode([q])[0], index=names.read_alias, clip=encoder
        )
        images = retriever.text_to_image("Hello, here is some text without a meaning", k=5)
        assert images and all(h.source["kind"] == "image" and h.source["image_key"] for h in images)
        page = Image.open(io.BytesIO(stack.blob_store.get(images[0].source["image_key"])))
        same = retriever.image_to_image(page, k=10)
        # An image finds itself at the top score. Pages that render identically (the sample
        # PDFs repeat pages) have the same vector and tie with it in any order, so when more
        # ties than k fill the list the image itself may be cut off: then every hit is a tie.
        top = same[0].score
        assert top == pytest.approx(1.0, abs=1e-2)  # cosine 1: (1 + cos) / 2
        ties = [h for h in same if h.score == pytest.approx(top, abs=1e-3)]
        own = [h for h in same if h.chunk_id == images[0].chunk_id]
        assert own or len(ties) == len(same), [(h.chunk_id, h.score) for h in same]
        assert all(h.score == pytest.approx(top, abs=1e-3) for h in own)
        texts = retriever.image_to_text(page, k=5)
        assert texts and all(h.source["kind"] == "text" for h in texts)
        mixed = retriever.mixed("Hello, here is some text without a meaning", k=10)
        assert {h.source["kind"] for h in mixed} == {"text", "image"}
        assert all(
            set(h.ranks) <= {"bm25", "knn", "hybrid", "clip_image"} and h.ranks for h in mixed
        )

        # A candidate that must beat the promoted one by more than it can is blocked by the
        # gate: the promoted checkpoint stays.
        strict = ClipResource(**{**stack.clip_config, "steps": 2, "max_recall_drop": -1.0})
        blocked = (
            stack.definitions(strict)
            .resolve_job_def("train_clip")
            .execute_in_process(instance=instance, raise_on_error=False)
        )
        (gate,) = blocked.get_asset_check_evaluations()
        assert not gate.passed
        assert not blocked.asset_materializations_for_node("promoted_clip_checkpoint")
        assert stack.clip.promoted() == promoted
