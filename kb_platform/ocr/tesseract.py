"""Tesseract OCR through pytesseract: orientation detection, per-word confidences, timeouts."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import pytesseract
from PIL import Image

from kb_platform.errors import Timeout

log = logging.getLogger(__name__)

# Tesseract asks OpenMP for 4+ threads; on a 2-core machine that makes a page 4-6x slower
# (DESIGN.md section 7). One thread per process; parallelism comes from OCRing pages side by side.
OMP_THREADS = "1"
# Below this OSD confidence the detected orientation is a guess; the page is left as it is.
MIN_ORIENTATION_CONFIDENCE = 1.5


@dataclass(frozen=True)
class OcrWord:
    text: str
    confidence: float  # 0-100, as Tesseract reports it
    left: int
    top: int
    width: int
    height: int


@dataclass(frozen=True)
class OcrResult:
    text: str
    words: tuple[OcrWord, ...]
    rotation: int  # degrees (clockwise) the image was turned before recognition
    languages: str

    @property
    def mean_confidence(self) -> float:
        return sum(w.confidence for w in self.words) / len(self.words) if self.words else 0.0


def _limit_threads() -> None:
    os.environ.setdefault("OMP_THREAD_LIMIT", OMP_THREADS)


def _run(call, *args, timeout_s: float, what: str, **kwargs):
    _limit_threads()
    try:
        return call(*args, timeout=timeout_s, **kwargs)
    except RuntimeError as exc:  # pytesseract's only signal for a killed process
        if "timeout" in str(exc).lower():
            raise Timeout(f"Tesseract {what} exceeded {timeout_s:g}s") from exc
        raise


def detect_rotation(image: Image.Image, *, timeout_s: float = 30.0) -> int:
    """Degrees to turn the image clockwise so its text is upright (0, 90, 180 or 270)."""
    try:
        osd = _run(
            pytesseract.image_to_osd,
            image,
            config="--psm 0",
            output_type=pytesseract.Output.DICT,
            timeout_s=timeout_s,
            what="orientation detection",
        )
    except pytesseract.TesseractError as exc:
        # Too little text to decide: recognise the page as it is.
        log.debug("orientation detection skipped: %s", exc)
        return 0
    if float(osd.get("orientation_conf", 0.0)) < MIN_ORIENTATION_CONFIDENCE:
        return 0
    return int(osd.get("rotate", 0)) % 360


def recognize(
    image: Image.Image,
    *,
    languages: str = "eng",
    timeout_s: float = 60.0,
    correct_orientation: bool = True,
) -> OcrResult:
    """Recognises the text of one page image; lines and paragraphs keep Tesseract's layout."""
    if image.mode not in ("L", "RGB"):
        image = image.convert("RGB")
    rotation = detect_rotation(image, timeout_s=timeout_s) if correct_orientation else 0
    if rotation:
        # PIL turns counter-clockwise for positive angles.
        image = image.rotate(-rotation, expand=True)
    data = _run(
        pytesseract.image_to_data,
        image,
        lang=languages,
        config="--psm 3",
        output_type=pytesseract.Output.DICT,
        timeout_s=timeout_s,
        what="recognition",
    )
    words: list[OcrWord] = []
    lines: list[str] = []
    current: list[str] = []
    last_line: tuple[int, int, int] | None = None
    last_par: tuple[int, int] | None = None
    for i, text in enumerate(data["text"]):
        text = text.strip()
        if not text:
            continue
        par = (data["block_num"][i], data["par_num"][i])
        line = (*par, data["line_num"][i])
        if line != last_line and current:
            lines.append(" ".join(current))
            current = []
            if par != last_par:
                lines.append("")
        last_line, last_par = line, par
        current.append(text)
        words.append(
            OcrWord(
                text=text,
                confidence=max(float(data["conf"][i]), 0.0),
                left=int(data["left"][i]),
                top=int(data["top"][i]),
                width=int(data["width"][i]),
                height=int(data["height"][i]),
            )
        )
    if current:
        lines.append(" ".join(current))
    return OcrResult(
        text="\n".join(lines).strip(), words=tuple(words), rotation=rotation, languages=languages
    )
