"""How pipeline errors surface in Dagster: typed, with metadata, retried only when it can help."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from dagster import Backoff, Failure, Jitter, MetadataValue, RetryPolicy

from kb_platform.errors import KbError


@contextmanager
def typed_failures(doc_id: str) -> Iterator[None]:
    """Turns a deterministic ``KbError`` into a ``Failure`` that no RetryPolicy retries.

    Retryable errors propagate unchanged so the step's RetryPolicy backs off and tries again.
    The metadata (error class, message) is what the dead-letter sensor publishes later.
    """
    try:
        yield
    except KbError as exc:
        if exc.retryable:
            raise
        raise Failure(
            description=f"{exc.error_class}: {exc}",
            metadata={
                "error_class": exc.error_class,
                "error_message": MetadataValue.text(str(exc)),
                "doc_id": doc_id,
                "retryable": False,
            },
            allow_retries=False,
        ) from exc


# A model service down, warming up or overloaded (ServiceUnavailable): back off for up to about
# two minutes (2, 4, ... 64 s), long enough for a service to restart and warm up again.
MODEL_SERVICE_RETRY = RetryPolicy(
    max_retries=6, delay=2, backoff=Backoff.EXPONENTIAL, jitter=Jitter.PLUS_MINUS
)
