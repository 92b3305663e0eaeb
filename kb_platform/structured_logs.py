"""Structured JSON logs: one object a line. The services' lines carry the request id of the
request they are for; the pipeline's (Dagster's run and step logs, through ``dagster.yaml``'s
``python_logs.dagster_handler_config``) the run id, job, step, event type, document and the
request id of the ingest message the run is for.

One request id follows a document through the pipeline: the producer's ``kb-request-id`` header
on the ingest message (else its ``topic:partition:offset``) becomes the run's ``kb/request_id``
tag, the run's log lines carry it, and the run's calls send it on as ``X-Request-Id`` to the
encoder service (whose log lines carry it too) and as ``X-Opaque-Id`` to Elasticsearch."""

from __future__ import annotations

import contextvars
import json
import logging
import os
import re
import sys
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dagster import InitResourceContext

_request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "kb_request_id", default=None
)
_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "dagster_meta"}
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
REQUEST_ID_HEADER = "x-request-id"  # HTTP, both services
REQUEST_ID_TAG = "kb/request_id"  # a processing run's tag


def valid_request_id(given: str | None) -> str | None:
    """``given`` when it is a request id we pass on and log (1-64 of ``A-Za-z0-9._:-``: no
    spaces, quotes or control characters from a client reach a log line), else None."""
    return given if given and _VALID_REQUEST_ID.match(given) else None


def incoming_request_id(given: str | None) -> str:
    """The id a request is handled under: the caller's ``X-Request-Id`` when valid, else new."""
    return valid_request_id(given) or uuid.uuid4().hex


def run_request_id(context: InitResourceContext) -> str | None:
    """The request id of the run a resource is set up for (its ``kb/request_id`` tag)."""
    run = context.run
    return valid_request_id(run.tags.get(REQUEST_ID_TAG)) if run is not None else None


def current_request_id() -> str | None:
    return _request_id.get()


def set_request_id(request_id: str | None) -> contextvars.Token[str | None]:
    return _request_id.set(request_id)


def reset_request_id(token: contextvars.Token[str | None]) -> None:
    _request_id.reset(token)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None) or current_request_id()
        if request_id:
            entry["request_id"] = request_id
        for key, value in record.__dict__.items():
            if key not in _STANDARD and key != "request_id":
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class DagsterJsonFormatter(JsonFormatter):
    """JSON lines of Dagster's log records (``context.log``, the run's events): the message
    without Dagster's prefix, and from the record's Dagster metadata the run id, job, step, event
    type and doc_id (the run's ``kb/doc_id`` tag, else its partition)."""

    def format(self, record: logging.LogRecord) -> str:
        meta = getattr(record, "dagster_meta", None)
        if not isinstance(meta, dict):
            return super().format(record)
        tags = meta.get("job_tags") or {}
        event = meta.get("dagster_event")
        fields = {
            "run_id": meta.get("run_id"),
            "job": meta.get("job_name"),
            "step": meta.get("step_key"),
            "event": event.event_type_value if event is not None else None,
            "doc_id": tags.get("kb/doc_id") or tags.get("dagster/partition"),
            "request_id": tags.get(REQUEST_ID_TAG),
        }
        entry = json.loads(super().format(record))
        entry["message"] = meta.get("orig_message") or entry["message"]
        entry.update({k: v for k, v in fields.items() if v})
        return json.dumps(entry, default=str)


def dagster_home_log_handler(filename: str = "logs/runs.jsonl") -> logging.Handler:
    """A handler appending to ``$DAGSTER_HOME/<filename>`` (the local instance's run log; every
    process of the instance appends whole lines to it), for dagster.yaml's handler config."""
    path = Path(os.environ.get("DAGSTER_HOME", ".")) / filename
    path.parent.mkdir(parents=True, exist_ok=True)
    return logging.FileHandler(path, encoding="utf-8")


def configure_json_logging(level: int = logging.INFO) -> None:
    """kb_platform's loggers write JSON lines to stderr (BentoML keeps its own handlers)."""
    logger = logging.getLogger("kb_platform")
    if any(isinstance(h.formatter, JsonFormatter) for h in logger.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
