"""The commands, queries and links in the docs are real: every `kb-platform`, `dagster` and
`dagster-daemon` command names existing subcommands, options and choices (checked against
their click definitions), every sensor a `dagster sensor` command names exists, every Kafka tool
class is in the kafka-tools jar the local broker uses and takes the options given to it, every
GraphQL query sent to Dagster validates against Dagster's schema, and every relative link leads
to a file (and heading) that exists. Each check is shown rejecting a broken case."""

from __future__ import annotations

import ast
import functools
import json
import os
import re
import shlex
import subprocess
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import click
import pytest

from kb_platform.config import REPO_ROOT
from kb_platform_tests.docs.markdown import code_spans, doc_files, fenced_blocks, links, prose

SHELL_LANGS = {"", "bash", "sh", "shell", "console"}
_SEPARATOR = re.compile(r"\s(?:\|\||&&|\||;)\s|\s#\s.*$")
_KAFKA_CLASS = re.compile(r"org\.apache\.kafka\.[\w.]+")
_GRAPHQL = re.compile(r"""-d\s+'(\{"query":.*?\})'""")
_KAFKA_DIR = re.compile(r"kafka-(\d+\.\d+\.\d+)/")
PLACEHOLDER = re.compile(r"^[A-Z][A-Z0-9_]*(\.\.\.)?$|^\.\.\.$|^\$")


@dataclass(frozen=True)
class Command:
    where: str  # file:line
    program: str  # kb-platform, dagster, dagster-daemon, a Kafka class
    args: tuple[str, ...]


# --- finding commands ---------------------------------------------------------------------------


def _shell_lines(text: str) -> Iterator[tuple[int, str]]:
    """(line, command text) of the shell blocks (continuations joined) and the code spans."""
    for block in fenced_blocks(text):
        if block.lang not in SHELL_LANGS:
            continue
        pending, start = "", 0
        for offset, line in enumerate(block.text.splitlines()):
            if not pending:
                start = block.line + 1 + offset
            if line.rstrip().endswith("\\"):
                pending += line.rstrip()[:-1] + " "
                continue
            yield start, pending + line
            pending = ""
    spans = code_spans(text)
    for span in spans:
        yield 0, span


def _segments(line: str) -> Iterator[list[str]]:
    for part in _SEPARATOR.split(line):
        try:
            tokens = shlex.split(part, comments=True)
        except ValueError:
            continue  # prose in a code span, an unbalanced quote: not a command to check
        cut = next((i for i, t in enumerate(tokens) if re.match(r"^\d?>|^<|^\)$", t)), None)
        yield tokens[:cut]


def commands(text: str, name: str) -> list[Command]:
    found = []
    for line, command_text in _shell_lines(text):
        for tokens in _segments(command_text):
            for i, token in enumerate(tokens):
                program = token.rsplit("/", 1)[-1]
                if program in ("kb-platform", "dagster", "dagster-daemon") and (
                    token == program or token.startswith((".venv/", "$", "/"))
                ):
                    if len(tokens) > i + 1:  # the name alone in prose is no command
                        found.append(Command(f"{name}:{line}", program, tuple(tokens[i + 1 :])))
                    break
                if _KAFKA_CLASS.fullmatch(token):
                    found.append(Command(f"{name}:{line}", token, tuple(tokens[i + 1 :])))
                    break
    return found


def all_commands() -> list[Command]:
    found = []
    for path in doc_files():
        found += commands(path.read_text(), path.relative_to(REPO_ROOT).as_posix())
    return found


# --- click commands (kb-platform, dagster, dagster-daemon) -----------------------------------


@functools.cache
def clis() -> dict[str, click.Command]:
    from dagster._cli import create_dagster_cli
    from dagster._daemon.cli import create_dagster_daemon_cli

    from kb_platform.cli import main

    return {
        "kb-platform": main,
        "dagster": create_dagster_cli(),
        "dagster-daemon": create_dagster_daemon_cli(),
    }


@functools.cache
def sensor_names() -> frozenset[str]:
    """Sensors defined in kb_platform/defs: functions decorated by a sensor decorator."""
    names = set()
    decorators = {"sensor", "run_status_sensor", "run_failure_sensor", "asset_sensor"}
    for path in (REPO_ROOT / "kb_platform" / "defs").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.FunctionDef):
                continue
            for decorator in node.decorator_list:
                call = decorator if isinstance(decorator, ast.Call) else None
                func = call.func if call else decorator
                if isinstance(func, ast.Name) and func.id in decorators:
                    named = [k.value for k in (call.keywords if call else []) if k.arg == "name"]
                    names.add(
                        named[0].value
                        if named and isinstance(named[0], ast.Constant)
                        else node.name
                    )
    return frozenset(names)


def _alternatives(token: str) -> list[str]:
    return [t for t in token.strip("[]").split("|") if t]


