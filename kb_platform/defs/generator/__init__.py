"""The answer generator fine-tuned on the knowledge base: continued pre-training on every
document's chunks under FSDP through Pipes, a blocking gate against the promoted generator
(held-out perplexity, citation precision on Cranfield), and promotion into the model store the
RAG service loads from."""

from dagster import AssetSelection, Definitions, define_asset_job

from kb_platform.config import get_settings
from kb_platform.defs.generator.gate import generator_checkpoint_beats_promoted
from kb_platform.defs.generator.generator_checkpoint import generator_checkpoint
from kb_platform.defs.generator.promoted import promoted_generator_checkpoint
from kb_platform.resources.training_cluster import training_run_tags

train_generator = define_asset_job(
    "train_generator",
    selection=AssetSelection.assets(generator_checkpoint, promoted_generator_checkpoint),
    description="Fine-tune the answer generator; promote it only if the gate passes.",
    tags=training_run_tags(get_settings()),
)

defs = Definitions(
    assets=[generator_checkpoint, promoted_generator_checkpoint],
    asset_checks=[generator_checkpoint_beats_promoted],
    jobs=[train_generator],
)
