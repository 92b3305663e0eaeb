"""Tokenised text as Parquet shards of fixed-length blocks, the causal LM's training data.

Texts are tokenised, joined with the end-of-sequence id between them and cut into blocks of
``seq_len + 1`` ids (a block's first ``seq_len`` ids are the input, the last ``seq_len`` the
labels; the tail that fills no block is dropped). Shards are ``shard-NNNNN.parquet`` files with
one ``input_ids`` list column beside a ``tokens.json`` that says the block length and count.
The folder may be local or any fsspec URL (``s3://`` with s3fs installed); a rank reads only
the rows its sharded order gives it, a shard at a time.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

COLUMN = "input_ids"
META = "tokens.json"


def pack(token_lists: Iterable[Sequence[int]], block: int, eos_id: int) -> Iterator[list[int]]:
    """Blocks of ``block`` ids from the documents' ids, each document followed by ``eos_id``."""
    buffer: list[int] = []
    for ids in token_lists:
        buffer.extend(ids)
        buffer.append(eos_id)
        while len(buffer) >= block:
            yield buffer[:block]
            del buffer[:block]


def write_shards(
    texts: Iterable[str],
    tokenize: Callable[[str], Sequence[int]],
    eos_id: int,
    seq_len: int,
    target: str,
    rows_per_shard: int = 1024,
) -> int:
    """Writes the blocks of ``texts`` under ``target``; returns how many blocks."""
    fs, root = fsspec.core.url_to_fs(target)
    fs.makedirs(root, exist_ok=True)
    rows: list[list[int]] = []
    shards = blocks = 0

    def flush() -> None:
        nonlocal shards
        table = pa.table({COLUMN: pa.array(rows, type=pa.list_(pa.int32()))})
        with fs.open(f"{root}/shard-{shards:05d}.parquet", "wb") as out:
            pq.write_table(table, out)
        shards += 1
        rows.clear()

    for block in pack(map(tokenize, texts), seq_len + 1, eos_id):
        rows.append(block)
        blocks += 1
        if len(rows) == rows_per_shard:
            flush()
    if rows:
        flush()
    with fs.open(f"{root}/{META}", "w") as out:
        json.dump({"seq_len": seq_len, "blocks": blocks, "shards": shards}, out)
    return blocks


class TokenBlocks:
    """Random access to the blocks of a shard folder: ``take(indices)`` -> [n, seq_len + 1]."""

    def __init__(self, source: str, cached_shards: int = 2) -> None:
        self.fs, self.root = fsspec.core.url_to_fs(source)
        with self.fs.open(f"{self.root}/{META}") as meta:
            info: dict[str, Any] = json.load(meta)
        self.seq_len = int(info["seq_len"])
        self.files = sorted(self.fs.glob(f"{self.root}/shard-*.parquet"))
        if len(self.files) != info["shards"]:
            raise ValueError(
                f"{source}: {META} names {info['shards']} shards, found {len(self.files)}"
            )
        counts = []
        for path in self.files:
            with self.fs.open(path) as handle:
                counts.append(pq.ParquetFile(handle).metadata.num_rows)
        self.starts = np.cumsum([0, *counts])
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._cached_shards = cached_shards

    def __len__(self) -> int:
        return int(self.starts[-1])

    def _shard(self, number: int) -> np.ndarray:
        if number in self._cache:
            self._cache.move_to_end(number)
            return self._cache[number]
        with self.fs.open(self.files[number]) as handle:
            column = pq.read_table(handle, columns=[COLUMN]).column(COLUMN).combine_chunks()
        rows = column.values.to_numpy().reshape(len(column), self.seq_len + 1)
        self._cache[number] = rows
        if len(self._cache) > self._cached_shards:
            self._cache.popitem(last=False)
        return rows

    def take(self, indices: Sequence[int]) -> torch.Tensor:
        out = np.empty((len(indices), self.seq_len + 1), dtype=np.int64)
        for i, index in enumerate(indices):
            if not 0 <= index < len(self):
                raise IndexError(f"block {index} of {len(self)}")
            shard = int(np.searchsorted(self.starts, index, side="right")) - 1
            out[i] = self._shard(shard)[index - self.starts[shard]]
        return torch.from_numpy(out)
