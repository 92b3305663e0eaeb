"""Limits and time limits of document processing, as a resource so runs and tests can set them."""

from __future__ import annotations

from dagster import ConfigurableResource

from kb_platform.config import Settings
from kb_platform.contracts import Modality
from kb_platform.extraction.limits import Limits

RUN_OVERHEAD_S = 120


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

    @classmethod
    def from_settings(cls, settings: Settings) -> ProcessingResource:
        fields = set(cls.model_fields) - {"allowed_roots"}
        return cls(
            **{name: getattr(settings, name) for name in fields},
            allowed_roots=[str(root) for root in settings.allowed_roots],
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
        steps (kb_platform.isolation); this catches whatever else might hang."""
        return {"dagster/max_runtime": str(int(self.timeout_s(modality)) + RUN_OVERHEAD_S)}

    def timeout_s(self, modality: Modality) -> float:
        return {
            Modality.TEXT: self.timeout_text_s,
            Modality.IMAGE: self.timeout_image_s,
            Modality.DOCUMENT: self.timeout_document_s,
            Modality.AUDIO: self.timeout_audio_s,
        }[modality]
