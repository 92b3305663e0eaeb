"""Resilience of calls to other services: circuit breakers (one per dependency and endpoint in a
process) and the token buckets shared by the RAG service's replicas through Redis."""
