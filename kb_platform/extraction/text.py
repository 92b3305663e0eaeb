"""Plain text in any common encoding (UTF-8/16/32, Latin-1, CP-1252, Shift-JIS, ...)."""

from __future__ import annotations

from charset_normalizer import from_bytes

from kb_platform.errors import Corrupt


def decode_text(content: bytes) -> str:
    # NUL bytes are valid UTF-8 but mean UTF-16/32 in practice: leave those to detection.
    if b"\x00" not in content:
        try:
            return content.decode("utf-8-sig")
        except UnicodeDecodeError:
            pass
    best = from_bytes(content).best()  # honours BOMs, then detects
    if best is None:
        raise Corrupt("no text encoding fits these bytes")
    return str(best)
