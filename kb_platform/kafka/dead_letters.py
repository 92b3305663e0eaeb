"""Dead letters: the original message plus why it failed, on ``dlq.<modality>.processing``."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from confluent_kafka import Producer

from kb_platform.kafka.confirmed import produce_confirmed

HEADER_NAMES = (
    "source-topic",
    "source-partition",
    "source-offset",
    "doc-id",
    "run-id",
    "error-class",
    "error-message",
    "attempts",
    "first-failed-at",
    "request-id",  # the request id its runs carried (structured_logs), kept through replays
)
MAX_ERROR_MESSAGE = 2000


@dataclass(frozen=True)
class DeadLetter:
    key: bytes | None
    value: bytes | None
    source_topic: str
    source_partition: int
    source_offset: int
    error_class: str
    error_message: str
    doc_id: str = ""
    run_id: str = ""
    attempts: int = 1
    first_failed_at: str = ""
    request_id: str = ""

    def headers(self) -> list[tuple[str, bytes]]:
        first_failed = self.first_failed_at or datetime.now(UTC).isoformat()
        values = (
            self.source_topic,
            str(self.source_partition),
            str(self.source_offset),
            self.doc_id,
            self.run_id,
            self.error_class,
            self.error_message[:MAX_ERROR_MESSAGE],
            str(self.attempts),
            first_failed,
            self.request_id,
        )
        return [(name, value.encode()) for name, value in zip(HEADER_NAMES, values, strict=True)]


def publish(producer: Producer, topic: str, letters: list[DeadLetter], timeout_s: float) -> None:
    """Produces the letters and waits until the broker has them all; raises if it has not."""
    records = [(letter.key, letter.value, letter.headers()) for letter in letters]
    produce_confirmed(producer, topic, records, timeout_s, "dead letters")


def headers_dict(headers: list[tuple[str, bytes]] | None) -> dict[str, str]:
    return {name: (value or b"").decode() for name, value in headers or []}
