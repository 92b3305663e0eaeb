"""The Dagster code location: every concern's definitions plus the resources of this environment."""

from __future__ import annotations

from importlib import import_module
from typing import Any

from dagster import Definitions, in_process_executor

from kb_platform.config import get_settings
from kb_platform.defs import CONCERNS
from kb_platform.resources import build_resources
from kb_platform.resources.clip_encoder import ClipEncoderResource
from kb_platform.resources.generator_training import generator_training_for
from kb_platform.resources.text_encoder import TextEncoderResource
from kb_platform.resources.training_cluster import TrainingClusterResource


def build_definitions(resources: dict[str, Any] | None = None) -> Definitions:
    """Every concern with the environment's resources, or with ``resources`` instead (tests
    and benchmarks that bring their own topics, index family and storage)."""
    concern_defs = [import_module(f"kb_platform.defs.{name}").defs for name in CONCERNS]
    if resources is not None:  # the models in process unless the caller brings the services
        resources = {
            "text_encoder": TextEncoderResource(),
            "clip_encoder": ClipEncoderResource(),
            "generator_training": generator_training_for(get_settings()),
            "training_cluster": TrainingClusterResource(),
            **resources,
        }
    # A run is one document: its steps run one after another in the run's process (no
    # process per step, whose start-up would cost more than most steps). Untrusted parsing
    # is isolated per call (kb_platform.isolation), not per step.
    shared = Definitions(
        resources=resources if resources is not None else build_resources(get_settings()),
        executor=in_process_executor,
    )
    return Definitions.merge(*concern_defs, shared)


defs = build_definitions()
