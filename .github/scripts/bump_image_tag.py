#!/usr/bin/env python3
"""Reads or rewrites the image tag of a GitOps environment's images.yaml
(deploy/cluster/gitops/environments/<env>/images.yaml), keeping everything else byte for byte:

    # The image tag this environment runs: ...
    kb-platform:
      image:
        tag: "0.1.0"

Only the one ``tag:`` line changes; comments, indentation and a comment after the value stay.
Refuses a tag that is not a valid OCI tag and a file without exactly one tag line.
Standard library only: it runs on a bare GitHub runner (release.yml, promote.yml).

Usage:
    bump_image_tag.py get FILE          prints the file's tag
    bump_image_tag.py set FILE TAG      writes TAG into the file's tag line
    bump_image_tag.py check TAG         exits 0 when TAG is a valid OCI tag
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import tempfile
from pathlib import Path

LOG = logging.getLogger("bump_image_tag")

# The OCI distribution spec's tag grammar.
OCI_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
# A line whose key is `tag` (a comment line never matches: its first non-blank is `#`).
TAG_KEY = re.compile(r"^[ \t]*tag[ \t]*:")
# indent, `tag:`, the value (double-, single- or unquoted), then blanks and an optional comment
TAG_LINE = re.compile(
    r"^(?P<head>[ \t]*tag[ \t]*:[ \t]*)"
    r"(?P<value>\"[^\"\n]*\"|'[^'\n]*'|[^\s#\"']*)"
    r"(?P<tail>[ \t]*(?:#[^\n]*)?)$"
)


class RefusedError(Exception):
    """The tag or the file is not one this script may write (or read)."""


def check_tag(tag: str) -> str:
    if OCI_TAG.fullmatch(tag) is None:
        raise RefusedError(f"{tag!r} is not a valid OCI tag ([A-Za-z0-9_][A-Za-z0-9._-]{{0,127}})")
    return tag


def _tag_line(lines: list[str], path: Path) -> tuple[int, re.Match[str]]:
    """The index of the file's only tag line and its match; refuses none or several."""
    found = [i for i, line in enumerate(lines) if TAG_KEY.match(line)]
    if len(found) != 1:
        where = ", ".join(str(i + 1) for i in found) or "none"
        raise RefusedError(f"{path}: expected exactly one tag line, found {len(found)} ({where})")
    index = found[0]
    match = TAG_LINE.match(lines[index].rstrip("\r\n"))
    if match is None:
        raise RefusedError(f"{path}:{index + 1}: cannot read the tag line {lines[index]!r}")
    return index, match


def _read_lines(path: Path) -> list[str]:
    try:
        with path.open(encoding="utf-8", newline="") as text:  # line endings as they are
            return text.read().splitlines(keepends=True)
    except OSError as exc:
        raise RefusedError(f"cannot read {path}: {exc.strerror}") from exc


def get_tag(path: Path) -> str:
    _, match = _tag_line(_read_lines(path), path)
    value = match["value"]
    if value[:1] in ('"', "'"):
        value = value[1:-1]
    return check_tag(value)


def set_tag(path: Path, tag: str) -> bool:
    """Writes ``tag`` into the file's tag line (atomically); False when it was there already."""
    check_tag(tag)
    lines = _read_lines(path)
    index, match = _tag_line(lines, path)
    line = lines[index]
    ending = line[len(line.rstrip("\r\n")) :]
    updated = f'{match["head"]}"{tag}"{match["tail"]}{ending}'
    if updated == line:
        return False
    lines[index] = updated
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as out:
            out.write("".join(lines))
        os.chmod(tmp, path.stat().st_mode & 0o777)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return True


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    get = commands.add_parser("get", help="print the file's tag")
    get.add_argument("file", type=Path)
    put = commands.add_parser("set", help="write TAG into the file's tag line")
    put.add_argument("file", type=Path)
    put.add_argument("tag")
    check = commands.add_parser("check", help="exit 0 when TAG is a valid OCI tag")
    check.add_argument("tag")
    args = parser.parse_args(argv)
    try:
        if args.command == "get":
            sys.stdout.write(get_tag(args.file) + "\n")
        elif args.command == "set":
            changed = set_tag(args.file, args.tag)
            LOG.info("%s: tag %s%s", args.file, args.tag, "" if changed else " (unchanged)")
        else:
            check_tag(args.tag)
    except RefusedError as exc:
        LOG.error("refused: %s", exc)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
