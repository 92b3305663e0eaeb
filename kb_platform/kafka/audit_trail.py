"""The ingestion audit trail: an append-only record of what happened to each document, on its
own topic (``kb.audit``, kept without a retention limit and never compacted): who sent it and
when it was admitted, indexed, dead-lettered, replayed, parked or deleted. A record is keyed by its
doc_id (or, for a message that never got one, by its source ``topic:partition:offset``), so one
document's records stay in order on one partition. The sensors write them as they act (at least
once: a tick that fails after writing writes again); ``kb-platform audit --doc`` reads them.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from enum import StrEnum

from confluent_kafka import Consumer, Message, Producer

from kb_platform.contracts import IngestMessage
from kb_platform.kafka.confirmed import produce_confirmed
from kb_platform.kafka.dead_letters import headers_dict
from kb_platform.kafka.ingest_reader import read_from_beginning
from kb_platform.structured_logs import valid_request_id

SENDER_HEADER = "kb-sender"  # who produced an ingest message (`kb-platform produce` sets it)
REQUEST_HEADER = "kb-request-id"  # the producer's id for the request, followed into the runs
MAX_RECORDS = 100_000  # records one `audit --doc` reads at most
PUBLISH_TIMEOUT_S = 15.0
READ_TIMEOUT_S = 10.0


class Event(StrEnum):
    ADMITTED = "admitted"
    INDEXED = "indexed"
    DEAD_LETTERED = "dead_lettered"
    REPLAYED = "replayed"
    PARKED = "parked"
    DELETED = "deleted"


@dataclass(frozen=True)
class AuditRecord:
    event: Event
    doc_id: str
    source: str  # topic:partition:offset of the ingest message
    at: str = ""  # ISO 8601, UTC; now when empty
    sender: str = ""
    source_id: str = ""
    run_id: str = ""
    detail: str = ""
    request_id: str = ""

    def key(self) -> bytes:
        return (self.doc_id or self.source).encode()

    def to_json(self) -> bytes:
        at = self.at or datetime.now(UTC).isoformat()
        return json.dumps({**asdict(self), "event": self.event.value, "at": at}).encode()

    @classmethod
    def from_json(cls, value: bytes) -> AuditRecord:
        data = json.loads(value)
        return cls(**{**data, "event": Event(data["event"])})


def sender_of(message: Message, parsed: IngestMessage | None) -> str:
    """Who sent an ingest message: its sender header, else its metadata's ``sender``."""
    header = headers_dict(message.headers()).get(SENDER_HEADER, "")
    metadata = (parsed.metadata or {}) if parsed else {}
    return header or str(metadata.get("sender", ""))


def request_id_of(message: Message) -> str:
    """The request id a message's run and records carry: its producer's ``kb-request-id``
    header when that is a valid id, else the message's own ``topic:partition:offset``."""
    given = headers_dict(message.headers()).get(REQUEST_HEADER)
    source = f"{message.topic()}:{message.partition()}:{message.offset()}"
    return valid_request_id(given) or source


def write(producer: Producer, topic: str, records: list[AuditRecord]) -> None:
    """Produces the records and waits until the broker has them all; raises if it has not."""
    produced = [(record.key(), record.to_json(), None) for record in records]
    produce_confirmed(producer, topic, produced, PUBLISH_TIMEOUT_S, "audit records")


def trail(consumer: Consumer, topic: str, doc_or_source: str) -> list[AuditRecord]:
    """Every record of one document (by doc_id, or by source for one that never got a doc_id),
    oldest first; the consumer must report partition ends (``READER_CONFIG``)."""
    key = doc_or_source.encode()
    found = [
        AuditRecord.from_json(m.value() or b"{}")
        for m in read_from_beginning(consumer, [topic], MAX_RECORDS, READ_TIMEOUT_S)
        if m.key() == key
    ]
    return sorted(found, key=lambda r: r.at)


def format_trail(records: list[AuditRecord]) -> str:
    lines = []
    for r in records:
        who = f" by {r.sender}" if r.sender else ""
        run = f" run {r.run_id}" if r.run_id else ""
        request = f" request {r.request_id}" if r.request_id else ""
        detail = f": {r.detail}" if r.detail else ""
        lines.append(f"{r.at}  {r.event.value:<13} {r.source}{who}{request}{run}{detail}")
    return "\n".join(lines)
