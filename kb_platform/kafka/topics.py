"""The ingest, dead-letter and audit topics (DESIGN.md section 3), created idempotently."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from kb_platform.contracts import Modality

log = logging.getLogger(__name__)

# The audit trail is kept: no time or size limit, never compacted (records are not replaced).
AUDIT_TOPIC_CONFIG = {"retention.ms": "-1", "retention.bytes": "-1", "cleanup.policy": "delete"}


@dataclass(frozen=True)
class Topics:
    ingest_prefix: str = "kb.ingest."
    dlq_prefix: str = "dlq."
    dlq_suffix: str = ".processing"
    dlq_general_name: str = "dlq.general"
    audit: str = "kb.audit"  # the ingestion audit trail (kafka.audit_trail)

    def ingest(self, modality: Modality) -> str:
        return f"{self.ingest_prefix}{modality.value}"

    def all_ingest(self) -> list[str]:
        return [self.ingest(m) for m in Modality]

    def dlq(self, modality: Modality | None) -> str:
        """``dlq.<modality>.processing``; ``dlq.general`` when the modality is unknown."""
        return (
            f"{self.dlq_prefix}{modality.value}{self.dlq_suffix}"
            if modality
            else self.dlq_general_name
        )

    def all_dlq(self) -> list[str]:
        return [*(self.dlq(m) for m in Modality), self.dlq_general_name]

    def modality_of_ingest(self, topic: str) -> Modality | None:
        name = topic.removeprefix(self.ingest_prefix)
        return (
            Modality(name)
            if topic.startswith(self.ingest_prefix) and name in set(Modality)
            else None
        )


def ensure_topics(
    admin: AdminClient,
    names: list[str],
    *,
    partitions: int,
    replication: int = 1,
    config: dict[str, str] | None = None,
) -> list[str]:
    """Creates the topics that do not exist yet (with ``config``); returns those it created."""
    existing = set(admin.list_topics(timeout=15).topics)
    missing = [n for n in names if n not in existing]
    if not missing:
        return []
    futures = admin.create_topics(
        [
            NewTopic(
                n, num_partitions=partitions, replication_factor=replication, config=config or {}
            )
            for n in missing
        ]
    )
    created = []
    for name, future in futures.items():
        try:
            future.result(timeout=30)
            created.append(name)
        except KafkaException as exc:
            if exc.args[0].name() != "TOPIC_ALREADY_EXISTS":  # a concurrent creator won
                raise
    log.info("created topics %s", created)
    return created
