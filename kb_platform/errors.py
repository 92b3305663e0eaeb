"""The one error hierarchy of the pipeline.

Deterministic errors (the input itself is wrong) are never retried: they go straight to the
dead-letter topic. Transient errors (a server unavailable, throttling) are retried with backoff.
"""

from __future__ import annotations

import errno
import re


class KbError(Exception):
    """Base of every pipeline error; ``retryable`` says whether trying again can help."""

    retryable: bool = False
    error_class: str = "KbError"

    def __init__(self, message: str, *, doc_id: str | None = None, source: str | None = None):
        self.doc_id = doc_id
        self.source = source
        where = ", ".join(f"{k}={v}" for k, v in (("doc_id", doc_id), ("source", source)) if v)
        super().__init__(f"{message} ({where})" if where else message)

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        cls.error_class = cls.__name__


class UnsupportedType(KbError):
    """The content is of a type the platform does not process."""


class Corrupt(KbError):
    """The content claims a type but cannot be decoded as it."""


class Encrypted(KbError):
    """The document is encrypted and no (correct) password came with it."""


class TooLarge(KbError):
    """The content exceeds a configured limit (bytes, pages, pixels, duration)."""


class EmptyInput(KbError):
    """The content has no bytes."""


class InvalidMessage(KbError):
    """An ingest message that cannot be parsed or is not allowed (bad JSON, fields, URI)."""


class Timeout(KbError):
    """The work took longer than its modality's time limit and was stopped."""


class ServiceUnavailable(KbError):
    """A server the pipeline depends on did not answer; trying again later can succeed."""

    retryable = True


RETRYABLE_ERROR_CLASSES = frozenset({ServiceUnavailable.error_class})

# Failures of what a run stands on rather than of its document: the instance database
# unreachable (Dagster's PostgreSQL storage gives up after its connection retries), a full,
# read-only or failing disk under the blob store or the IO manager. Found by the fault matrix
# (kb_platform_tests/faults): both used to dead-letter documents that were fine.
INFRASTRUCTURE_ERROR_CLASSES = frozenset({"DagsterPostgresException", "OperationalError"})
INFRASTRUCTURE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO})
_ERRNO = re.compile(r"\[Errno (\d+)\]")


def is_outage(cls_name: str | None, message: str) -> bool:
    """Whether an error (by its class name and message, as Dagster records it) says trying
    again later can succeed: a service down or the run's own infrastructure failing."""
    if cls_name in RETRYABLE_ERROR_CLASSES or cls_name in INFRASTRUCTURE_ERROR_CLASSES:
        return True
    found = _ERRNO.search(message or "")
    return found is not None and int(found.group(1)) in INFRASTRUCTURE_ERRNOS
