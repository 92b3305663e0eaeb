"""``generator_checkpoint_beats_promoted``: the blocking gate between a generator candidate and
the model that answers now."""

import math
from pathlib import Path

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetCheckSeverity,
    Failure,
    MetadataValue,
    asset_check,
)

from kb_platform.defs.generator.citations import citation_questions, measure
from kb_platform.defs.generator.generator_checkpoint import generator_checkpoint, latest_candidate
from kb_platform.evaluation.answer_quality import CitationTally
from kb_platform.index.mapping import IndexNames
from kb_platform.resources.elasticsearch import ElasticsearchResource
from kb_platform.resources.generator_training import GeneratorTrainingResource
from kb_platform.resources.text_encoder import TextEncoderResource
from kb_platform.training.generator_promotion import generator_gate, perplexity


def citation_precisions(
    generator_training: GeneratorTrainingResource,
    elasticsearch: ElasticsearchResource,
    text_encoder: TextEncoderResource,
    models: dict[str, Path],
) -> dict[str, CitationTally]:
    """Each model's tally on the resource's fixed Cranfield questions."""
    folder = Path(generator_training.citation_corpus_dir)
    if not (folder / "cran.qry").is_file():
        raise Failure(
            f"no Cranfield collection at {folder} for the generator's citation gate (set "
            "citation_corpus_dir, or citation_questions to 0 to turn that part off)",
            allow_retries=False,
        )
    asked = citation_questions(
        elasticsearch.client,
        text_encoder,
        folder,
        IndexNames(generator_training.citation_index_base),
        count=generator_training.citation_questions,
        k=generator_training.citation_sources,
        index_docs=generator_training.citation_index_docs,
    )
    return {who: measure(model_dir, asked) for who, model_dir in models.items()}


@asset_check(
    asset=generator_checkpoint,
    blocking=True,
    description="Held-out perplexity no worse than the promoted generator's (or the base "
    "model's) on the candidate's held-out documents, within the resource's tolerance; then, "
    "unless citation_questions is 0, citation precision on fixed Cranfield questions no lower "
    "than theirs (within its tolerance). A failure blocks promotion.",
)
def generator_checkpoint_beats_promoted(
    context: AssetCheckExecutionContext,
    generator_training: GeneratorTrainingResource,
    elasticsearch: ElasticsearchResource,
    text_encoder: TextEncoderResource,
) -> AssetCheckResult:
    candidate = latest_candidate(context.instance)
    current = generator_training.promoted()
    baseline_dir = Path(current.export_dir) if current else generator_training.base_model()
    if baseline_dir == candidate.source_dir:  # measured on these blocks when it was trained
        baseline_perplexity = candidate.source_perplexity
    else:  # another candidate was promoted since: measure that one on the same blocks
        baseline_perplexity = perplexity(
            baseline_dir, candidate.held_out_dir, generator_training.eval_blocks
        )
    metadata: dict[str, MetadataValue] = {
        "candidate_perplexity": MetadataValue.float(candidate.perplexity),
        "baseline_perplexity": MetadataValue.float(baseline_perplexity),
        "baseline": MetadataValue.text(current.version if current else f"base: {baseline_dir}"),
    }
    tolerance = generator_training.max_perplexity_increase
    verdict = generator_gate(candidate.perplexity, baseline_perplexity, tolerance)
    # Answering questions takes minutes with the real generator: only when it can matter.
    if verdict.passed and generator_training.citation_questions > 0:
        tallies = citation_precisions(
            generator_training,
            elasticsearch,
            text_encoder,
            {"candidate": candidate.export_dir, "baseline": baseline_dir},
        )
        for who, tally in tallies.items():
            precision = tally.precision if tally.precision is not None else math.nan
            metadata[f"{who}_citation_precision"] = MetadataValue.float(precision)
            metadata[f"{who}_answers_citing"] = MetadataValue.int(tally.answers_citing)
        metadata["citation_questions"] = MetadataValue.int(tallies["candidate"].asked)
        verdict = generator_gate(
            candidate.perplexity,
            baseline_perplexity,
            tolerance,
            tallies["candidate"].precision,
            tallies["baseline"].precision,
            generator_training.max_citation_precision_drop,
        )
    context.log.info(
        "generator gate: %s (%s)", "passed" if verdict.passed else "failed", verdict.reason
    )
    return AssetCheckResult(
        passed=verdict.passed,
        severity=AssetCheckSeverity.ERROR,
        description=verdict.reason,
        metadata=metadata,
    )
