"""Which CLIP checkpoint is in use (``promoted.json`` under the CLIP root) and the gate a
candidate must pass to replace it: no text-to-image recall@k may drop on the held-out pairs."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from kb_platform.training.spec import WEIGHTS

POINTER = "promoted.json"


def checkpoint_version(export_dir: Path) -> str:
    """Names a checkpoint by its weights: the same export is the same version anywhere."""
    digest = hashlib.sha256()
    with (export_dir / WEIGHTS).open("rb") as weights:
        for block in iter(lambda: weights.read(1 << 20), b""):
            digest.update(block)
    return f"clip-{digest.hexdigest()[:12]}"


@dataclass(frozen=True)
class Promoted:
    version: str
    export_dir: str
    recall: dict[str, float] = field(default_factory=dict)
    promoted_at: float = 0.0


def promoted(root: Path) -> Promoted | None:
    pointer = root / POINTER
    if not pointer.exists():
        return None
    return Promoted(**json.loads(pointer.read_text()))


def promote(root: Path, checkpoint: Promoted) -> Promoted:
    """Points the platform at ``checkpoint`` (an atomic rename: readers see old or new)."""
    root.mkdir(parents=True, exist_ok=True)
    stamped = Promoted(**{**asdict(checkpoint), "promoted_at": time.time()})
    temporary = root / f".{POINTER}.tmp"
    temporary.write_text(json.dumps(asdict(stamped), indent=2))
    temporary.replace(root / POINTER)
    return stamped


@dataclass(frozen=True)
class Verdict:
    passed: bool
    regressions: dict[str, tuple[float, float]]  # metric -> (promoted, candidate)
    reason: str


def promotion_gate(
    candidate: dict[str, float],
    current: dict[str, float] | None,
    metrics: tuple[str, ...] = ("recall@1", "recall@5", "recall@10"),
    max_drop: float = 0.0,
) -> Verdict:
    if current is None:
        return Verdict(True, {}, "no checkpoint promoted yet")
    regressions = {
        m: (current[m], candidate[m]) for m in metrics if candidate[m] < current[m] - max_drop
    }
    if regressions:
        worse = ", ".join(f"{m} {a:.3f} -> {b:.3f}" for m, (a, b) in regressions.items())
        return Verdict(False, regressions, f"worse than the promoted checkpoint: {worse}")
    return Verdict(True, {}, "no recall@k dropped")
