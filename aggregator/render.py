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


HIT_START, HIT_END = "\x02", "\x03"  # search matches inside a snippet


def _plain(v):
    if isinstance(v, str) and HIT_START in v:
        return v.replace(HIT_START, "**").replace(HIT_END, "**")
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


def explanation_dict(e) -> dict:
    w = e.why
    return {
        "first": {
            "entry_id": e.first.entry_id,
            "title": e.first.title,
            "published": _plain(e.first.published),
        },
        "second": {
            "entry_id": e.second.entry_id,
            "title": e.second.title,
            "published": _plain(e.second.published),
        },
        "score": round(e.score, 4),
        "threshold": e.threshold,
        "would_merge": e.would_merge,
        "coverage": round(w.coverage, 4),
        "core": round(w.core, 4),
        "title_ratio": round(e.title_ratio, 1),
        "different_years": w.different_years,
        "different_figures": w.different_figures,
        "hours_apart": round(e.hours_apart, 2),
        "shared_tokens": [{"token": t, "weight": v} for t, v in e.shared],
        "only_first": list(e.only_first),
        "only_second": list(e.only_second),
    }


def explanation_text(e) -> str:
    d = explanation_dict(e)
    verdict = "WOULD be merged" if e.would_merge else "would NOT be merged"
    lines = [
        f"[{d['first']['entry_id']}] {d['first']['title']}",
        f"[{d['second']['entry_id']}] {d['second']['title']}",
        "",
        f"score {d['score']:.3f} vs threshold {d['threshold']}: {verdict}",
        f"  coverage  {d['coverage']:.3f}  share of the second entry's weight found in the first",
        f"  core      {d['core']:.3f}  share of the first entry's words found in the second",
        f"  title     {d['title_ratio']:.0f}% alike (rapidfuzz ratio)",
        f"  time      {d['hours_apart']:.1f} h apart",
    ]
    if d["different_years"]:
        lines.append("  penalty   they name different years")
    if d["different_figures"]:
        lines.append("  penalty   they name different figures")
    shared = ", ".join(f"{s['token']} ({s['weight']})" for s in d["shared_tokens"]) or "none"
    lines.append(f"  shared    {shared}")
    lines.append(f"  only in first:  {', '.join(d['only_first']) or '-'}")
    lines.append(f"  only in second: {', '.join(d['only_second']) or '-'}")
    return "\n".join(lines)


def _highlight(text: str):
    """Text with search matches (between HIT_START and HIT_END) in bold."""
    from rich.text import Text

    out = Text()
    bold = False
    for part in text.replace(HIT_END, HIT_START).split(HIT_START):
        out.append(part, style="bold yellow" if bold else None)
        bold = not bold
    return out


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
        # Text, not str: feed-supplied text is shown as is, never read as rich markup
        table.add_row(*(_highlight(_cell(r.get(c))) for c in cols))
    console = Console(file=out, soft_wrap=False, width=None if out.isatty() else 160)
    if rows:
        console.print(table)
    else:
        console.print("(nothing to show)")
