"""/ask/stream's wire format: server-sent events (text/event-stream), one JSON object per event.

    event: sources   data: [Citation, ...]          the numbered sources the answer is given
    event: token     data: {"text": "..."}          a piece of the answer, as generated
    event: answer    data: AskResponse              the answer to keep, with its citations
    event: error     data: {"error", "code"}        generation failed after the stream began

The streamed pieces are the model's raw text; the final ``answer`` event's text is the one to
show once it arrives (citations of sources never given are removed from it, and a timed-out or
uncited generation is replaced there by the extractive answer).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator
from typing import Any

from pydantic import BaseModel

from kb_platform.serving.schemas import AskResponse

log = logging.getLogger(__name__)

MEDIA_TYPE = "text/event-stream"


def event(name: str, data: Any) -> str:
    if isinstance(data, BaseModel):
        payload = data.model_dump_json()
    elif isinstance(data, list):
        payload = json.dumps([d.model_dump() if isinstance(d, BaseModel) else d for d in data])
    else:
        payload = json.dumps(data)
    return f"event: {name}\ndata: {payload}\n\n"


def ask_stream(events: Iterable[Any]) -> Iterator[str]:
    """The SSE text of an ask's events (see kb_platform.serving.runtime.RagRuntime.ask_events)."""
    try:
        for item in events:
            if isinstance(item, AskResponse):
                yield event("answer", item)
            elif isinstance(item, str):
                yield event("token", {"text": item})
            else:
                yield event("sources", item)
    except Exception as exc:  # the status line is sent already: the error goes in the stream
        log.exception("/ask/stream failed after it began")
        yield event("error", {"error": f"{type(exc).__name__}: {exc}", "code": "internal"})


def parse(lines: Iterable[str]) -> Iterator[tuple[str, Any]]:
    """(event, data) pairs from the lines of an SSE body (for clients and tests)."""
    name, data = "message", []
    for line in lines:
        if not line:
            if data:
                yield name, json.loads("\n".join(data))
            name, data = "message", []
        elif line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())
    if data:
        yield name, json.loads("\n".join(data))
