"""The search syntax users type (the one SQLite's FTS5 reads) -> a PostgreSQL tsquery, so that
``aggregator search`` means the same on both stores. Pure.

    word  word*  "a phrase"  a AND b  a OR b  a NOT b  (a OR b) c  title:word  summary:"a b"

Terms next to each other are ANDed; NOT binds tighter than AND, AND tighter than OR, as in FTS5.
"""

from __future__ import annotations

import re

from ..errors import SearchSyntaxError

_TOKEN = re.compile(r'\s*(?:(\w+):)?(?:(")([^"]*)("?)|(\()|(\))|([^\s()"]+))?')
_OPERATORS = {"AND", "OR", "NOT"}
_COLUMNS = {"title": "A", "summary": "D"}  # the tsvector weights the store gives each column


def _fail(query: str, why: str) -> SearchSyntaxError:
    return SearchSyntaxError(
        f"cannot read the search {query!r} ({why}); put phrases in double quotes "
        "and join words with AND, OR or NOT"
    )


def _lexeme(text: str, weight: str = "", prefix: bool = False) -> str:
    quoted = "'" + text.replace("\\", "\\\\").replace("'", "''") + "'"
    label = ("*" if prefix else "") + weight
    return f"{quoted}:{label}" if label else quoted


def _phrase(words: list[str], weight: str, prefix: bool = False) -> str:
    return " <-> ".join(
        _lexeme(w, weight, prefix and i == len(words) - 1) for i, w in enumerate(words)
    )


def _tokens(query: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    while pos < len(query):
        m = _TOKEN.match(query, pos)
        if m is None or m.end() == pos:
            break
        pos = m.end()
        column, quote, text, closed, lpar, rpar, word = m.groups()
        weight = ""
        if column is not None:
            if column not in _COLUMNS:
                raise _fail(query, f"no such column: {column}; use title: or summary:")
            if quote is None and word is None:
                raise _fail(query, f"expected a word or a phrase after {column}:")
            weight = _COLUMNS[column]
        if quote:
            if not closed:
                raise _fail(query, "unterminated phrase")
            words = re.findall(r"\w+", text)
            if words:
                out.append(("term", _phrase(words, weight)))
        elif lpar:
            out.append(("(", "("))
        elif rpar:
            out.append((")", ")"))
        elif word in _OPERATORS and not weight:
            out.append((word, word))
        elif word:
            parts = re.findall(r"\w+", word)
            if parts:  # punctuation alone is not a word, as in FTS5
                out.append(("term", _phrase(parts, weight, prefix=word.endswith("*"))))
    return out


def to_tsquery(query: str) -> str:
    """Raises SearchSyntaxError for what FTS5 would refuse (dangling operators, unbalanced
    parentheses or quotes, nothing to search for)."""
    toks = _tokens(query)
    pos = 0

    def peek() -> str | None:
        return toks[pos][0] if pos < len(toks) else None

    def take() -> tuple[str, str]:
        nonlocal pos
        pos += 1
        return toks[pos - 1]

    def primary() -> str:
        kind = peek()
        if kind == "term":
            return take()[1]
        if kind == "(":
            take()
            inner = or_expr()
            if peek() != ")":
                raise _fail(query, "unbalanced parentheses")
            take()
            return f"({inner})"
        raise _fail(query, f"expected a word, got {kind or 'the end'}")

    def not_expr() -> str:
        left = primary()
        while peek() == "NOT":
            take()
            left = f"({left} & !{primary()})"
        return left

    def and_expr() -> str:
        left = not_expr()
        while peek() in ("AND", "term", "("):
            if peek() == "AND":
                take()
            left = f"{left} & {not_expr()}"
        return left

    def or_expr() -> str:
        left = and_expr()
        while peek() == "OR":
            take()
            left = f"({left} | {and_expr()})"
        return left

    if not toks:
        raise _fail(query, "nothing to search for")
    out = or_expr()
    if pos != len(toks):
        raise _fail(query, f"unexpected {toks[pos][1]}")
    return out
