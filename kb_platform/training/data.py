"""Training data on disk (a JSON-lines manifest of image files and texts) and its sharded,
resumable order: every rank reads its own slice of one seeded permutation per epoch, so a run
resumed at step N sees exactly the batches an uninterrupted run would have seen."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch.utils.data import Dataset


@dataclass(frozen=True)
class Example:
    image: str  # a local file
    text: str
    doc_id: str


def write_manifest(path: Path, examples: Sequence[Example]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as out:
        for ex in examples:
            out.write(json.dumps({"image": ex.image, "text": ex.text, "doc_id": ex.doc_id}) + "\n")


def read_manifest(path: Path) -> list[Example]:
    with path.open() as lines:
        return [Example(**json.loads(line)) for line in lines if line.strip()]


def load_image(path: str) -> Image.Image:
    with Image.open(path) as image:
        image.draft("RGB", (512, 512))  # JPEG: decode at reduced size, we need ~128 px
        return image.convert("RGB")


class PairDataset(Dataset):
    def __init__(
        self,
        examples: Sequence[Example],
        preprocess: Callable[[Image.Image], torch.Tensor],
        tokenize: Callable[[list[str]], torch.Tensor],
    ) -> None:
        self.examples = list(examples)
        self.preprocess = preprocess
        self.tokenize = tokenize

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        example = self.examples[index]
        return self.preprocess(load_image(example.image)), self.tokenize([example.text])[0]


@dataclass
class ShardedOrder:
    """Batches of dataset indices for one rank. Every rank gets the same number of batches (the
    tail that does not divide evenly is dropped) so collectives never wait on a missing rank."""

    size: int
    batch_size: int
    rank: int
    world_size: int
    seed: int

    @property
    def batches_per_epoch(self) -> int:
        return self.size // (self.batch_size * self.world_size)

    def epoch(self, epoch: int, start_batch: int = 0) -> Iterator[list[int]]:
        generator = torch.Generator().manual_seed(self.seed + epoch)
        order = torch.randperm(self.size, generator=generator).tolist()
        mine = order[self.rank :: self.world_size]
        for b in range(start_batch, self.batches_per_epoch):
            yield mine[b * self.batch_size : (b + 1) * self.batch_size]


def collate(items: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> Any:
    images, texts = zip(*items, strict=True)
    return torch.stack(images), torch.stack(texts)
