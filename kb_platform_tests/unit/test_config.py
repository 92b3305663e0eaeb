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


def test_run_pod_resources_per_modality_become_the_run_launcher_s_tag(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import json

    from kb_platform.contracts import Modality
    from kb_platform.resources.processing import K8S_CONFIG_TAG, ProcessingResource

    resources = {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"memory": "4Gi"}}
    monkeypatch.setenv("KB_RUN_RESOURCES", json.dumps({"document": resources}))
    processing = ProcessingResource.from_settings(Settings())
    tags = processing.run_tags(Modality.DOCUMENT)
    assert json.loads(tags[K8S_CONFIG_TAG]) == {"container_config": {"resources": resources}}
    assert tags["dagster/max_runtime"] == str(180 + 120)
    assert K8S_CONFIG_TAG not in processing.run_tags(Modality.TEXT)  # none configured


@pytest.mark.parametrize(
    "value",
    [
        '{"video": {"requests": {"cpu": "1"}}}',  # no such modality
        '{"document": {"request": {"cpu": "1"}}}',  # a misspelt key is not ignored
        '{"document": {"requests": {"cpu": 1.5}}}',  # quantities as Kubernetes strings
        "not json",
    ],
)
def test_bad_run_pod_resources_are_refused(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("KB_RUN_RESOURCES", value)
    with pytest.raises(ValueError, match="run_resources"):
        Settings()
