"""Every file of the shared corpus ends in output or in a typed error: no crash, hang or drop."""

from __future__ import annotations

import collections
import time
from pathlib import Path

import pytest
from dagster import ExecuteInProcessResult

from kb_platform.contracts import Modality
from kb_platform.errors import KbError

TYPED = {cls.__name__ for cls in KbError.__subclasses__()}
# Ground-truth and licence files that sit beside the documents are documents too: ingest them all.
FOLDERS = [
    "documents/unstructured",
    "documents/docling",
    "documents/py-pdf-sample-files",
    "documents/images-pillow",
    "bad-inputs/qpdf",
    "bad-inputs/pillow",
]


def outcome(result: ExecuteInProcessResult) -> str:
    """'ok', or the error class of the failed step ('untyped:<exception>' if not ours)."""
    if result.success:
        return "ok"
    failures = result.get_step_failure_events()
    assert failures, "run failed without a failed step"
    data = failures[0].step_failure_data
    user = data.user_failure_data
    if user is not None and "error_class" in user.metadata:
        return str(user.metadata["error_class"].value)
    return f"untyped:{data.error.cls_name}: {data.error.message[:200]}"


@pytest.mark.parametrize("folder", FOLDERS)
def test_every_file_succeeds_or_fails_typed(
    folder: str, corpus_dir: Path, materialize_file, processing
) -> None:
    files = sorted(p for p in (corpus_dir / folder).rglob("*") if p.is_file())
    assert files
    outcomes: dict[str, list[str]] = collections.defaultdict(list)
    slowest = 0.0
    for path in files:
        started = time.monotonic()
        # An empty file cannot even be admitted: that is the typed error, raised at intake.
        try:
            _, result = materialize_file(path, raise_on_error=False)
        except KbError as exc:
            outcomes[exc.error_class].append(path.name)
            continue
        elapsed = time.monotonic() - started
        slowest = max(slowest, elapsed)
        outcomes[outcome(result)].append(path.name)
        # The worst case is a document's OCR deadline after its extraction deadline.
        assert elapsed < 2 * processing.timeout_s(Modality.IMAGE) + 60, path
    summary = {key: len(names) for key, names in sorted(outcomes.items())}
    print(f"\n{folder}: {summary} (slowest {slowest:.1f}s)")
    for key, names in sorted(outcomes.items()):
        if key != "ok":
            print(f"  {key}: {', '.join(sorted(names))}")
    untyped = {k: v for k, v in outcomes.items() if k != "ok" and k not in TYPED}
    assert not untyped, untyped
    assert sum(summary.values()) == len(files)