def click_problems(command: Command) -> list[str]:
    """Unknown subcommands, options or choices of a click CLI, as written in the docs."""
    cli = clis()[command.program]
    path = [command.program]
    arguments: list[click.Argument] = []
    position = 0
    problems = []
    tokens = list(command.args)
    i = 0
    while i < len(tokens):
        token = tokens[i]
        i += 1
        if token == "--":
            break
        if token.startswith("-") and token != "-":
            option = token.split("=", 1)[0]
            param = next((p for p in cli.params if option in (*p.opts, *p.secondary_opts)), None)
            if param is None:
                problems.append(f"{' '.join(path)}: no option {option}")
            elif isinstance(param, click.Option) and not param.is_flag and "=" not in token:
                i += 1  # its value
            continue
        if PLACEHOLDER.match(token):
            position += 1
            continue
        if isinstance(cli, click.Group):
            names = _alternatives(token)
            sub = [cli.get_command(click.Context(cli), n) for n in names]
            missing = [n for n, s in zip(names, sub, strict=True) if s is None]
            if missing:
                problems.append(f"{' '.join(path)}: no command {', '.join(missing)}")
                return problems
            cli = sub[0]
            path.append(names[0])
            arguments = [p for p in cli.params if isinstance(p, click.Argument)]
            position = 0
            continue
        if position >= len(arguments):
            problems.append(f"{' '.join(path)}: unexpected argument {token!r}")
            continue
        argument = arguments[position]
        if isinstance(argument.type, click.Choice):
            bad = [a for a in _alternatives(token) if a not in argument.type.choices]
            if bad:
                problems.append(
                    f"{' '.join(path)}: {', '.join(bad)} not one of {argument.type.choices}"
                )
        names_a_sensor = path[-2:] in (
            ["sensor", n] for n in ("start", "stop", "cursor", "preview")
        )
        if names_a_sensor and argument.name == "sensor_name" and token not in sensor_names():
            problems.append(f"{' '.join(path)}: no sensor {token!r} in kb_platform/defs")
        if argument.nargs != -1:
            position += 1
    return problems


# --- Kafka tools --------------------------------------------------------------------------------


def kafka_version() -> str:
    pom = (REPO_ROOT / "deploy" / "local" / "kafka" / "pom.xml").read_text()
    return re.search(r"<kafka.version>(.*?)</kafka.version>", pom).group(1)


@functools.cache
def kafka_jars() -> Path:
    cache = Path(os.environ.get("KB_CACHE_DIR", Path.home() / ".cache" / "kb-platform"))
    folder = cache / f"kafka-{kafka_version()}"
    if not (folder / f"kafka-tools-{kafka_version()}.jar").is_file():
        pytest.fail(f"no Kafka jars in {folder}: bash deploy/local/kafka/kafka.sh install")
    return folder


