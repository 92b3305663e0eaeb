"""The Dagster code location: every concern's definitions plus the resources of this environment."""

from __future__ import annotations

from importlib import import_module

from dagster import Definitions, in_process_executor

from kb_platform.config import get_settings
from kb_platform.defs import CONCERNS
from kb_platform.resources import build_resources


def build_definitions() -> Definitions:
    settings = get_settings()
    concern_defs = [import_module(f"kb_platform.defs.{name}").defs for name in CONCERNS]
    # A run is one document: its steps run one after another in the run's process (no
    # process per step, whose start-up would cost more than most steps). Untrusted parsing
    # is isolated per call (kb_platform.isolation), not per step.
    shared = Definitions(resources=build_resources(settings), executor=in_process_executor)
    return Definitions.merge(*concern_defs, shared)


defs = build_definitions()
