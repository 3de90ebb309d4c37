"""`aggregator eval`: labeled entries through the real pipeline, scored.

Input: JSONL, one {"id", "title", "summary", "url", "source", "published", "label"} per line
(summary, url, source and published may be empty or null). The entries are normalized like
fetched ones, stored in a fresh temporary SQLite store (one feed per source) and clustered by the
same ClusteringStage that `aggregator update` and the daemon use, in published order (file order
where there is no date). The stories found are compared with the labels.
"""

from __future__ import annotations

import json
import resource
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from .clustering import ClusteringStage
from .config import Settings
from .dedup import cluster, metrics
from .errors import AggregatorError
from .models import RawEntry
from .normalize import normalize_entry
from .store import SQLiteStore


class EvalError(AggregatorError):
    pass


def _date(value, line: int) -> datetime | None:
    if value in (None, ""):
        return None
    if not isinstance(value, str):
        raise EvalError(f"line {line}: 'published' must be an ISO 8601 string or null")
    try:
        dt = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise EvalError(f"line {line}: 'published' {value!r} is not an ISO 8601 date") from None
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def read_labeled(path: Path) -> list[dict]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise EvalError(f"cannot read {path}: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise EvalError(f"{path} is not UTF-8 text") from None
    rows = []
    seen: set[str] = set()
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError as e:
            raise EvalError(f"{path}:{n}: not a JSON object ({e})") from None
        if not isinstance(obj, dict):
            raise EvalError(f"{path}:{n}: not a JSON object")
        for key in ("id", "title", "label"):
            if obj.get(key) in (None, ""):
                raise EvalError(f"{path}:{n}: missing {key!r}")
        rid = str(obj["id"])
        if rid in seen:
            raise EvalError(f"{path}:{n}: duplicate id {rid!r}")
        seen.add(rid)
        rows.append(
            {
                "id": rid,
                "title": str(obj["title"]),
                "summary": str(obj.get("summary") or ""),
                "url": obj.get("url") or None,
                "source": str(obj.get("source") or "(unknown source)"),
                "published": _date(obj.get("published"), n),
                "label": str(obj["label"]),
                "line": n,
            }
        )
    if not rows:
        raise EvalError(f"{path} holds no entries")
    return rows


def _order(rows: list[dict]) -> list[dict]:
    """Published order; an undated entry takes the date of the dated entry before it in the file."""
    first = next((r["published"] for r in rows if r["published"]), datetime(2000, 1, 1, tzinfo=UTC))
    last = first
    for r in rows:
        if r["published"] is None:
            r["published"] = last
        last = r["published"]
    return sorted(rows, key=lambda r: (r["published"], r["line"]))


def evaluate_rows(rows: list[dict], settings: Settings) -> tuple[dict, dict[str, int]]:
    rows = _order(rows)
    now = max(r["published"] for r in rows)
    with tempfile.TemporaryDirectory(prefix="aggregator-eval-") as tmp:
        store = SQLiteStore(Path(tmp) / "eval.sqlite")
        try:
            t0 = time.perf_counter()
            feeds: dict[str, int] = {}
            entries = []
            for r in rows:
                if r["source"] not in feeds:
                    url = f"https://eval.invalid/source/{len(feeds) + 1}"
                    feeds[r["source"]] = store.add_feed(url, r["source"], now).id
                fid = feeds[r["source"]]
                raw = RawEntry(
                    guid=r["id"],
                    link=r["url"],
                    title=r["title"],
                    summary_html=r["summary"],
                    content_html=None,
                    author=None,
                    published=r["published"],
                    updated=None,
                )
                entries.append(normalize_entry(raw, fid, None, now))
            store.add_entries(entries, now)  # in clustering order, so ids break time ties
            stored = time.perf_counter() - t0
            summary = ClusteringStage(settings.cluster).run(store, now)
            story_of = {
                key[2:]: sid for key, sid in store.db.execute("SELECT key, story_id FROM entries")
            }
        finally:
            store.close()
    gold = [r["label"] for r in rows]
    pred = [story_of[r["id"]] for r in rows]
    pp, pr, pf = metrics.pairwise(gold, pred)
    bp, br, bf = metrics.bcubed(gold, pred)
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    report = {
        "entries": len(rows),
        "gold_stories": len(set(gold)),
        "predicted_stories": len(set(pred)),
        "pairwise": {"precision": pp, "recall": pr, "f1": pf},
        "bcubed": {"precision": bp, "recall": br, "f1": bf},
        "nmi": metrics.nmi(gold, pred),
        "ari": metrics.ari(gold, pred),
        "store_seconds": stored,
        "cluster_seconds": summary.seconds,
        "entries_per_second": len(rows) / summary.seconds if summary.seconds else None,
        "clusterer": cluster.IMPLEMENTATION,
        "peak_memory_mb": peak_kb / 1024 if sys.platform != "darwin" else peak_kb / 1024 / 1024,
    }
    return report, story_of


def evaluate_file(path: Path, settings: Settings, assignments: Path | None = None) -> dict:
    rows = read_labeled(path)
    report, story_of = evaluate_rows(rows, settings)
    report["file"] = str(path)
    if assignments is not None:
        try:
            with assignments.open("w", encoding="utf-8") as out:
                for r in rows:
                    out.write(json.dumps({"id": r["id"], "story": story_of[r["id"]]}) + "\n")
        except OSError as e:
            raise EvalError(f"cannot write {assignments}: {e.strerror or e}") from None
    return report


def _prf(m: dict) -> str:
    return f"precision {m['precision']:.4f}  recall {m['recall']:.4f}  F1 {m['f1']:.4f}"


def report_text(r: dict) -> str:
    p, b = r["pairwise"], r["bcubed"]
    eps = r["entries_per_second"]
    return "\n".join(
        [
            f"file               {r.get('file', '-')}",
            f"entries            {r['entries']}",
            f"gold stories       {r['gold_stories']}",
            f"predicted stories  {r['predicted_stories']}",
            f"pairwise           {_prf(p)}",
            f"B-cubed            {_prf(b)}",
            f"NMI                {r['nmi']:.4f}",
            f"ARI                {r['ari']:.4f}",
            f"speed              {eps:,.0f} entries/s clustering ({r['cluster_seconds']:.2f} s); "
            f"store {r['store_seconds']:.2f} s; {r['clusterer']} clusterer"
            if eps
            else "speed              -",
            f"peak memory        {r['peak_memory_mb']:.0f} MB (process RSS)",
        ]
    )
