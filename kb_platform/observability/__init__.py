"""Metrics for Prometheus from what the pipeline leaves behind: the Dagster instance, Kafka
and the ledger."""
