"""Fetching the content an ingest message points at, safely.

``file://`` URIs are read only inside configured roots (no ``..``, no symlink escape);
``s3://`` through boto3. There is no HTTP fetch: a message must not make the platform
reach arbitrary hosts (SSRF).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from kb_platform.contracts import IngestMessage
from kb_platform.errors import EmptyInput, InvalidMessage, TooLarge


def resolve_file_uri(uri: str, allowed_roots: Sequence[Path]) -> Path:
    parsed = urlparse(uri)
    if parsed.scheme != "file" or parsed.netloc not in ("", "localhost"):
        raise InvalidMessage(f"not a local file URI: {uri}")
    raw_path = unquote(parsed.path)
    if ".." in Path(raw_path).parts:
        raise InvalidMessage(f"'..' is not allowed in file URIs: {uri}")
    path = Path(raw_path).resolve()  # follows symlinks, so a link out of a root is caught below
    roots = [Path(root).resolve() for root in allowed_roots]
    if not any(path.is_relative_to(root) for root in roots):
        raise InvalidMessage(f"{uri} is outside the allowed roots {[str(r) for r in roots]}")
    if not path.is_file():
        raise InvalidMessage(f"no such file: {uri}")
    return path


def _read_file(path: Path, max_bytes: int, uri: str) -> bytes:
    size = path.stat().st_size
    if size > max_bytes:
        raise TooLarge(f"{size} bytes is over the limit of {max_bytes}", source=uri)
    return path.read_bytes()


def _read_s3(uri: str, max_bytes: int, s3_client: Any) -> bytes:
    parsed = urlparse(uri)
    bucket, key = parsed.netloc, parsed.path.lstrip("/")
    if not bucket or not key:
        raise InvalidMessage(f"s3 URI needs a bucket and a key: {uri}")
    size = s3_client.head_object(Bucket=bucket, Key=key)["ContentLength"]
    if size > max_bytes:
        raise TooLarge(f"{size} bytes is over the limit of {max_bytes}", source=uri)
    return s3_client.get_object(Bucket=bucket, Key=key)["Body"].read()


def read_content(
    message: IngestMessage,
    *,
    allowed_roots: Sequence[Path],
    max_bytes: int,
    s3_client: Any | None = None,
) -> bytes:
    """The bytes of the message's document; typed errors for anything not allowed or too big."""
    if message.content_b64 is not None:
        content = message.inline_content()
    elif message.uri is not None and message.uri.startswith("file://"):
        content = _read_file(resolve_file_uri(message.uri, allowed_roots), max_bytes, message.uri)
    elif message.uri is not None and message.uri.startswith("s3://"):
        if s3_client is None:
            raise InvalidMessage(f"no S3 client configured to read {message.uri}")
        content = _read_s3(message.uri, max_bytes, s3_client)
    else:
        raise InvalidMessage(f"unsupported source: {message.uri}")
    if not content:
        raise EmptyInput("the document has no bytes", source=message.uri or message.source_id)
    if len(content) > max_bytes:
        raise TooLarge(f"{len(content)} bytes is over the limit of {max_bytes}")
    return content


def source_uri(message: IngestMessage) -> str:
    return message.uri or f"inline:{message.source_id}"
