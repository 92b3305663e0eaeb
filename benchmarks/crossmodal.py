"""Cross-modal retrieval through Elasticsearch with CLIP checkpoints: quality and latency.

    .venv/bin/python benchmarks/crossmodal.py --checkpoint DIR [--checkpoint DIR ...]

For each exported checkpoint (e.g. the ``initial`` and ``fine-tuned`` exports that
benchmarks/training.py leaves in its --out folder): indexes every corpus PDF page render as an
image document and every page text as a text document with its CLIP vector (int8_hnsw, a
throwaway index family), then queries with the held-out pairs through the retriever:
text to image and image to text recall@1/5/10 (the pair's own page among every page of the
corpus), image to image self-retrieval, and p50/p95 latency of each mode, query encoding
included. Needs Elasticsearch (`kb-platform services up elasticsearch`).
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from elasticsearch import Elasticsearch
from machine_load import printed_machine_load  # benchmarks/, next to this script

from kb_platform.config import get_settings
from kb_platform.index.clip_documents import clip_table, with_clip
from kb_platform.index.lifecycle import delete_family, roll_out
from kb_platform.index.mapping import IndexNames
from kb_platform.index.retriever import Hit, Retriever
from kb_platform.models.clip_encoder import ClipEncoder
from kb_platform.models.registry import text_encoder
from kb_platform.models.text_encoder import TextEncoder
from kb_platform.resources.elasticsearch import ElasticsearchResource
from kb_platform.training.corpus import corpus_pdf_examples
from kb_platform.training.data import Example, load_image


def page_documents(examples: Sequence[Example], encoder: ClipEncoder) -> list[dict]:
    """Each page as an image document and as a text document, both with CLIP vectors."""
    rows = []
    for i, ex in enumerate(examples):
        common = {"doc_id": ex.doc_id, "title": ex.doc_id, "modality": "document"}
        rows.append(
            {**common, "chunk_id": f"image-{i}", "kind": "image", "text": "", "image_key": ex.image}
        )
    image_vectors = encoder.encode_images([load_image(ex.image) for ex in examples])
    table = clip_table(rows, image_vectors, encoder.version)
    text_vectors = encoder.encode_texts([ex.text for ex in examples])
    texts = [
        {
            "chunk_id": f"text-{i}",
            "doc_id": ex.doc_id,
            "kind": "text",
            "text": ex.text,
            "title": ex.doc_id,
            "modality": "document",
            "clip_vector": vector.tolist(),
        }
        for i, (ex, vector) in enumerate(zip(examples, text_vectors, strict=True))
    ]
    return list(with_clip(texts, table))


def measure(
    queries: Sequence[Example], run: Callable[[Example], list[Hit]], target: Callable[[int], str]
) -> tuple[dict[int, float], list[float]]:
    found = {1: 0, 5: 0, 10: 0}
    latencies = []
    for i, query in enumerate(queries):
        started = time.perf_counter()
        hits = run(query)
        latencies.append((time.perf_counter() - started) * 1000)
        ids = [h.chunk_id for h in hits]
        for k in found:
            found[k] += target(i) in ids[:k]
    return {k: v / max(len(queries), 1) for k, v in found.items()}, latencies


def evaluate(
    checkpoint: Path,
    pages: Sequence[Example],
    held_out: Sequence[Example],
    es: Elasticsearch,
    minilm: TextEncoder,
) -> None:
    encoder = ClipEncoder(checkpoint)
    names = IndexNames(f"crossmodal-{uuid.uuid4().hex[:8]}")
    roll_out(es, page_documents(pages, encoder), names=names)
    es.indices.refresh(index=names.read_alias)
    retriever = Retriever(es, lambda q: minilm.encode([q])[0], index=names.read_alias, clip=encoder)
    modes = {
        "text to image": (lambda q: retriever.text_to_image(q.text, 10), "image-{}"),
        "image to text": (
            lambda q: retriever.image_to_text(load_image(q.image), 10),
            "text-{}",
        ),
        "image to image": (
            lambda q: retriever.image_to_image(load_image(q.image), 10),
            "image-{}",
        ),
    }
    for mode, (run, pattern) in modes.items():
        recall, latencies = measure(held_out, run, pattern.format)
        print(
            f"| {checkpoint.parent.name}/{checkpoint.name} | {mode} | {recall[1]:.3f} "
            f"| {recall[5]:.3f} | {recall[10]:.3f} | {np.percentile(latencies, 50):.1f} "
            f"| {np.percentile(latencies, 95):.1f} |"
        )
    delete_family(es, names)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, action="append", required=True)
    parser.add_argument("--corpus", type=Path, default=get_settings().corpus_dir)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="kb-crossmodal-"))
    train, held_out = corpus_pdf_examples(args.corpus, work)
    pages = [*held_out, *train]  # held-out pages first: query i's own page is image-i / text-i
    es = ElasticsearchResource(url=get_settings().elasticsearch_url).make_client()
    minilm = text_encoder()
    print(f"{len(pages)} pages indexed as image and text documents; {len(held_out)} queries")
    print("\n| checkpoint | mode | recall@1 | recall@5 | recall@10 | p50 ms | p95 ms |")
    print("|---|---|---|---|---|---|---|")
    for checkpoint in args.checkpoint:
        evaluate(checkpoint, pages, held_out, es, minilm)
    es.close()


if __name__ == "__main__":
    with printed_machine_load():
        main()
