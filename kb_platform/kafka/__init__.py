"""Kafka: topic names, ingest consumption, dead letters and offset accounting."""
