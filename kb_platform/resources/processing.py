"""Limits and time limits of document processing, as a resource so runs and tests can set them."""

from __future__ import annotations

import json

from dagster import ConfigurableResource
from pydantic import Field

from kb_platform.config import Settings
from kb_platform.contracts import Modality
from kb_platform.extraction.limits import Limits

RUN_OVERHEAD_S = 120
K8S_CONFIG_TAG = "dagster-k8s/config"


class ProcessingResource(ConfigurableResource):
    max_bytes: int
    max_pages: int
    max_pixels: int
    max_audio_seconds: float
    render_dpi: int
    ocr_dpi: int
    ocr_languages: str
    ocr_page_timeout_s: float
    timeout_text_s: float
    timeout_image_s: float
    timeout_document_s: float
    timeout_audio_s: float
    allowed_roots: list[str]
    # The ingest sensor reads new messages only while fewer runs than this wait in the run
    # queue: a backlog waits on Kafka (where consumer lag counts it), not as queued runs.
    max_queued_runs: int
    # How long a failed run may wait for its own location's dead letter or Dagster's retry
    # before the ingest lease holder adopts it (kb_platform/kafka/orphaned_runs.py).
    orphaned_run_grace_s: float = 60.0
    # Per modality, the run pod's requests and limits where runs are Kubernetes Jobs
    # (K8sRunLauncher reads them from the run's ``dagster-k8s/config`` tag).
    # ({modality: {"requests": {...}, "limits": {...}}}, checked by Settings.run_resources)
    run_resources: dict[str, dict[str, dict[str, str]]] = Field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: Settings) -> ProcessingResource:
        fields = set(cls.model_fields) - {"allowed_roots", "run_resources"}
        return cls(
            **{name: getattr(settings, name) for name in fields},
            allowed_roots=[str(root) for root in settings.allowed_roots],
            run_resources={
                modality.value: resources.model_dump(exclude_defaults=True)
                for modality, resources in settings.run_resources.items()
            },
        )

    def limits(self) -> Limits:
        return Limits(
            max_bytes=self.max_bytes,
            max_pages=self.max_pages,
            max_pixels=self.max_pixels,
            max_audio_seconds=self.max_audio_seconds,
            render_dpi=self.render_dpi,
            ocr_dpi=self.ocr_dpi,
        )

    def run_tags(self, modality: Modality) -> dict[str, str]:
        """The run-level time limit: the modality's work limit plus room for the run's own
        start-up (process, models). The work itself is stopped at the modality's limit by the
        steps (kb_platform.isolation); this catches whatever else might hang. Where the
        modality has pod resources, the K8sRunLauncher's ``dagster-k8s/config`` tag too."""
        tags = {"dagster/max_runtime": str(int(self.timeout_s(modality)) + RUN_OVERHEAD_S)}
        resources = self.run_resources.get(modality.value)
        if resources:
            container = {"resources": resources}
            tags[K8S_CONFIG_TAG] = json.dumps({"container_config": container})
        return tags

    def timeout_s(self, modality: Modality) -> float:
        return {
            Modality.TEXT: self.timeout_text_s,
            Modality.IMAGE: self.timeout_image_s,
            Modality.DOCUMENT: self.timeout_document_s,
            Modality.AUDIO: self.timeout_audio_s,
        }[modality]
