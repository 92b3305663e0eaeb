import pytest

from kb_platform.ocr.quality import character_error_rate, normalize_whitespace


def test_identical_texts_have_no_errors() -> None:
    assert character_error_rate("The quick\nbrown  fox", "The quick brown fox") == 0.0


def test_one_substitution_in_ten_characters() -> None:
    assert character_error_rate("abcdefghiX", "abcdefghij") == pytest.approx(0.1)


def test_missing_text_is_all_errors() -> None:
    assert character_error_rate("", "hello") == 1.0


def test_empty_reference() -> None:
    assert character_error_rate("", "  ") == 0.0
    assert character_error_rate("noise", "") == 1.0


def test_whitespace_is_collapsed() -> None:
    assert normalize_whitespace("  a\n\n b\tc ") == "a b c"
