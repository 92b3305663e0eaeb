from kb_platform.errors import Corrupt, KbError, ServiceUnavailable, Timeout


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
