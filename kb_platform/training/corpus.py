"""Training and evaluation examples as files for ``torchrun``: knowledge-base pairs (from the
``clip_pairs`` asset, or built straight from corpus files for benchmarks and tests) and the
Flickr30k captions of the shared corpus."""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from kb_platform.contracts import compute_doc_id
from kb_platform.errors import KbError
from kb_platform.extraction import extract
from kb_platform.extraction.limits import Limits
from kb_platform.extraction.sniffing import sniff_mime
from kb_platform.extraction.stored import store_pages
from kb_platform.resources.blob_store import BlobStore, LocalBlobStore
from kb_platform.training.data import Example
from kb_platform.training.pairs import Pair, document_pairs, is_held_out

log = logging.getLogger(__name__)
FLICKR = Path("image-text/allennlp-flickr/test_fixtures/vision")
_ENTITY = re.compile(r"\[/EN#\d+/\S+ ([^\]]*)\]")


def pairs_from_files(paths: Iterable[Path], store: BlobStore, limits: Limits) -> list[Pair]:
    """Pairs of documents extracted here (text layers only, no OCR), for benchmarks and tests."""
    pairs: list[Pair] = []
    for path in paths:
        content = path.read_bytes()
        doc_id = compute_doc_id(content)
        try:
            extracted = extract(content, sniff_mime(content), limits=limits)
        except KbError as error:
            log.info("no pairs from %s: %s", path.name, error)
            continue
        pairs += document_pairs(store_pages(store, doc_id, extracted), [])
    return pairs


def examples_on_disk(pairs: Sequence[Pair], store: BlobStore, images_dir: Path) -> list[Example]:
    """Each pair's image copied from the blob store to a local file the data loader reads."""
    images_dir.mkdir(parents=True, exist_ok=True)
    examples = []
    for pair in pairs:
        target = images_dir / f"{hashlib.sha256(pair.image_key.encode()).hexdigest()[:20]}.png"
        if not target.exists():
            target.write_bytes(store.get(pair.image_key))
        examples.append(Example(str(target), pair.text, pair.doc_id))
    return examples


def flickr_examples(corpus_dir: Path) -> list[Example]:
    """Every human caption of the Flickr30k images in the shared corpus, one example each."""
    root = corpus_dir / FLICKR
    examples = []
    for sentences in sorted((root / "flickr30k" / "sentences").glob("*.txt")):
        image = next((root / "images" / "flickr30k").glob(f"{sentences.stem}.*"), None)
        if image is None:
            continue
        for line in sentences.read_text().splitlines():
            caption = " ".join(_ENTITY.sub(r"\1", line).split())
            if caption:
                examples.append(Example(str(image), caption, f"flickr-{sentences.stem}"))
    return examples


def corpus_pdf_examples(
    corpus_dir: Path, work: Path, max_pages: int = 40
) -> tuple[list[Example], list[Example]]:
    """(training, held-out) examples from every PDF of the shared corpus, split by document."""
    store = LocalBlobStore(base_dir=str(work / "blobs"))
    files = sorted((corpus_dir / "documents").rglob("*.pdf"))
    pairs = pairs_from_files(files, store, Limits(render_dpi=50, max_pages=max_pages))
    train = [p for p in pairs if not is_held_out(p.doc_id)]
    held_out = [p for p in pairs if is_held_out(p.doc_id)]
    images = work / "images"
    return examples_on_disk(train, store, images), examples_on_disk(held_out, store, images)
