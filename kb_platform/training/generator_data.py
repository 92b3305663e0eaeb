"""The knowledge base's chunks as the answer generator's training data: each document's text
rebuilt from its chunks (the chunker's overlaps removed, so no sentence is seen twice), split
by document into training and held-out (the same split as CLIP's pairs), tokenised with the
source model's own tokenizer and written as token shards (token_shards.py)."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer

from kb_platform.contracts import Chunk
from kb_platform.training.pairs import is_held_out
from kb_platform.training.token_shards import write_shards

PART_BREAK = "\n\n"  # between a document's pages (or a page and its transcript)


def all_chunks(
    loaded: Mapping[str, Sequence[Chunk] | None] | Sequence[Chunk] | None,
) -> list[Chunk]:
    """Every chunk of a multi-partition load of ``text_chunks``: Dagster's file IO managers
    hand one partition as its list, several as ``{partition: list}``, none as ``None``."""
    if loaded is None:
        return []
    if isinstance(loaded, Mapping):
        return [c for key in sorted(loaded) for c in (loaded[key] or [])]
    return list(loaded)


def document_texts(chunks: Iterable[Chunk]) -> dict[str, str]:
    """doc_id -> its text, each page (or transcript) rebuilt from its chunks in order. Chunks
    are slices of their part's text (``char_start``..``char_end``): a chunk adds only what lies
    past the end of the one before it."""
    parts: dict[str, dict[int | None, list[Chunk]]] = defaultdict(lambda: defaultdict(list))
    for chunk in chunks:
        parts[chunk.doc_id][chunk.page].append(chunk)
    texts = {}
    for doc_id, pages in parts.items():
        rebuilt = []
        for page in sorted(pages, key=lambda p: (p is None, p or 0)):
            rebuilt.append(_stitched(pages[page]))
        texts[doc_id] = PART_BREAK.join(t for t in rebuilt if t)
    return texts


def _stitched(chunks: list[Chunk]) -> str:
    if any(c.char_start is None or c.char_end is None for c in chunks):
        return "\n".join(c.text.strip() for c in chunks)  # no offsets: keep every chunk
    out: list[str] = []
    covered = 0
    for chunk in sorted(chunks, key=lambda c: (c.char_start, c.char_end)):
        start, end = int(chunk.char_start or 0), int(chunk.char_end or 0)
        if end <= covered:
            continue
        if start < covered:
            out.append(chunk.text[covered - start :])
        else:
            out.append((" " if out and start > covered else "") + chunk.text)
        covered = end
    return "".join(out).strip()


@dataclass(frozen=True)
class TokenSplits:
    train_dir: Path
    held_out_dir: Path
    train_docs: int
    held_out_docs: int
    train_blocks: int
    held_out_blocks: int


def eos_id(model_dir: Path, tokenizer: Tokenizer) -> int:
    """The model's end-of-sequence id (its config's, the first of a list), else the
    tokenizer's ``</s>``/``<eos>``/``[SEP]``."""
    config = json.loads((model_dir / "config.json").read_text())
    eos = config.get("eos_token_id")
    if isinstance(eos, list):
        eos = eos[0] if eos else None
    if eos is None:
        eos = next(
            (i for t in ("<eos>", "</s>", "[SEP]") if (i := tokenizer.token_to_id(t)) is not None),
            None,
        )
    if eos is None:
        raise ValueError(f"{model_dir}: no eos_token_id in config.json nor an eos token")
    return int(eos)


def write_token_splits(
    texts: Mapping[str, str], model_dir: Path, seq_len: int, out_dir: Path
) -> TokenSplits:
    """Training and held-out token shards under ``out_dir`` (``train/``, ``held_out/``), the
    documents in doc_id order, tokenised by ``model_dir``'s ``tokenizer.json``."""
    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    eos = eos_id(model_dir, tokenizer)

    def ids(text: str) -> list[int]:
        return tokenizer.encode(text, add_special_tokens=False).ids

    held = sorted(d for d in texts if is_held_out(d))
    train = sorted(d for d in texts if not is_held_out(d))
    train_dir, held_dir = out_dir / "train", out_dir / "held_out"
    train_blocks = write_shards((texts[d] for d in train), ids, eos, seq_len, str(train_dir))
    held_blocks = write_shards((texts[d] for d in held), ids, eos, seq_len, str(held_dir))
    return TokenSplits(train_dir, held_dir, len(train), len(held), train_blocks, held_blocks)
