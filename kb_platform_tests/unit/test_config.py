import pytest

from kb_platform.config import Environment, Settings


def test_defaults_are_local_loopback() -> None:
    settings = Settings()
    assert settings.env is Environment.LOCAL
    assert settings.kafka_bootstrap_servers == "127.0.0.1:9092"
    assert settings.elasticsearch_url == "http://127.0.0.1:9200"


def test_environment_variables_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KB_ENV", "prod")
    monkeypatch.setenv("KB_KAFKA_BOOTSTRAP_SERVERS", "kafka-0:9092,kafka-1:9092")
    settings = Settings()
    assert settings.env is Environment.PROD
    assert settings.kafka_bootstrap_servers == "kafka-0:9092,kafka-1:9092"


def test_unknown_environment_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KB_ENV", "staging")
    with pytest.raises(ValueError, match="env"):
        Settings()
