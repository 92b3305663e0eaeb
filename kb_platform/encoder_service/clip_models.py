"""The CLIP checkpoints the encoder service serves: the one promoted when it warmed up and any
promoted since (found when a request names it), each loaded once per process
(``registry.clip_encoder``). A request names its checkpoint in every item, so a batch that
adaptive batching joined from several requests may mix checkpoints during a roll-out."""

from __future__ import annotations

import base64
import binascii
import io
import threading
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image
from pydantic import BaseModel

from kb_platform.config import get_settings
from kb_platform.models import registry
from kb_platform.training.promotion import Promoted, promoted


class ClipItem(BaseModel):
    clip_version: str
    kind: Literal["text", "image"]
    data: str  # the text, or the image file's bytes in base64


class UnknownClipVersion(LookupError):
    """A checkpoint the service neither serves nor finds promoted."""


_known: dict[str, Path] = {}
_lock = threading.Lock()


def promoted_now() -> Promoted | None:
    return promoted(get_settings().clip_root)


def export_dir(version: str) -> Path:
    """Where ``version``'s export is: a checkpoint once served stays servable (its export stays
    on the shared volume), and the promoted pointer is read again for a version not seen yet."""
    with _lock:
        if version not in _known:
            current = promoted_now()
            if current is not None:
                _known.setdefault(current.version, Path(current.export_dir))
        if version in _known:
            return _known[version]
    raise UnknownClipVersion(f"CLIP checkpoint {version} is neither served nor promoted")


def decode_image(data: str, max_pixels: int) -> Image.Image:
    """The item's image, refused (ValueError) when it is not an image or is too large."""
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("an image is not valid base64") from None
    try:
        image = Image.open(io.BytesIO(raw))
        width, height = image.size
    except Exception as exc:  # PIL raises many types for a file that is not an image
        raise ValueError(f"an image cannot be read: {type(exc).__name__}") from None
    if width * height > max_pixels:
        raise ValueError(f"an image has {width * height} pixels; the limit is {max_pixels}")
    return image


def encode(items: Sequence[ClipItem], max_pixels: int) -> np.ndarray:
    """One unit-length row per item, in order; items are encoded per checkpoint and kind."""
    groups: dict[tuple[str, str], list[int]] = defaultdict(list)
    for index, item in enumerate(items):
        groups[(item.clip_version, item.kind)].append(index)
    rows: list[np.ndarray | None] = [None] * len(items)
    for (version, kind), indices in groups.items():
        encoder = registry.clip_encoder(export_dir(version))
        if kind == "text":
            vectors = encoder.encode_texts([items[i].data for i in indices])
        else:
            vectors = encoder.encode_images(
                [decode_image(items[i].data, max_pixels) for i in indices]
            )
        for index, vector in zip(indices, vectors, strict=True):
            rows[index] = vector
    return np.stack(rows) if rows else np.zeros((0, 0), dtype=np.float32)
