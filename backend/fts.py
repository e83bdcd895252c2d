"""Turn free text into an FTS5 MATCH expression that cannot be a syntax error.

Each word becomes a double-quoted FTS5 string, so operators (AND, NEAR, ``*``, ``:``,
``^``, parentheses, quotes) in user input are only ever matched as text. Words are
OR-ed: bm25 ranks documents matching more of them first.
"""

from __future__ import annotations

import re

_WORD = re.compile(r"\w+", re.UNICODE)


def match_expression(query: str) -> str | None:
    words = _WORD.findall(query)
    if not words:
        return None
    return " OR ".join(f'"{word}"' for word in words)


def similarity(bm25: float) -> float:
    """Map SQLite's bm25 (lower is better, usually negative) onto [0, 1)."""
    relevance = max(-bm25, 0.0)
    return relevance / (1.0 + relevance)
