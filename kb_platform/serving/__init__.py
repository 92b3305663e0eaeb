"""The query side served over HTTP (bentos/rag): request limits, keys, rate limits, search and
cited answers, warm-up and readiness, logs and metrics. bentos/rag/service.py only wires these
into a BentoML service."""
