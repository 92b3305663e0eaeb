"""``clip_checkpoint``: CLIP trained under FSDP by ``torchrun`` through Dagster Pipes, gated by
held-out recall against the promoted checkpoint; ``promoted_clip_checkpoint`` makes a candidate
that passed the gate the one every embedding uses."""

from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetExecutionContext,
    DataVersion,
    Failure,
    MaterializeResult,
    MetadataValue,
    PipesSubprocessClient,
    asset,
    asset_check,
)
from dagster._core.instance import DagsterInstance

from kb_platform.defs.latest_materialization import latest_metadata
from kb_platform.models.registry import clip_encoder
from kb_platform.resources.blob_store import BlobStore
from kb_platform.resources.clip import ClipResource
from kb_platform.training.corpus import examples_on_disk
from kb_platform.training.data import read_manifest, write_manifest
from kb_platform.training.evaluation import text_to_image_recall
from kb_platform.training.pairs import is_held_out, pairs_of
from kb_platform.training.promotion import Promoted, checkpoint_version, promotion_gate

HELD_OUT = "held_out.jsonl"


@asset(
    group_name="clip_training",
    kinds={"pytorch"},
    description="A CLIP checkpoint trained (or fine-tuned from the promoted one) on the "
    "knowledge base's own pairs with FSDP; loss and samples/s per rank reach the UI.",
)
def clip_checkpoint(
    context: AssetExecutionContext,
    clip_pairs: pa.Table,
    clip: ClipResource,
    blob_store: BlobStore,
    pipes_subprocess_client: PipesSubprocessClient,
) -> MaterializeResult:
    pairs = pairs_of(clip_pairs)
    train = [p for p in pairs if not is_held_out(p.doc_id)]
    held_out = [p for p in pairs if is_held_out(p.doc_id)]
    needed = clip.batch_size * clip.ranks
    if len(train) < needed:
        raise Failure(
            f"{len(train)} training pairs are fewer than one batch ({clip.batch_size} per rank x "
            f"{clip.ranks} ranks); process more documents first",
            allow_retries=False,
        )
    run_dir = clip.root / "runs" / context.run.run_id
    images = clip.root / "images"
    write_manifest(run_dir / "train.jsonl", examples_on_disk(train, blob_store, images))
    held_out_examples = examples_on_disk(held_out, blob_store, images)
    write_manifest(run_dir / HELD_OUT, held_out_examples)
    config = clip.train_config(run_dir / "train.jsonl", run_dir)
    context.log.info(
        "training on %d pairs (%d held out) with %d ranks, from %s",
        len(train),
        len(held_out),
        clip.ranks,
        config.init_from or "the spec's initial weights",
    )
    result = pipes_subprocess_client.run(
        command=config.launch_command(clip.ranks),
        context=context,
        extras={"run_dir": str(run_dir)},
    ).get_materialize_result()
    # The candidate is evaluated once, here; the gate and the promotion read the result.
    recall = text_to_image_recall(clip_encoder(config.export_dir), held_out_examples)
    metadata = {
        **(result.metadata or {}),
        "train_pairs": len(train),
        "held_out_pairs": len(held_out),
        "held_out_recall": MetadataValue.json(recall),
        "version": checkpoint_version(config.export_dir),
        "export_dir": MetadataValue.path(str(config.export_dir)),
        "init_from": config.init_from or "none",
    }
    return MaterializeResult(metadata=metadata)


@dataclass(frozen=True)
class Candidate:
    export_dir: Path
    version: str
    recall: dict[str, float]  # text-to-image, on its held-out pairs
    held_out_pairs: int


def latest_candidate(instance: DagsterInstance) -> Candidate:
    metadata = latest_metadata(instance, clip_checkpoint.key)
    return Candidate(
        export_dir=Path(str(metadata["export_dir"].value)),
        version=str(metadata["version"].value),
        recall=dict(metadata["held_out_recall"].value),
        held_out_pairs=int(metadata["held_out_pairs"].value),
    )


@asset_check(
    asset=clip_checkpoint,
    blocking=True,
    description="Text-to-image recall@1/5/10 on the held-out pairs is no worse than the promoted "
    "checkpoint's; a failure blocks promotion.",
)
def clip_checkpoint_beats_promoted(
    context: AssetCheckExecutionContext, clip: ClipResource
) -> AssetCheckResult:
    candidate = latest_candidate(context.instance)
    if not candidate.held_out_pairs:
        return AssetCheckResult(
            passed=False,
            severity=AssetCheckSeverity.ERROR,
            description="no held-out pairs: nothing shows the candidate is not worse",
        )
    current = clip.promoted()
    baseline = (  # the promoted checkpoint on the candidate's held-out pairs
        text_to_image_recall(
            clip_encoder(Path(current.export_dir)),
            read_manifest(candidate.export_dir.parent / HELD_OUT),
        )
        if current
        else None
    )
    verdict = promotion_gate(candidate.recall, baseline, max_drop=clip.max_recall_drop)
    return AssetCheckResult(
        passed=verdict.passed,
        severity=AssetCheckSeverity.ERROR,
        description=verdict.reason,
        metadata={
            **{f"candidate {k}": MetadataValue.float(v) for k, v in candidate.recall.items()},
            **{f"promoted {k}": MetadataValue.float(v) for k, v in (baseline or {}).items()},
            "promoted_version": current.version if current else "none",
        },
    )


@asset(
    deps=[clip_checkpoint],
    group_name="clip_training",
    description="The CLIP checkpoint in use. Materialized only after the gate passed; its new "
    "version makes every document's image_embeddings stale, and the roll-out sensor re-embeds "
    "them and rolls the index to a new version.",
)
def promoted_clip_checkpoint(
    context: AssetExecutionContext, clip: ClipResource
) -> MaterializeResult:
    candidate = latest_candidate(context.instance)
    promoted = clip.promote(
        Promoted(
            version=candidate.version,
            export_dir=str(candidate.export_dir),
            recall=candidate.recall,
        )
    )
    return MaterializeResult(
        metadata={
            "version": promoted.version,
            "export_dir": MetadataValue.path(promoted.export_dir),
            **{k: MetadataValue.float(v) for k, v in promoted.recall.items()},
        },
        data_version=DataVersion(promoted.version),
    )