@functools.cache
def kafka_help(class_name: str) -> str | None:
    """The tool's --help text, or None when the class is not in the jars."""
    entry = class_name.replace(".", "/") + ".class"
    if not any(entry in zipfile.ZipFile(jar).namelist() for jar in kafka_jars().glob("kafka*.jar")):
        return None
    result = subprocess.run(
        ["java", "-cp", f"{kafka_jars()}/*", class_name, "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return result.stdout + result.stderr


def kafka_problems(command: Command) -> list[str]:
    help_text = kafka_help(command.program)
    if help_text is None:
        return [f"no class {command.program} in the kafka-tools jars"]
    options = set(re.findall(r"(?<![\w-])--[a-z][\w.-]*", help_text))
    return [
        f"{command.program.rsplit('.', 1)[-1]}: no option {t}"
        for t in command.args
        if t.startswith("--") and t.split("=", 1)[0] not in options
    ]


def problems_of(command: Command) -> list[str]:
    if command.program.startswith("org.apache.kafka"):
        return kafka_problems(command)
    return click_problems(command)


# --- GraphQL --------------------------------------------------------------------------------------


@functools.cache
def dagster_schema():
    from dagster_graphql.schema import create_schema

    return create_schema().graphql_schema


def graphql_problems(payload: str) -> list[str]:
    from graphql import parse, validate

    try:
        query = json.loads(payload)["query"]
        return [error.message for error in validate(dagster_schema(), parse(query))]
    except Exception as exc:  # bad JSON or a syntax error are problems too
        return [f"{type(exc).__name__}: {exc}"]


def graphql_payloads(text: str) -> list[str]:
    """The JSON bodies of the docs' requests to a Dagster webserver's /graphql."""
    return [
        q for _, line in _shell_lines(text) if "/graphql" in line for q in _GRAPHQL.findall(line)
    ]


# --- links ----------------------------------------------------------------------------------------


def slugs(text: str) -> set[str]:
    """The anchors of a Markdown file as GitHub makes them, and explicit <a id>s."""
    found = set(re.findall(r'<a id="([^"]+)"', text))
    for line in prose(text).splitlines():
        heading = re.match(r"^#{1,6} (.*)$", line)
        if heading:
            title = re.sub(r"[`*_]|<[^>]+>", "", heading.group(1)).strip().lower()
            found.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return found


def link_problems(path: Path, text: str) -> list[str]:
    problems = []
    for _, target in links(text):
        if re.match(r"^[a-z]+:", target):
            continue  # http:, mailto:
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        if not linked.exists():
            problems.append(f"{target}: no such file")
        elif anchor and linked.suffix == ".md" and anchor not in slugs(linked.read_text()):
            problems.append(f"{target}: no heading #{anchor} in {linked.name}")
    return problems


# --- the tests ------------------------------------------------------------------------------------


def test_the_docs_name_only_real_commands_options_and_sensors() -> None:
    found = all_commands()
    programs = {c.program.rsplit(".", 1)[-1] for c in found}
    assert {"kb-platform", "dagster", "dagster-daemon", "ConsumerGroupCommand"} <= programs
    problems = [f"{c.where}: {p}" for c in found for p in problems_of(c)]
    assert not problems, "\n".join(problems)


def test_the_docs_name_the_local_kafka_version() -> None:
    version = kafka_version()
    for path in doc_files():
        for found in _KAFKA_DIR.findall(path.read_text()):
            assert found == version, f"{path.name} names kafka-{found}, the broker is {version}"


def test_every_graphql_query_in_the_docs_validates_against_dagsters_schema() -> None:
    payloads = [(p, q) for p in doc_files() for q in graphql_payloads(p.read_text())]
    assert payloads
    problems = [f"{path.name}: {q}: {e}" for path, q in payloads for e in graphql_problems(q)]
    assert not problems, "\n".join(problems)


def test_every_relative_link_of_the_docs_resolves() -> None:
    problems = [f"{p.name}: {e}" for p in doc_files() for e in link_problems(p, p.read_text())]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("kb-platform audit --everything", "kb-platform audit: no option --everything"),
        ("kb-platform service status", "kb-platform: no command service"),
        ("kb-platform services restart kafka", "restart not one of"),
        ("kb-platform services up kafka|zookeeper", "zookeeper not one of"),
        ("kb-platform audit extra", "kb-platform audit: unexpected argument 'extra'"),
        ("dagster sensor cursor kafka_sensor --delete", "no sensor 'kafka_sensor'"),
        ("dagster sensor list --workspace-file x.yaml", "dagster sensor list: no option"),
        ("dagster-daemon liveness --help", "dagster-daemon: no command liveness"),
    ],
)
def test_a_wrong_command_is_rejected(line: str, expected: str) -> None:
    (command,) = commands(f"```bash\n{line}\n```\n", "test.md")
    problems = problems_of(command)
    assert any(expected in p for p in problems), problems


def test_correct_commands_pass_and_notation_is_understood() -> None:
    text = (
        "```bash\n"
        "KB_X=1 .venv/bin/kb-platform services up postgres kafka && kb-platform audit --doc D\n"
        "kubectl -n kb exec deploy/kb-platform-exporter -- kb-platform audit | tail -1\n"
        "dagster sensor cursor kafka_ingest_sensor --delete -w workspace.yaml  # reset\n"
        "```\n\n"
        "Use `kb-platform services up|down|status [postgres|kafka]` or `kb-platform` alone.\n"
    )
    found = commands(text, "test.md")
    assert [c.program for c in found] == ["kb-platform"] * 3 + ["dagster", "kb-platform"]
    assert [p for c in found for p in problems_of(c)] == []


def test_a_wrong_kafka_tool_or_option_is_rejected() -> None:
    group = "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand"
    good = Command("t", group, ("--bootstrap-server", "x:9092", "--describe", "--group", "g"))
    assert kafka_problems(good) == []
    assert kafka_problems(Command("t", group, ("--describe-all",))) == [
        "ConsumerGroupCommand: no option --describe-all"
    ]
    missing = "org.apache.kafka.tools.NoSuchTool"
    assert kafka_problems(Command("t", missing, ())) == [
        f"no class {missing} in the kafka-tools jars"
    ]


def test_a_wrong_graphql_query_or_link_is_rejected(tmp_path: Path) -> None:
    good = '{"query": "{ runsOrError(filter: {statuses: [QUEUED]}) { ... on Runs { count } } }"}'
    assert graphql_problems(good) == []
    assert any("runCount" in e for e in graphql_problems(good.replace("{ count }", "{ runCount }")))
    assert any("QUEUEDD" in e for e in graphql_problems(good.replace("QUEUED", "QUEUEDD")))
    (tmp_path / "other.md").write_text("# Other\n\n## Some part\n")
    page = tmp_path / "page.md"
    text = "[a](other.md#some-part) [b](missing.md) [c](other.md#nowhere) [d](https://x.org/y)\n"
    assert link_problems(page, text) == [
        "missing.md: no such file",
        "other.md#nowhere: no heading #nowhere in other.md",
    ]
