"""Images of every format Pillow opens (HEIC through pillow-heif), upright per EXIF."""

from __future__ import annotations

import io
import logging
import warnings

from PIL import Image, ImageOps, UnidentifiedImageError

from kb_platform.errors import Corrupt, TooLarge, UnsupportedType

log = logging.getLogger(__name__)

_heif_registered = False


def _register_heif() -> None:
    global _heif_registered
    if not _heif_registered:
        from pillow_heif import register_heif_opener

        register_heif_opener()
        _heif_registered = True


def open_image(content: bytes, *, max_pixels: int) -> Image.Image:
    """Opens and decodes the first frame fully, so a truncated file fails here, typed."""
    _register_heif()
    Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        with warnings.catch_warnings():
            # Pillow warns at half the limit and raises past it; the warning is not an error here.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(content))
            width, height = image.size
            if width * height > max_pixels:
                raise TooLarge(f"image of {width}x{height} pixels is over {max_pixels} pixels")
            image.load()
    except Image.DecompressionBombError as exc:
        raise TooLarge(f"decompression bomb refused: {exc}") from exc
    except UnidentifiedImageError as exc:
        raise UnsupportedType(f"not an image Pillow can open: {exc}") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise Corrupt(f"image cannot be decoded: {exc}") from exc
    return image


def to_rgb(image: Image.Image) -> Image.Image:
    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        background = Image.new("RGB", image.size, "white")
        rgba = image.convert("RGBA")
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit greyscale: scale to 8 bits rather than clip.
        return image.point(lambda v: v / 256).convert("L").convert("RGB")
    return image.convert("RGB")


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    to_rgb(image).save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


def frames(image: Image.Image, max_frames: int) -> list[Image.Image]:
    """Every frame of a multi-page image (TIFF, GIF), each upright (EXIF orientation) and RGB."""
    count = getattr(image, "n_frames", 1)
    if count > max_frames:
        raise TooLarge(f"{count} frames is over the limit of {max_frames} pages")
    result = []
    for index in range(count):
        image.seek(index)
        result.append(to_rgb(_upright(image.copy())))
    return result


def _upright(frame: Image.Image) -> Image.Image:
    """The frame turned as its EXIF orientation says; as it is when the EXIF is unreadable
    (damaged metadata should not cost a readable picture)."""
    try:
        return ImageOps.exif_transpose(frame) or frame
    except (OSError, SyntaxError, ValueError, TypeError, KeyError) as exc:
        log.warning("EXIF orientation ignored (unreadable): %s", exc)
        return frame
