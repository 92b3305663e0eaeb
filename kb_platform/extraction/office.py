"""Office Open XML documents: Word (python-docx), PowerPoint (python-pptx), Excel (openpyxl)."""

from __future__ import annotations

import io
import zipfile

from kb_platform.errors import Corrupt, TooLarge
from kb_platform.extraction.limits import Limits
from kb_platform.extraction.model import ExtractedPage

# Cells read from one sheet; a spreadsheet is rarely knowledge past this.
MAX_CELLS_PER_SHEET = 200_000


def _guard_zip(content: bytes, limits: Limits) -> None:
    """Refuses zip bombs before a library inflates them."""
    try:
        with zipfile.ZipFile(io.BytesIO(content)) as archive:
            inflated = sum(info.file_size for info in archive.infolist())
    except zipfile.BadZipFile as exc:
        raise Corrupt(f"not a valid zip container: {exc}") from exc
    if inflated > limits.max_bytes:
        raise TooLarge(f"inflates to {inflated} bytes, over the limit of {limits.max_bytes}")


def extract_docx(content: bytes, limits: Limits) -> list[ExtractedPage]:
    import docx

    _guard_zip(content, limits)
    document = docx.Document(io.BytesIO(content))
    blocks = [p.text for p in document.paragraphs if p.text.strip()]
    for table in document.tables:
        for row in table.rows:
            cells = [cell.text.strip() for cell in row.cells]
            if any(cells):
                blocks.append(" | ".join(cells))
    return [ExtractedPage(page_number=1, text="\n".join(blocks))]


def extract_pptx(content: bytes, limits: Limits) -> list[ExtractedPage]:
    from pptx import Presentation

    _guard_zip(content, limits)
    presentation = Presentation(io.BytesIO(content))
    if len(presentation.slides) > limits.max_pages:
        raise TooLarge(f"{len(presentation.slides)} slides is over the limit of {limits.max_pages}")
    pages = []
    for number, slide in enumerate(presentation.slides, start=1):
        texts = []
        for shape in slide.shapes:
            if shape.has_text_frame and shape.text_frame.text.strip():
                texts.append(shape.text_frame.text)
            if getattr(shape, "has_table", False) and shape.has_table:
                for row in shape.table.rows:
                    texts.append(" | ".join(cell.text for cell in row.cells))
        if slide.has_notes_slide and slide.notes_slide.notes_text_frame.text.strip():
            texts.append(slide.notes_slide.notes_text_frame.text)
        pages.append(ExtractedPage(page_number=number, text="\n".join(texts)))
    return pages


def extract_xlsx(content: bytes, limits: Limits) -> list[ExtractedPage]:
    from openpyxl import load_workbook

    _guard_zip(content, limits)
    workbook = load_workbook(io.BytesIO(content), read_only=True, data_only=True)
    try:
        pages = []
        for number, sheet in enumerate(workbook.worksheets, start=1):
            rows, cells = [f"# {sheet.title}"], 0
            for row in sheet.iter_rows(values_only=True):
                values = ["" if v is None else str(v) for v in row]
                cells += len(values)
                if cells > MAX_CELLS_PER_SHEET:
                    raise TooLarge(f"sheet {sheet.title!r} has over {MAX_CELLS_PER_SHEET} cells")
                if any(values):
                    rows.append(" | ".join(values))
            pages.append(ExtractedPage(page_number=number, text="\n".join(rows)))
        return pages
    finally:
        workbook.close()


def extract_odt(content: bytes, limits: Limits) -> list[ExtractedPage]:
    from odf import teletype, text
    from odf.opendocument import load

    _guard_zip(content, limits)
    document = load(io.BytesIO(content))
    blocks = [teletype.extractText(node) for node in document.getElementsByType(text.P)]
    return [ExtractedPage(page_number=1, text="\n".join(b for b in blocks if b.strip()))]
