"""The alert rules, Prometheus' and Alertmanager's configuration under the real tools: promtool's
rule unit tests (each alert firing and not), its config check, amtool's config check and routing
tree; and each check shown rejecting a broken file."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from kb_platform.config import REPO_ROOT
from kb_platform_tests.prometheus_server import binary

CONFIG = REPO_ROOT / "deploy" / "prometheus"


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=120)


def test_every_alert_fires_and_stays_quiet_as_its_unit_tests_say() -> None:
    result = run(binary("promtool"), "test", "rules", CONFIG / "tests" / "kb-platform.test.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


def test_every_alert_has_a_unit_test_and_a_runbook() -> None:
    import yaml

    rules = yaml.safe_load((CONFIG / "rules" / "kb-platform.yml").read_text())
    alerts = {r["alert"]: r for g in rules["groups"] for r in g["rules"] if "alert" in r}
    tests = yaml.safe_load((CONFIG / "tests" / "kb-platform.test.yml").read_text())
    tested = {case["alertname"] for t in tests["tests"] for case in t["alert_rule_test"]}
    assert set(alerts) == tested
    for name, rule in alerts.items():
        assert rule["labels"]["severity"] in {"critical", "warning"}, name
        assert (REPO_ROOT / rule["annotations"]["runbook_url"]).is_file(), name


def test_a_rule_unit_test_that_expects_the_wrong_thing_fails(tmp_path: Path) -> None:
    broken = (CONFIG / "tests" / "kb-platform.test.yml").read_text()
    broken = broken.replace("- ../rules/kb-platform.yml", "- rules.yml")
    broken = broken.replace("(> 10 s)", "(> 11 s)", 1)
    shutil.copy(CONFIG / "rules" / "kb-platform.yml", tmp_path / "rules.yml")
    (tmp_path / "test.yml").write_text(broken)
    result = run(binary("promtool"), "test", "rules", tmp_path / "test.yml")
    assert result.returncode != 0
    assert "KbConsumerLagHigh" in result.stdout + result.stderr


def test_prometheus_config_and_rules_check(tmp_path: Path) -> None:
    # The services' credential files are made by their scripts (.kb-local/ of a running stack):
    # here the same config reads stand-ins, beside a copy of the rules it loads.
    local = tmp_path / "kb-local"
    for secret in ("encoder/token", "rag/api-key"):
        (local / secret).parent.mkdir(parents=True, exist_ok=True)
        (local / secret).write_text("stand-in\n")
    shutil.copytree(CONFIG / "rules", tmp_path / "rules")
    config = tmp_path / "prometheus.yml"
    text = (CONFIG / "prometheus.yml").read_text()
    config.write_text(text.replace("../../.kb-local", str(local)))
    result = run(binary("promtool"), "check", "config", config)
    assert result.returncode == 0, result.stdout + result.stderr
    broken = tmp_path / "rules.yml"
    broken.write_text(
        (CONFIG / "rules" / "kb-platform.yml")
        .read_text()
        .replace("kb:documents_failed:ratio_rate5m > 0.01", "kb:documents_failed:ratio_rate5m >")
    )
    result = run(binary("promtool"), "check", "rules", broken)
    assert result.returncode != 0
    assert "parse error" in (result.stdout + result.stderr).lower()


@pytest.mark.parametrize("config", ["alertmanager.yml", "alertmanager.local.yml"])
def test_alertmanager_configs_check(config: str, tmp_path: Path) -> None:
    path = tmp_path / config
    path.write_text((CONFIG / config).read_text().replace("KB_ALERT_WEBHOOK_PORT", "9095"))
    result = run(binary("amtool"), "check-config", path)
    assert result.returncode == 0, result.stdout + result.stderr
    path.write_text(path.read_text().replace("receiver: pagerduty", "receiver: nobody"))
    result = run(binary("amtool"), "check-config", path)
    assert result.returncode != 0
    assert "nobody" in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("labels", "receivers"),
    [
        (["severity=critical", "alertname=KbKafkaDown"], "pagerduty,slack"),
        (["severity=warning", "alertname=KbDeadLetterOld"], "slack"),
    ],
)
def test_critical_alerts_page_and_reach_slack_the_rest_only_slack(
    labels: list[str], receivers: str
) -> None:
    result = run(
        binary("amtool"),
        "config",
        "routes",
        "test",
        f"--config.file={CONFIG / 'alertmanager.yml'}",
        f"--verify.receivers={receivers}",
        *labels,
    )
    assert result.returncode == 0, result.stdout + result.stderr
