"""Reading the project's Markdown: which files, their fenced blocks, code spans, sections and
links (no Markdown library: the few constructs the docs checks need, as CommonMark has them)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from kb_platform.config import REPO_ROOT

DOCS = REPO_ROOT / "docs"
_FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})\s*([\w+-]*)[^`]*$")
_SPAN = re.compile(r"(?<!`)(`+)(?!`)(.+?)(?<!`)\1(?!`)")
_LINK = re.compile(r"(?<!!)\[([^\]]*)\]\(([^)\s]+)\)")


def doc_files() -> list[Path]:
    """README.md and every Markdown file under docs/."""
    return [REPO_ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]


@dataclass(frozen=True)
class Block:
    lang: str
    line: int  # of the opening fence, 1-based
    text: str
    closed: bool


def fenced_blocks(text: str) -> list[Block]:
    lines = text.splitlines()
    blocks = []
    i = 0
    while i < len(lines):
        match = _FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        indent, fence, lang = match.groups()
        close = re.compile(rf"^\s*{re.escape(fence[0])}{{{len(fence)},}}\s*$")
        body = []
        j = i + 1
        while j < len(lines) and not close.match(lines[j]):
            line = lines[j]
            body.append(line[len(indent) :] if line.startswith(indent) else line.lstrip())
            j += 1
        blocks.append(Block(lang, i + 1, "\n".join(body), j < len(lines)))
        i = j + 1
    return blocks


def prose(text: str) -> str:
    """The text outside fenced blocks (fences blanked, line numbers kept)."""
    lines = text.splitlines()
    for block in fenced_blocks(text):
        end = block.line + block.text.count("\n") + 1
        for k in range(block.line - 1, min(end + 1, len(lines))):
            lines[k] = ""
    return "\n".join(lines)


def code_spans(text: str) -> list[str]:
    """Inline code of the prose, joined across line breaks as Markdown renders it."""
    paragraphs = re.split(r"\n\s*\n", prose(text))
    spans = []
    for paragraph in paragraphs:
        joined = " ".join(line.strip() for line in paragraph.splitlines())
        spans += [m.group(2).strip() for m in _SPAN.finditer(joined)]
    return spans


def sections(text: str, level: int = 2) -> dict[str, str]:
    """Heading text -> body, for headings of ``level`` (fenced blocks do not count)."""
    marker = "#" * level + " "
    found: dict[str, list[str]] = {}
    current: list[str] | None = None
    in_fence = _in_fence_lines(text)
    for number, line in enumerate(text.splitlines()):
        if not in_fence[number] and line.startswith(marker):
            current = found.setdefault(line[len(marker) :].strip(), [])
        elif not in_fence[number] and re.match(rf"^#{{1,{level}}} ", line):
            current = None
        elif current is not None:
            current.append(line)
    return {heading: "\n".join(body).strip() for heading, body in found.items()}


def _in_fence_lines(text: str) -> list[bool]:
    flags = [False] * len(text.splitlines())
    for block in fenced_blocks(text):
        end = block.line + block.text.count("\n") + 1
        for k in range(block.line - 1, min(end + 1, len(flags))):
            flags[k] = True
    return flags


def links(text: str) -> list[tuple[str, str]]:
    """(text, target) of each inline link in the prose."""
    return [(m.group(1), m.group(2)) for m in _LINK.finditer(prose(text))]
