"""Caps that keep hostile or huge inputs from exhausting a worker."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    max_bytes: int = 200 * 1024 * 1024
    max_pages: int = 1000
    # Pillow's decompression-bomb guard: an image over this many pixels is refused.
    max_pixels: int = 90_000_000
    max_audio_seconds: float = 4 * 3600
    max_embedded_images_per_page: int = 16
    min_embedded_image_side: int = 64
    # Render resolution for page images (CLIP pairs, previews) and for pages that need OCR.
    render_dpi: int = 100
    ocr_dpi: int = 300
