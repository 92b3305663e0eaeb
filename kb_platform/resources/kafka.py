"""Kafka clients (confluent-kafka) configured in one place."""

from __future__ import annotations

from typing import Any

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient
from dagster import ConfigurableResource
from pydantic import Field

from kb_platform.kafka.topics import AUDIT_TOPIC_CONFIG, Topics, ensure_topics


class KafkaResource(ConfigurableResource):
    """Connection to the ingest broker; hands out producers, consumers and an admin client."""

    bootstrap_servers: str = Field(description="host:port[,host:port...]")
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = Field(default=None, description="pass as EnvVar")
    sasl_password: str | None = Field(default=None, description="pass as EnvVar")
    client_id: str = "kb-platform"
    ingest_topic_prefix: str = "kb.ingest."
    dlq_topic_prefix: str = "dlq."
    audit_topic: str = "kb.audit"
    consumer_group: str = "kb-ingest"
    topic_partitions: int = Field(default=3, description="partitions of topics the setup creates")
    max_batch: int = Field(default=200, description="messages one sensor tick reads at most")
    poll_timeout_s: float = Field(default=2.0, description="longest wait of one tick's poll")
    idle_wait_s: float = Field(
        default=0.0,
        description="how long a tick over caught-up partitions waits for a new message (long "
        "poll): the sensor daemon evaluates at most every ~5 s, so waiting most of that time "
        "picks a message up as it arrives instead of at the next tick",
    )

    def topics(self) -> Topics:
        return Topics(
            ingest_prefix=self.ingest_topic_prefix,
            dlq_prefix=self.dlq_topic_prefix,
            dlq_general_name=f"{self.dlq_topic_prefix}general",
            audit=self.audit_topic,
        )

    def namespaced(self, name: str, **overrides: Any) -> KafkaResource:
        """The same broker with topics (``<name>.ingest.*``, ``<name>.dlq.*``) and a consumer
        group of their own: tests, benchmarks and e2e instances never see each other's messages."""
        return KafkaResource(
            bootstrap_servers=self.bootstrap_servers,
            security_protocol=self.security_protocol,
            sasl_mechanism=self.sasl_mechanism,
            sasl_username=self.sasl_username,
            sasl_password=self.sasl_password,
            ingest_topic_prefix=f"{name}.ingest.",
            dlq_topic_prefix=f"{name}.dlq.",
            audit_topic=f"{name}.audit",
            consumer_group=f"{name}-group",
            **overrides,
        )

    def create_topics(self, partitions: int | None = None) -> tuple[list[str], list[str]]:
        """(every ingest, dead-letter and audit topic, those created now); existing ones are
        kept."""
        topics, admin = self.topics(), self.admin()
        names = [*topics.all_ingest(), *topics.all_dlq()]
        count = partitions or self.topic_partitions
        created = ensure_topics(admin, names, partitions=count)
        created += ensure_topics(admin, [topics.audit], partitions=count, config=AUDIT_TOPIC_CONFIG)
        return [*names, topics.audit], created

    def client_config(self) -> dict[str, Any]:
        config: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap_servers,
            "security.protocol": self.security_protocol,
            "client.id": self.client_id,
        }
        if self.sasl_mechanism:
            config["sasl.mechanism"] = self.sasl_mechanism
            config["sasl.username"] = self.sasl_username or ""
            config["sasl.password"] = self.sasl_password or ""
        return config

    def producer(self, **overrides: Any) -> Producer:
        # Idempotent producer: broker-side de-duplication of retried sends, acks from all replicas.
        return Producer(
            {**self.client_config(), "enable.idempotence": True, "acks": "all", **overrides}
        )

    def consumer(self, group_id: str, **overrides: Any) -> Consumer:
        # Offsets are committed by hand, only after the work for a message is accounted for.
        return Consumer(
            {
                **self.client_config(),
                "group.id": group_id,
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "earliest",
                **overrides,
            }
        )

    def admin(self) -> AdminClient:
        return AdminClient(self.client_config())
