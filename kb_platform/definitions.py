"""The Dagster code location: every concern's definitions plus the resources of this environment."""

from __future__ import annotations

from importlib import import_module

from dagster import Definitions

from kb_platform.config import get_settings
from kb_platform.defs import CONCERNS
from kb_platform.resources import build_resources


def build_definitions() -> Definitions:
    settings = get_settings()
    concern_defs = [import_module(f"kb_platform.defs.{name}").defs for name in CONCERNS]
    return Definitions.merge(*concern_defs, Definitions(resources=build_resources(settings)))


defs = build_definitions()
