"""Every alert of deploy/prometheus/rules has its runbook: docs/runbooks/<alert>.md, named by the
rule's runbook_url, with the sections Symptom, Dashboard, Diagnosis, Fix and Escalation (in that
order, none empty), the rule's severity, and a Dashboard section naming dashboards and panels
that exist in deploy/grafana/dashboards. Each check is shown rejecting a broken runbook."""

from __future__ import annotations

import json
import re

import pytest
import yaml

from kb_platform.config import REPO_ROOT
from kb_platform_tests.docs.markdown import DOCS, sections

RULES = REPO_ROOT / "deploy" / "prometheus" / "rules"
DASHBOARDS = REPO_ROOT / "deploy" / "grafana" / "dashboards"
RUNBOOKS = DOCS / "runbooks"
REQUIRED = ("Symptom", "Dashboard", "Diagnosis", "Fix", "Escalation")
_DASHBOARD_LINK = re.compile(r"\[([^\]]+)\]\(([^)]*deploy/grafana/dashboards/[^)]+\.json)\)")


def alerts() -> dict[str, dict]:
    found = {}
    for path in sorted(RULES.glob("*.yml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                if "alert" in rule:
                    found[rule["alert"]] = rule
    return found


def dashboards() -> dict[str, tuple[str, set[str]]]:
    """file name -> (title, panel titles)."""
    found = {}
    for path in DASHBOARDS.glob("*.json"):
        board = json.loads(path.read_text())
        panels = {p["title"] for p in board.get("panels", [])}
        panels |= {p["title"] for row in board.get("panels", []) for p in row.get("panels", [])}
        found[path.name] = (board["title"], panels)
    return found


def problems(alert: str, rule: dict, text: str | None) -> list[str]:
    """What is wrong with one alert's runbook, given its text (None: no file), as it would be in
    docs/runbooks/ (its relative links resolve from there). Nothing wrong: an empty list."""
    found = []
    expected_url = f"docs/runbooks/{alert}.md"
    if rule["annotations"].get("runbook_url") != expected_url:
        found.append(
            f"runbook_url is {rule['annotations'].get('runbook_url')!r}, not {expected_url}"
        )
    if text is None:
        return [*found, f"{expected_url} does not exist"]
    if not text.startswith(f"# {alert}\n"):
        found.append(f"its title is not '# {alert}'")
    severity = rule["labels"]["severity"]
    if f"Severity: **{severity}**" not in text:
        found.append(f"it does not say 'Severity: **{severity}**' as the rule does")
    parts = sections(text)
    headings = [h for h in parts if h in REQUIRED]
    for name in REQUIRED:
        if name not in parts:
            found.append(f"no '## {name}' section")
        elif not parts[name].strip():
            found.append(f"'## {name}' is empty")
    if headings != [h for h in REQUIRED if h in parts]:
        found.append(f"sections out of order: {headings}, expected {list(REQUIRED)}")
    found += dashboard_problems(parts.get("Dashboard", ""))
    return found


def runbook_text(alert: str) -> str | None:
    path = RUNBOOKS / f"{alert}.md"
    return path.read_text() if path.is_file() else None


def dashboard_problems(section: str) -> list[str]:
    """The Dashboard section links at least one dashboard; each link's text is that dashboard's
    title, and each "quoted" title on its line is a panel of it."""
    boards = dashboards()
    found = []
    linked = 0
    for line in section.splitlines():
        for title, target in _DASHBOARD_LINK.findall(line):
            linked += 1
            path = (RUNBOOKS / target).resolve()
            if path.parent != DASHBOARDS.resolve() or path.name not in boards:
                found.append(f"no dashboard {target}")
                continue
            board_title, panels = boards[path.name]
            if title != board_title:
                found.append(f"{path.name} is titled {board_title!r}, not {title!r}")
            named = re.findall(r'"([^"]+)"', line)
            if not named:
                found.append(f"no panel of {path.name} named on: {line.strip()}")
            found += [f"{path.name} has no panel {p!r}" for p in named if p not in panels]
    if not linked:
        found.append("the Dashboard section links no dashboard of deploy/grafana/dashboards")
    return found


@pytest.mark.parametrize("alert", sorted(alerts()))
def test_every_alert_has_a_complete_runbook(alert: str) -> None:
    assert problems(alert, alerts()[alert], runbook_text(alert)) == []


def test_every_runbook_is_an_alerts_and_the_index_lists_them_all() -> None:
    names = set(alerts())
    files = {p.stem for p in RUNBOOKS.glob("*.md")} - {"README"}
    assert files == names, "runbooks without an alert or alerts without a runbook"
    index = (RUNBOOKS / "README.md").read_text()
    for name in names:
        assert f"[{name}.md]({name}.md)" in index, name
    for heading in ("How an alert reaches someone", "When to escalate", "Incident notes"):
        assert heading in sections(index), heading


def test_the_index_states_the_routes_of_alertmanager_yml() -> None:
    config = yaml.safe_load((REPO_ROOT / "deploy" / "prometheus" / "alertmanager.yml").read_text())
    index = (RUNBOOKS / "README.md").read_text()
    route = config["route"]
    for key in ("group_wait", "group_interval", "repeat_interval"):
        assert f"`{key}: {route[key]}`" in index, key
    receivers = {r["name"]: r for r in config["receivers"]}
    assert f"`{route['receiver']}`" in index
    for child in route["routes"]:
        assert f"`{child['receiver']}`" in index
    assert receivers["slack"]["slack_configs"][0]["channel"] in index
    group_by = ", ".join(f"`{label}`" for label in route["group_by"][:-1])
    assert f"grouped by {group_by} and `{route['group_by'][-1]}`" in index
    for rule in config["inhibit_rules"]:
        source = rule["source_matchers"][0].split('"')[1]
        assert f"while `{source}` fires" in index


def test_a_runbook_missing_a_section_or_naming_a_missing_panel_is_rejected() -> None:
    alert = "KbConsumerLagHigh"
    rule = alerts()[alert]
    good = runbook_text(alert)
    assert good is not None
    assert problems(alert, rule, good) == []

    def broken(text: str, broken_rule: dict = rule) -> list[str]:
        return problems(alert, broken_rule, text)

    assert "no '## Escalation' section" in broken(good[: good.index("## Escalation")])
    assert "'## Fix' is empty" in broken(
        re.sub(r"## Fix\n.*?(?=## Escalation)", "## Fix\n\n", good, flags=re.S)
    )
    swapped = good.replace("## Fix", "## TEMP").replace("## Diagnosis", "## Fix")
    assert any("out of order" in p for p in broken(swapped.replace("## TEMP", "## Diagnosis")))
    assert "it does not say 'Severity: **critical**' as the rule does" in broken(
        good.replace("Severity: **critical**", "Severity: **warning**")
    )
    wrong_panel = good.replace('"Documents per second"', '"Documents per minute"')
    assert "kb-ingestion.json has no panel 'Documents per minute'" in broken(wrong_panel)
    wrong_title = good.replace("[kb-platform: ingestion]", "[kb-platform: ingest]", 1)
    assert any("is titled 'kb-platform: ingestion'" in p for p in broken(wrong_title))
    wrong_file = good.replace("dashboards/kb-ingestion.json", "dashboards/kb-ingest.json", 1)
    assert any("no dashboard" in p for p in broken(wrong_file))
    no_link = re.sub(
        r"## Dashboard\n.*?(?=## Diagnosis)", "## Dashboard\n\nGrafana.\n\n", good, flags=re.S
    )
    assert any("links no dashboard" in p for p in broken(no_link))
    elsewhere = {**rule, "annotations": {**rule["annotations"], "runbook_url": "http://wiki/x"}}
    assert any("runbook_url is 'http://wiki/x'" in p for p in broken(good, elsewhere))
    assert any("does not exist" in p for p in problems(alert, rule, None))
