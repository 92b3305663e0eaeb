"""The CLIP encoder for image search, when a checkpoint is available: the export directory
configured for the service, else the promoted checkpoint of the training pipeline."""

from __future__ import annotations

import logging
from pathlib import Path

from kb_platform.config import Settings
from kb_platform.index.retriever import ClipQueries
from kb_platform.serving.settings import ServingSettings
from kb_platform.training.promotion import promoted

log = logging.getLogger(__name__)


def clip_export_dir(settings: ServingSettings, base: Settings) -> tuple[Path | None, str]:
    """(export directory, why there is none)."""
    if settings.clip_export_dir is not None:
        if settings.clip_export_dir.is_dir():
            return settings.clip_export_dir, ""
        return None, f"KB_SERVING_CLIP_EXPORT_DIR={settings.clip_export_dir} does not exist"
    root = base.clip_root
    pointer = promoted(root)
    if pointer is None:
        return None, (
            f"no checkpoint is promoted under {root} (materialize clip_checkpoint) and "
            "KB_SERVING_CLIP_EXPORT_DIR is not set"
        )
    return Path(pointer.export_dir), ""


def load_clip(settings: ServingSettings, base: Settings) -> tuple[ClipQueries | None, str]:
    """(encoder, reason it is missing); a missing checkpoint leaves image search off."""
    export_dir, reason = clip_export_dir(settings, base)
    if export_dir is None:
        log.info("image search off: %s", reason)
        return None, reason
    from kb_platform.models.registry import clip_encoder

    try:
        return clip_encoder(export_dir), ""
    except Exception as exc:  # a broken checkpoint turns image search off, not the service
        log.exception("CLIP checkpoint %s failed to load; image search off", export_dir)
        return None, f"the CLIP checkpoint in {export_dir} failed to load ({type(exc).__name__})"
