"""``promoted_generator_checkpoint``: a candidate that passed the gate becomes the generator the
RAG service loads (the newest model-store version of the generator's name)."""

from dagster import (
    AssetExecutionContext,
    DataVersion,
    MaterializeResult,
    MetadataValue,
    asset,
)

from kb_platform.defs.generator.generator_checkpoint import generator_checkpoint, latest_candidate
from kb_platform.resources.generator_training import GeneratorTrainingResource
from kb_platform.training.generator_promotion import PromotedGenerator, store_export


@asset(
    deps=[generator_checkpoint],
    group_name="generator_training",
    kinds={"bentoml"},
    description="The answer generator in use. Materialized only after the gate passed: the "
    "export is stored as the newest version of the generator in the BentoML model store (what "
    "the RAG service loads at its next start) and promoted.json points at it (what the next "
    "fine-tune starts from).",
)
def promoted_generator_checkpoint(
    context: AssetExecutionContext, generator_training: GeneratorTrainingResource
) -> MaterializeResult:
    candidate = latest_candidate(context.instance)
    tag = store_export(
        candidate.export_dir,
        generator_training.model_name,
        labels={"source": "generator_checkpoint", "version": candidate.version},
        metadata={
            "version": candidate.version,
            "source_version": candidate.source_version,
            "held_out_perplexity": candidate.perplexity,
            "source_held_out_perplexity": candidate.source_perplexity,
            "dagster_run_id": context.run.run_id,
        },
    )
    promoted = generator_training.promote(
        PromotedGenerator(
            version=candidate.version,
            export_dir=str(candidate.export_dir),
            held_out_perplexity=candidate.perplexity,
            source_version=candidate.source_version,
            store_tag=tag,
        )
    )
    context.log.info("promoted %s as %s", promoted.version, tag)
    return MaterializeResult(
        metadata={
            "version": promoted.version,
            "store_tag": tag,
            "export_dir": MetadataValue.path(promoted.export_dir),
            "held_out_perplexity": MetadataValue.float(promoted.held_out_perplexity),
            "source_version": promoted.source_version,
        },
        data_version=DataVersion(promoted.version),
    )
