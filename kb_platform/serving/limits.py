"""Checks on uploaded images before anything decodes them: bytes, format, pixels."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from kb_platform.serving.errors import ServingError

ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")


def load_image(path: Path, *, max_bytes: int, max_pixels: int) -> Image.Image:
    """Opens an upload as RGB, refusing it (413/415/422) when it is too large, not an image,
    or a decompression bomb. The pixel count is read from the header, before decoding."""
    size = path.stat().st_size
    if size > max_bytes:
        raise ServingError(
            413,
            f"image is {size:,} bytes; the limit is {max_bytes:,} bytes",
            code="image_too_large",
        )
    data = path.read_bytes()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
            width, height = image.size
            if width * height > max_pixels:
                raise ServingError(
                    413,
                    f"image is {width}x{height} = {width * height:,} pixels; the limit is "
                    f"{max_pixels:,} pixels",
                    code="image_too_many_pixels",
                )
            image.load()
            return image.convert("RGB")
    except ServingError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ServingError(
            413,
            f"image has more pixels than Pillow's decompression-bomb limit; the limit is "
            f"{max_pixels:,} pixels",
            code="image_too_many_pixels",
        ) from None
    except UnidentifiedImageError:
        raise ServingError(
            415,
            f"the upload is not an image in a supported format ({', '.join(ALLOWED_FORMATS)})",
            code="not_an_image",
        ) from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ServingError(
            422, f"the image could not be decoded: {exc}", code="corrupt_image"
        ) from None
