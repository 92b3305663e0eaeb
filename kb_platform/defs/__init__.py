"""One sub-package per concern; each exposes ``defs: dagster.Definitions`` with its own
assets, checks, sensors and jobs. ``CONCERNS`` is the order they are merged in."""

CONCERNS: tuple[str, ...] = (
    "ingestion",
    "processing",
    "embeddings",
    "search",
    "clip",
    "generator",
    "reliability",
)
