"""Extractors on real files of the shared corpus (no services needed)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from kb_platform.errors import Corrupt, Encrypted, TooLarge, UnsupportedType
from kb_platform.extraction import extract
from kb_platform.extraction.limits import Limits
from kb_platform.extraction.sniffing import sniff_mime

EXAMPLES = "documents/unstructured/example-docs"
LIMITS = Limits()


def _extract(corpus_dir: Path, relative: str, **kwargs) -> list:
    content = (corpus_dir / relative).read_bytes()
    return extract(content, sniff_mime(content), limits=kwargs.pop("limits", LIMITS), **kwargs)


@pytest.mark.parametrize(
    ("relative", "expected"),
    [
        (f"{EXAMPLES}/fake.docx", "Lorem ipsum dolor sit amet"),
        (f"{EXAMPLES}/fake-power-point.pptx", "Adding a Bullet Slide"),
        (f"{EXAMPLES}/stanley-cups.xlsx", "Stanley Cups"),
        (f"{EXAMPLES}/fake-html.html", "My First Heading"),
        (f"{EXAMPLES}/winter-sports.epub", "Winter Sports"),
        (f"{EXAMPLES}/fake-doc.rtf", "My First Heading"),
        (f"{EXAMPLES}/fake-text-utf-16-le.txt", "This is a test document"),
        (f"{EXAMPLES}/fake-text-utf-32.txt", "This is a test document"),
        (f"{EXAMPLES}/umlauts-non-utf8.md", "können"),
        (f"{EXAMPLES}/fake.odt", "Lorem ipsum"),
    ],
)
def test_formats_extract_their_text(corpus_dir: Path, relative: str, expected: str) -> None:
    pages = _extract(corpus_dir, relative)
    assert expected.lower() in " ".join(p.text for p in pages).lower()


def test_sniffing_ignores_the_file_name(corpus_dir: Path) -> None:
    content = (corpus_dir / f"{EXAMPLES}/fake-html.html").read_bytes()
    assert sniff_mime(content) == "text/html"
    assert sniff_mime(b"%PDF-1.4\n" + b"0" * 100) == "application/pdf"


def test_encrypted_pdf_needs_its_password(corpus_dir: Path) -> None:
    relative = "documents/docling/pdf_password/sources/2206.01062_pg3.pdf"
    with pytest.raises(Encrypted, match="password"):
        _extract(corpus_dir, relative)
    with pytest.raises(Encrypted, match="wrong"):
        _extract(corpus_dir, relative, password="nope")
    pages = _extract(corpus_dir, relative, password="1234")
    assert pages and pages[0].text.strip()


def test_exif_orientation_is_applied(corpus_dir: Path) -> None:
    upright = _extract(corpus_dir, "documents/images-pillow/hopper_orientation_3.jpg")[0]
    assert upright.needs_ocr and upright.render is not None
    original = Image.open(corpus_dir / "documents/images-pillow/hopper_orientation_3.jpg")
    rendered = Image.open(io.BytesIO(upright.render.png))
    # Orientation 3 is a 180 degree turn: the size stays, the pixels flip.
    assert rendered.size == original.size
    assert rendered.getpixel((0, 0)) != original.convert("RGB").getpixel((0, 0))


def test_multipage_tiff_gives_one_page_per_frame(corpus_dir: Path) -> None:
    assert len(_extract(corpus_dir, "documents/images-pillow/multipage.tiff")) == 3


def test_decompression_bomb_is_too_large(corpus_dir: Path) -> None:
    with pytest.raises(TooLarge):
        _extract(
            corpus_dir,
            "bad-inputs/pillow/decompression_bomb.gif",
            limits=Limits(max_pixels=1_000_000),
        )


def test_truncated_image_is_corrupt(corpus_dir: Path) -> None:
    with pytest.raises(Corrupt):
        _extract(corpus_dir, "bad-inputs/pillow/truncated_image.png")


def test_page_limit(corpus_dir: Path) -> None:
    with pytest.raises(TooLarge, match="pages"):
        _extract(
            corpus_dir,
            "documents/py-pdf-sample-files/026-latex-multicolumn/multicolumn.pdf",
            limits=Limits(max_pages=1),
        )


def test_unsupported_type() -> None:
    with pytest.raises(UnsupportedType):
        extract(b"\x00\x01", "application/x-ole-storage", limits=LIMITS)


def test_unreadable_exif_keeps_the_picture(corpus_dir: Path) -> None:
    (page,) = _extract(corpus_dir, "bad-inputs/pillow/invalid-exif.jpg")
    assert page.render is not None and page.render.width > 0


def test_password_protected_office_file_is_encrypted(corpus_dir: Path) -> None:
    with pytest.raises(Encrypted):
        _extract(corpus_dir, f"{EXAMPLES}/password_protected.xlsx")
