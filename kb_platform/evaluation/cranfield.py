"""The Cranfield 1400 test collection: documents, queries and graded judgments."""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

_FIELD = re.compile(r"^\.([ITABW])\s*(.*)$")


@dataclass(frozen=True)
class CranfieldDoc:
    doc_id: str
    title: str
    text: str


def _records(path: Path) -> list[dict[str, str]]:
    records: list[dict[str, str]] = []
    field = None
    for line in path.read_text(encoding="latin-1").splitlines():
        match = _FIELD.match(line)
        if match:
            field, rest = match.groups()
            if field == "I":
                records.append({"I": rest.strip()})
                field = None
            else:
                records[-1][field] = rest
            continue
        if field and records:
            records[-1][field] = f"{records[-1].get(field, '')} {line}".strip()
    return records


def load_documents(folder: Path) -> list[CranfieldDoc]:
    return [
        CranfieldDoc(str(int(r["I"])), r.get("T", "").strip(), r.get("W", "").strip())
        for r in _records(folder / "cran.all.1400")
    ]


def load_queries(folder: Path) -> list[tuple[str, str]]:
    """(query number, text); the n-th query is number n in the judgments (ids skip numbers)."""
    return [
        (str(n), r.get("W", "").strip()) for n, r in enumerate(_records(folder / "cran.qry"), 1)
    ]


def load_judgments(folder: Path) -> dict[str, dict[str, int]]:
    """query -> doc -> gain, with Cleverdon's codes 1 (complete answer) .. 4 (minimum interest)
    as gains 4 .. 1; code -1 (no relevance) is left out."""
    judgments: dict[str, dict[str, int]] = defaultdict(dict)
    for line in (folder / "cranqrel").read_text().splitlines():
        parts = line.split()
        if len(parts) >= 3 and 1 <= int(parts[2]) <= 4:
            judgments[parts[0]][parts[1]] = 5 - int(parts[2])
    return dict(judgments)
