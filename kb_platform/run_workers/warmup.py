"""What a warm worker loads before its first run, besides the code location itself."""

from __future__ import annotations

import logging

from kb_platform.config import get_settings

log = logging.getLogger(__name__)


def models() -> None:
    """The in-process text encoder, unless runs reach the encoder service instead (then the
    service holds the one copy of the model and the worker loads none)."""
    if get_settings().encoder_url:
        log.info("text embeddings from %s: no model loaded here", get_settings().encoder_url)
        return
    from kb_platform.models.registry import text_encoder

    text_encoder()
