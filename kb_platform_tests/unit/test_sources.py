from pathlib import Path

import pytest

from kb_platform.contracts import IngestMessage, Modality
from kb_platform.errors import EmptyInput, InvalidMessage, TooLarge
from kb_platform.sources import read_content, resolve_file_uri


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "doc.txt").write_text("hello")
    (tmp_path / "secret.txt").write_text("secret")
    return tmp_path / "root"


def _message(uri: str) -> IngestMessage:
    return IngestMessage(source_id="s", uri=uri, modality=Modality.TEXT)


def test_reads_a_file_inside_the_root(root: Path) -> None:
    message = _message((root / "doc.txt").as_uri())
    assert read_content(message, allowed_roots=[root], max_bytes=100) == b"hello"


def test_dot_dot_is_refused(root: Path) -> None:
    with pytest.raises(InvalidMessage, match=r"'\.\.'"):
        resolve_file_uri(f"file://{root}/../secret.txt", [root])


def test_symlink_out_of_the_root_is_refused(root: Path) -> None:
    (root / "link.txt").symlink_to(root.parent / "secret.txt")
    with pytest.raises(InvalidMessage, match="outside the allowed roots"):
        resolve_file_uri((root / "link.txt").as_uri(), [root])


def test_file_outside_every_root_is_refused(root: Path) -> None:
    with pytest.raises(InvalidMessage, match="outside"):
        resolve_file_uri((root.parent / "secret.txt").as_uri(), [root])


def test_remote_file_host_is_refused(root: Path) -> None:
    with pytest.raises(InvalidMessage, match="not a local file"):
        resolve_file_uri("file://evil.example/etc/passwd", [root])


def test_too_large_and_empty_are_typed(root: Path) -> None:
    with pytest.raises(TooLarge):
        read_content(_message((root / "doc.txt").as_uri()), allowed_roots=[root], max_bytes=3)
    (root / "empty.txt").write_bytes(b"")
    with pytest.raises(EmptyInput):
        read_content(_message((root / "empty.txt").as_uri()), allowed_roots=[root], max_bytes=10)
