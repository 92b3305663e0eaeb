"""CLIP: training pairs per document, FSDP training through Pipes with a promotion gate, and the
roll-out of a promoted checkpoint into every document's image embeddings and the index."""

from dagster import AssetSelection, Definitions, define_asset_job

from kb_platform.defs.clip.clip_checkpoint import (
    clip_checkpoint,
    clip_checkpoint_beats_promoted,
    promoted_clip_checkpoint,
)
from kb_platform.defs.clip.clip_pairs import clip_pairs
from kb_platform.defs.clip.rollout_sensor import clip_rollout, reembed_images, roll_index_version

train_clip = define_asset_job(
    "train_clip",
    selection=AssetSelection.assets(clip_checkpoint, promoted_clip_checkpoint),
    description="Train a checkpoint; promote it only if the held-out recall gate passes.",
)

defs = Definitions(
    assets=[clip_pairs, clip_checkpoint, promoted_clip_checkpoint],
    asset_checks=[clip_checkpoint_beats_promoted],
    jobs=[train_clip, reembed_images, roll_index_version],
    sensors=[clip_rollout],
)
