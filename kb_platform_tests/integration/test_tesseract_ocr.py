"""Real Tesseract 5 on the reference page and its rotated copies."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from kb_platform.ocr.quality import character_error_rate
from kb_platform.ocr.tesseract import recognize

PAGES = [
    ("phototest.tif", 0),
    ("phototest-rotated-L.png", 90),
    ("phototest-rotated-180.png", 180),
    ("phototest-rotated-R.png", 270),
]


def test_tesseract_5_with_english_and_osd_is_installed() -> None:
    assert shutil.which("tesseract"), "tesseract not on PATH; run deploy/local/setup.sh"
    version = subprocess.run(["tesseract", "--version"], capture_output=True, text=True).stdout
    assert version.startswith("tesseract 5")
    langs = subprocess.run(["tesseract", "--list-langs"], capture_output=True, text=True).stdout
    assert {"eng", "osd"} <= set(langs.split())


@pytest.mark.parametrize(("name", "rotation"), PAGES)
def test_phototest_character_error_rate_under_two_percent(
    corpus_dir: Path, name: str, rotation: int
) -> None:
    folder = corpus_dir / "ocr" / "tesseract"
    reference = (folder / "phototest.txt").read_text()
    result = recognize(Image.open(folder / name))
    assert result.rotation == rotation
    assert character_error_rate(result.text, reference) < 0.02
    assert result.mean_confidence > 80
    assert all(0 <= w.confidence <= 100 for w in result.words)
