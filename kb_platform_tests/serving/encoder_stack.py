"""What the encoder-service tests share: the token and limits the service runs with, a small
promoted CLIP checkpoint for it to serve, and reading its metrics."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import httpx

from kb_platform.serving.launcher import ServiceProcess
from kb_platform.training.promotion import Promoted, checkpoint_version, promote
from kb_platform.training.spec import SPEC, WEIGHTS, ClipSpec, build_model

TOKEN = "test-encoder-token-0123456789"
LIMITS = {
    "max_texts": 16,
    "max_text_chars": 2000,
    "max_request_bytes": 1024 * 1024,
    "max_image_pixels": 1_000_000,
}
T = TypeVar("T")
SMALL_CLIP = ClipSpec(context_length=32, vision_layers=2, vision_width=128)


def promote_untrained_clip(root: Path) -> Promoted:
    """A CLIP export as training writes one (spec + safetensors), from the untrained model: the
    service's job is to serve a checkpoint, whatever its recall."""
    from safetensors.torch import save_file

    target = root / "untrained" / "export"
    target.mkdir(parents=True)
    model = build_model(SMALL_CLIP)
    save_file(
        {k: v.detach().float().clone() for k, v in model.state_dict().items()}, target / WEIGHTS
    )
    (target / SPEC).write_text(SMALL_CLIP.to_json())
    return promote(root, Promoted(version=checkpoint_version(target), export_dir=str(target)))


def at_once(requests: int, call: Callable[[int], T]) -> dict[int, T]:
    """``call(i)`` for every i in ``range(requests)``, from as many threads released together."""
    start = threading.Barrier(requests)
    results: dict[int, T] = {}

    def one(i: int) -> None:
        start.wait()
        results[i] = call(i)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(requests)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return results


def metric(service: ServiceProcess, name: str) -> float:
    text = httpx.get(f"{service.url}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).text
    pattern = re.compile(rf"^{re.escape(name)}(?:{{[^}}]*}})? ([0-9.e+-]+)$", re.MULTILINE)
    return sum(float(value) for value in pattern.findall(text))
