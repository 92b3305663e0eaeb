"""English text analysis done in our code: lowercase, stopwords, Porter stems.

The local Elasticsearch node has no analysis-common module (no english analyzer, no stemmer
filters; see deploy/local/elasticsearch), so chunks carry a ``search_text`` field of already
analyzed tokens that the server only splits on whitespace. The same function analyzes queries,
so both sides always match, on any Elasticsearch.
"""

from __future__ import annotations

import re
from functools import lru_cache

import Stemmer

# Lucene's English stop set (EnglishAnalyzer.ENGLISH_STOP_WORDS_SET).
STOPWORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "but",
        "by",
        "for",
        "if",
        "in",
        "into",
        "is",
        "it",
        "no",
        "not",
        "of",
        "on",
        "or",
        "such",
        "that",
        "the",
        "their",
        "then",
        "there",
        "these",
        "they",
        "this",
        "to",
        "was",
        "will",
        "with",
    ]
)
_TOKEN = re.compile(r"[^\W_]+", re.UNICODE)


@lru_cache(maxsize=1)
def _stemmer() -> Stemmer.Stemmer:
    return Stemmer.Stemmer("porter")


def analyze(text: str) -> str:
    tokens = [t for t in _TOKEN.findall(text.lower()) if t not in STOPWORDS]
    return " ".join(_stemmer().stemWords(tokens))


def embedding_input(title: str, text: str) -> str:
    """What a chunk's vector is computed from: its text headed by its document's title, so a
    chunk cut from the middle of a document still says what the document is about."""
    return f"{title}\n{text}" if title else text
