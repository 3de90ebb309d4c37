"""Rendering rows (dicts) as a table, JSON, NDJSON or CSV. Commands return data; this module
alone decides how it looks."""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import IO

FORMATS = ("table", "json", "ndjson", "csv")


def _plain(v):
    if isinstance(v, datetime):
        return v.isoformat().replace("+00:00", "Z")
    if isinstance(v, tuple | list):
        return [_plain(x) for x in v]
    return v


def default_format(stream: IO | None = None) -> str:
    return "table" if (stream or sys.stdout).isatty() else "ndjson"


def _csv_cell(v) -> str:
    if v is None:
        return ""
    if isinstance(v, list | tuple):
        return "; ".join(str(_plain(x)) for x in v)
    return str(_plain(v))


def _cell(v) -> str:
    if v is None:
        return ""
    if isinstance(v, datetime):
        return v.strftime("%Y-%m-%d %H:%M")
    if isinstance(v, list | tuple):
        return ", ".join(str(x) for x in v)
    return str(v)


def render(
    rows: Iterable[dict],
    fmt: str,
    columns: Sequence[str] | None = None,
    out: IO | None = None,
    title: str | None = None,
) -> None:
    out = out or sys.stdout
    if fmt == "json":
        json.dump(
            [{k: _plain(v) for k, v in r.items()} for r in rows], out, ensure_ascii=False, indent=2
        )
        out.write("\n")
    elif fmt == "ndjson":
        for r in rows:
            out.write(json.dumps({k: _plain(v) for k, v in r.items()}, ensure_ascii=False) + "\n")
    elif fmt == "csv":
        rows = list(rows)
        cols = list(columns or (rows[0].keys() if rows else []))
        w = csv.DictWriter(out, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: _csv_cell(r.get(k)) for k in cols})
    elif fmt == "table":
        _table(list(rows), columns, out, title)
    else:  # pragma: no cover - click restricts the choice
        raise ValueError(fmt)


def _table(rows: list[dict], columns: Sequence[str] | None, out: IO, title: str | None) -> None:
    from rich.console import Console
    from rich.table import Table

    cols = list(columns or (rows[0].keys() if rows else []))
    table = Table(title=title, show_lines=False, header_style="bold", expand=False)
    for c in cols:
        table.add_column(
            c,
            overflow="fold",
            max_width=70
            if c in ("title", "summary", "url", "link", "last_error", "sources")
            else None,
        )
    for r in rows:
        table.add_row(*(_cell(r.get(c)) for c in cols))
    console = Console(file=out, soft_wrap=False, width=None if out.isatty() else 160)
    if rows:
        console.print(table)
    else:
        console.print("(nothing to show)")
