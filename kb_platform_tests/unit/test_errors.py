from pathlib import Path

import pytest

from kb_platform.errors import Corrupt, KbError, ServiceUnavailable, Timeout, is_outage
from kb_platform.resources.blob_store import LocalBlobStore


def test_error_class_is_the_subclass_name() -> None:
    assert Corrupt("x").error_class == "Corrupt"
    assert Timeout("x").error_class == "Timeout"


def test_input_errors_are_not_retryable_and_service_errors_are() -> None:
    assert not Corrupt("bad xref").retryable
    assert ServiceUnavailable("es down").retryable


def test_message_names_the_document() -> None:
    err = Corrupt("bad xref table", doc_id="0123456789abcdef", source="file:///x.pdf")
    assert isinstance(err, KbError)
    assert "0123456789abcdef" in str(err)
    assert "file:///x.pdf" in str(err)


def test_outages_are_told_from_document_errors_by_class_and_errno() -> None:
    assert is_outage("ServiceUnavailable", "encoder did not answer")
    assert is_outage("DagsterPostgresException", "too many retries for DB connection")
    assert is_outage("OSError", "[Errno 28] No space left on device: '/data/raw/x'")
    assert is_outage("OSError", "[Errno 30] Read-only file system: '/data'")
    # the document's own faults stay dead letters
    assert not is_outage("Corrupt", "bad xref table")
    assert not is_outage("OSError", "[Errno 2] No such file or directory: '/x.pdf'")
    assert not is_outage("ValueError", "No space left in the table of contents")
    assert not is_outage(None, "")


def test_a_failed_write_leaves_no_half_written_file(tmp_path: Path) -> None:
    store = LocalBlobStore(base_dir=str(tmp_path))
    # the write itself fails once the temporary file exists (the fault matrix makes the real
    # ENOSPC on a full tmpfs; here a value the file cannot take stands for it)
    with pytest.raises(TypeError):
        store.put("raw/abc", "not bytes")  # type: ignore[arg-type]
    assert list(tmp_path.rglob("*")) == [tmp_path / "raw"]
