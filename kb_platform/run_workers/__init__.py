"""Warm run workers: Dagster runs executed by processes that loaded the code location already.

Dagster's default launcher starts a fresh Python process per run (``spawn``), which imports
Dagster, the code location (torch included) and great-expectations before the first step:
about 30 s of a 2-core machine per document. ``WarmRunLauncher`` hands each run to one of a
few long-lived worker processes that did that once, so a run starts in milliseconds while
keeping one run (and one partition) per document.
"""
