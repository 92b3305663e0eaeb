import base64

import pytest

from kb_platform.contracts import MAX_INLINE_BYTES, IngestMessage, Modality, compute_doc_id
from kb_platform.errors import InvalidMessage


def test_doc_id_is_first_16_hex_of_sha256() -> None:
    assert compute_doc_id(b"abc") == "ba7816bf8f01cfea"


def test_parses_inline_message() -> None:
    raw = '{"source_id": "s1", "content_b64": "aGk=", "modality": "text"}'
    message = IngestMessage.parse(raw)
    assert message.modality is Modality.TEXT
    assert message.inline_content() == b"hi"


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b'{"source_id": "s", "modality": "text"}',  # no content
        b'{"source_id": "s", "uri": "file:///x", "content_b64": "aGk=", "modality": "text"}',
        b'{"source_id": "s", "uri": "http://169.254.169.254/", "modality": "document"}',
        b'{"source_id": "s", "uri": "file:///x", "modality": "video"}',
        b'{"source_id": "s", "uri": "file:///x", "modality": "text", "extra": 1}',
    ],
)
def test_invalid_messages_raise_one_typed_error(raw: bytes) -> None:
    with pytest.raises(InvalidMessage):
        IngestMessage.parse(raw)


def test_inline_content_over_one_mebibyte_is_refused() -> None:
    content = base64.b64encode(b"x" * (MAX_INLINE_BYTES + 10)).decode()
    with pytest.raises(InvalidMessage, match="inline content"):
        IngestMessage.parse(
            f'{{"source_id": "s", "content_b64": "{content}", "modality": "text"}}'.encode()
        )


def test_bad_base64_is_typed() -> None:
    message = IngestMessage(source_id="s", content_b64="!!!", modality=Modality.TEXT)
    with pytest.raises(InvalidMessage, match="base64"):
        message.inline_content()
