"""``generator_checkpoint``: the answer generator fine-tuned on the knowledge base under FSDP by
``torchrun`` through Dagster Pipes, with its held-out perplexity and its source's."""

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dagster import (
    AssetExecutionContext,
    AssetIn,
    DataVersion,
    Failure,
    MaterializeResult,
    MetadataValue,
    PipesSubprocessClient,
    asset,
)
from dagster._core.instance import DagsterInstance

from kb_platform.defs.latest_materialization import latest_metadata
from kb_platform.resources.generator_training import GeneratorTrainingResource
from kb_platform.resources.training_cluster import TrainingClusterResource
from kb_platform.training.generator_data import all_chunks, document_texts, write_token_splits
from kb_platform.training.generator_promotion import perplexity, weights_version


@asset(
    group_name="generator_training",
    kinds={"pytorch"},
    ins={"text_chunks": AssetIn(metadata={"allow_missing_partitions": True})},
    description="The answer generator continued-pre-trained on every document's chunks with "
    "FSDP (fine-tuned from the promoted generator, else the base model); held-out perplexity "
    "of the candidate and of its source on the same held-out documents.",
)
def generator_checkpoint(
    context: AssetExecutionContext,
    # {partition: chunks} (several partitions), one partition's chunks, or None (none): see
    # all_chunks. Any, as Dagster cannot type-check a union of containers.
    text_chunks: Any,
    generator_training: GeneratorTrainingResource,
    pipes_subprocess_client: PipesSubprocessClient,
    training_cluster: TrainingClusterResource,
) -> MaterializeResult:
    """Continued pre-training (next-token loss on the corpus's own text) rather than training
    on question/answer pairs: the knowledge base holds no instruction data, and pairs made here
    would be written by the same small model being trained, teaching it its own mistakes. What
    the corpus can teach is its vocabulary and its facts, which is what grounds the generator's
    answers in the sources it is given; the answer format comes from the prompt (it begins the
    answer with "According to [") and is checked by the promotion gate's citation precision.

    Documents are rebuilt from their chunks (overlaps removed) and split by document, as
    CLIP's pairs are (``is_held_out``): no held-out document is trained on.

    With ``launch_on_cluster`` the run is a Kubernetes Job of ``training_cluster``'s nodes and
    GPUs instead of ``torchrun`` beside this process; the source model is then staged onto the
    shared volume (``root_dir``) first, where the pods can read it."""
    texts = document_texts(all_chunks(text_chunks))
    on_cluster = generator_training.launch_on_cluster
    source = generator_training.source_model()
    if on_cluster:
        source = generator_training.staged(source)
    ranks = training_cluster.world_size if on_cluster else generator_training.ranks
    run_dir = generator_training.root / "runs" / context.run.run_id
    splits = write_token_splits(texts, source, generator_training.seq_len, run_dir / "tokens")
    needed = generator_training.batch_size * ranks
    if splits.train_blocks < needed:
        raise Failure(
            f"{splits.train_blocks} training blocks of {generator_training.seq_len} tokens are "
            f"fewer than one batch ({generator_training.batch_size} per rank x "
            f"{ranks} ranks); process more documents first",
            allow_retries=False,
        )
    if splits.held_out_blocks == 0:
        raise Failure(
            f"none of the {len(texts)} documents gives a held-out block: nothing would show "
            "the candidate is not worse; process more documents first",
            allow_retries=False,
        )
    config = generator_training.train_config(source, splits.train_dir, run_dir)
    context.log.info(
        "fine-tuning %s on %d blocks (%d documents; %d held out) with %d ranks",
        source,
        splits.train_blocks,
        splits.train_docs,
        splits.held_out_docs,
        ranks,
    )
    extras = {"run_dir": str(run_dir)}
    if on_cluster:
        launched = training_cluster.run(context=context, config=config, extras=extras)
    else:
        launched = pipes_subprocess_client.run(
            command=config.launch_command(ranks), context=context, extras=extras
        )
    result = launched.get_materialize_result()
    # Both models are measured once, here, on the same blocks; the gate reads the numbers.
    limit = generator_training.eval_blocks
    candidate = perplexity(config.export_dir, splits.held_out_dir, limit)
    before = perplexity(source, splits.held_out_dir, limit)
    version = weights_version(config.export_dir)
    context.log.info("held-out perplexity %.3f -> %.3f (%s)", before, candidate, version)
    metadata = {
        **(result.metadata or {}),
        "train_documents": splits.train_docs,
        "held_out_documents": splits.held_out_docs,
        "train_blocks": splits.train_blocks,
        "held_out_blocks": splits.held_out_blocks,
        "evaluated_blocks": min(limit, splits.held_out_blocks),
        "held_out_perplexity": MetadataValue.float(candidate),
        "source_held_out_perplexity": MetadataValue.float(before),
        "version": version,
        "source_version": weights_version(source),
        "export_dir": MetadataValue.path(str(config.export_dir)),
        "source_dir": MetadataValue.path(str(source)),
        "held_out_dir": MetadataValue.path(str(splits.held_out_dir)),
    }
    return MaterializeResult(metadata=metadata, data_version=DataVersion(version))


@dataclass(frozen=True)
class Candidate:
    export_dir: Path
    version: str
    perplexity: float  # on its held-out blocks
    source_dir: Path
    source_version: str
    source_perplexity: float  # the source's, on the same blocks
    held_out_dir: Path


def latest_candidate(instance: DagsterInstance) -> Candidate:
    metadata = latest_metadata(instance, generator_checkpoint.key)
    return Candidate(
        export_dir=Path(str(metadata["export_dir"].value)),
        version=str(metadata["version"].value),
        perplexity=float(metadata["held_out_perplexity"].value),  # type: ignore[arg-type]
        source_dir=Path(str(metadata["source_dir"].value)),
        source_version=str(metadata["source_version"].value),
        source_perplexity=float(metadata["source_held_out_perplexity"].value),  # type: ignore[arg-type]
        held_out_dir=Path(str(metadata["held_out_dir"].value)),
    )
