"""Runs great-expectations suites over small tables in memory (ephemeral context)."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import pandas as pd

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExpectationOutcome:
    name: str
    success: bool
    observed: Any


@lru_cache(maxsize=1)
def _batch_definition() -> Any:
    # great_expectations takes ~7 s to import: only checks pay for it, once per process.
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    asset = context.data_sources.add_pandas("kb_frames").add_dataframe_asset("frame")
    return asset.add_batch_definition_whole_dataframe("whole")


def validate(frame: pd.DataFrame, expectations: list[Any]) -> list[ExpectationOutcome]:
    """Validates each expectation (a ``gx.expectations.*`` instance) against the frame."""
    batch = _batch_definition().get_batch(batch_parameters={"dataframe": frame})
    outcomes = []
    for expectation in expectations:
        result = batch.validate(expectation)
        observed = result.result.get("observed_value", result.result.get("unexpected_count"))
        outcomes.append(
            ExpectationOutcome(type(expectation).__name__, bool(result.success), observed)
        )
    return outcomes


def expectations_module() -> Any:
    _batch_definition()
    import great_expectations as gx

    return gx.expectations
