"""Multipart bodies parsed as BentoML will parse them (Starlette's form parser with its default
limits) before it does: BentoML turns the parser's refusal of a malformed body (no boundary,
oversized part headers, bytes that are not multipart) into a 500, the front door into a 400 that
says what was wrong."""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import Request

from kb_platform.serving.asgi import Scope, replay


async def multipart_problem(scope: Scope, body: bytes) -> str | None:
    """Why the multipart ``body`` of the request in ``scope`` cannot be parsed, or None."""
    try:
        form = await Request(scope, receive=replay(body)).form()
    except HTTPException as exc:
        return str(exc.detail)
    except MultiPartException as exc:
        return exc.message
    await form.close()
    return None
