"""Which answer-generator checkpoint is in use (``promoted.json`` under the generator root), how
a checkpoint is named and measured, and the gate a candidate must pass to replace it: its
held-out perplexity may not rise (beyond a tolerance) and, where measured, its citation precision
may not drop. Promotion also stores the export as a new version of the generator's name in the
BentoML model store, whose latest version is what the RAG service loads."""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from kb_platform.training.token_shards import TokenBlocks

POINTER = "promoted.json"
EVAL_BATCH = 4
LARGEST_EXPONENT = 709.0  # math.exp overflows a float above about 709.78


def weights_version(model_dir: Path) -> str:
    """Names a Hugging Face folder by its safetensors files (names and bytes): the same weights
    are the same version anywhere."""
    files = sorted(Path(model_dir).glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{model_dir} holds no *.safetensors")
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode())
        with path.open("rb") as weights:
            for block in iter(lambda: weights.read(1 << 20), b""):
                digest.update(block)
    return f"gen-{digest.hexdigest()[:12]}"


@torch.no_grad()
def perplexity(model_dir: Path, blocks_dir: Path, max_blocks: int) -> float:
    """exp of the mean next-token loss over the first ``max_blocks`` blocks of a token-shard
    folder (float32, in this process); inf when that overflows, NaN when the loss is NaN
    (a diverged model: the gate fails both)."""
    from transformers import AutoModelForCausalLM

    blocks = TokenBlocks(str(blocks_dir))
    count = min(len(blocks), max_blocks)
    if count == 0:
        raise ValueError(f"{blocks_dir} holds no blocks")
    model = AutoModelForCausalLM.from_pretrained(  # nosec B615 # a local export folder
        str(model_dir), dtype=torch.float32, local_files_only=True
    ).eval()
    total = tokens = 0.0
    for start in range(0, count, EVAL_BATCH):
        batch = blocks.take(list(range(start, min(start + EVAL_BATCH, count))))
        logits = model(input_ids=batch[:, :-1]).logits.float()
        total += float(
            torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1), reduction="sum"
            )
        )
        tokens += batch[:, 1:].numel()
    mean = total / tokens
    if math.isnan(mean) or mean < LARGEST_EXPONENT:
        return math.exp(mean)
    return math.inf


@dataclass(frozen=True)
class PromotedGenerator:
    version: str
    export_dir: str
    held_out_perplexity: float
    source_version: str = ""
    store_tag: str = ""  # the BentoML model-store version that holds the same weights
    promoted_at: float = 0.0


def promoted(root: Path) -> PromotedGenerator | None:
    pointer = root / POINTER
    if not pointer.exists():
        return None
    return PromotedGenerator(**json.loads(pointer.read_text()))


def promote(root: Path, checkpoint: PromotedGenerator) -> PromotedGenerator:
    """Points the platform at ``checkpoint`` (an atomic rename: readers see old or new)."""
    root.mkdir(parents=True, exist_ok=True)
    stamped = PromotedGenerator(**{**asdict(checkpoint), "promoted_at": time.time()})
    temporary = root / f".{POINTER}.tmp"
    temporary.write_text(json.dumps(asdict(stamped), indent=2))
    temporary.replace(root / POINTER)
    return stamped


def store_export(
    export_dir: Path, name: str, labels: dict[str, str], metadata: dict[str, Any]
) -> str:
    """Copies a Hugging Face export (every file but the trainer's metrics) into the BentoML
    model store as a new version of ``name``, which becomes its latest; returns the tag."""
    import bentoml

    from kb_platform.models import model_store

    with (
        model_store.store_lock(name),
        bentoml.models.create(
            name,
            labels=labels,
            metadata={**metadata, "format": "transformers+safetensors"},
        ) as stored,
    ):
        for path in sorted(Path(export_dir).iterdir()):
            if path.is_file() and path.name != "metrics.json":
                shutil.copyfile(path, Path(stored.path) / path.name)
    return str(stored.tag)


@dataclass(frozen=True)
class Verdict:
    passed: bool
    reasons: list[str] = field(default_factory=list)

    @property
    def reason(self) -> str:
        return "; ".join(self.reasons)


def generator_gate(
    candidate_perplexity: float,
    baseline_perplexity: float,
    max_perplexity_increase: float,
    candidate_precision: float | None = None,
    baseline_precision: float | None = None,
    max_precision_drop: float = 0.0,
) -> Verdict:
    """Passes when the candidate's held-out perplexity is at most the baseline's times
    ``1 + max_perplexity_increase`` and, when both were measured, its citation precision is at
    least the baseline's less ``max_precision_drop``. A candidate that cites nothing has no
    precision: measured against a baseline that cites, that is a drop."""
    reasons, passed = [], True
    limit = baseline_perplexity * (1 + max_perplexity_increase)
    if not candidate_perplexity <= limit:  # NaN fails too
        passed = False
        reasons.append(
            f"held-out perplexity {baseline_perplexity:.3f} -> {candidate_perplexity:.3f} "
            f"(at most {limit:.3f})"
        )
    else:
        reasons.append(
            f"held-out perplexity {baseline_perplexity:.3f} -> {candidate_perplexity:.3f}"
        )
    if baseline_precision is not None:
        if candidate_precision is None or candidate_precision < baseline_precision - (
            max_precision_drop
        ):
            passed = False
            shown = "none" if candidate_precision is None else f"{candidate_precision:.3f}"
            reasons.append(f"citation precision dropped {baseline_precision:.3f} -> {shown}")
        else:
            reasons.append(
                f"citation precision {baseline_precision:.3f} -> {candidate_precision:.3f}"
            )
    elif candidate_precision is not None:
        reasons.append(f"citation precision {candidate_precision:.3f} (the baseline cites none)")
    return Verdict(passed, reasons)
