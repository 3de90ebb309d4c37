"""How the clustering score separates same-event from different-event article pairs.

Reads ../shared/data/semeval2022-task8-train-pairs.csv (full articles, Overall 1 = same event ..
4 = different). All texts first go into one Clusterer as separate stories, so token weights come
from the whole set; then each same-language pair is scored with ``Clusterer.pair_score`` (the
later text against a story made of the earlier one), exactly what `aggregator explain` shows.

    python bench/semeval_pairs.py [CSV]
"""

from __future__ import annotations

import csv
import sys
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aggregator.dedup.cluster import Clusterer, Item

DEFAULT = (
    Path(__file__).resolve().parents[2] / "shared" / "data" / "semeval2022-task8-train-pairs.csv"
)
T = datetime(2020, 1, 1, tzinfo=UTC)


def item(i: int, text: str) -> Item:
    title, _, body = text.partition("  ")  # the files put the headline before a double space
    return Item(i, "s", None, title, body, T)


def main() -> None:
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT
    csv.field_size_limit(10**9)
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    c = Clusterer()
    for k, r in enumerate(rows):
        c.add(item(2 * k, r["text1"]), story_id=10**7 + 2 * k)
        c.add(item(2 * k + 1, r["text2"]), story_id=10**7 + 2 * k + 1)
    scored = [
        (c.pair_score(item(0, r["text1"]), item(1, r["text2"]))[0], float(r["Overall"]))
        for r in rows
        if r["lang1"] == r["lang2"]
    ]
    same = [s for s, o in scored if o <= 2.0]
    diff = [s for s, o in scored if o >= 3.0]
    auc = sum((a > b) + 0.5 * (a == b) for a in same for b in diff) / (len(same) * len(diff))
    print(
        f"pairs {len(rows)}, same-language {len(scored)}: same event (Overall <= 2) {len(same)}, "
        f"different (>= 3) {len(diff)}; ROC AUC {auc:.3f}"
    )
    for th in (0.1, 0.15, c.s.threshold, 0.3, 0.4):
        tp = sum(s >= th for s in same) / len(same)
        fp = sum(s >= th for s in diff) / len(diff)
        mark = "  <- default threshold" if th == c.s.threshold else ""
        print(
            f"  threshold {th:.2f}: same-event pairs merged {tp:.2f}, different-event pairs merged {fp:.2f}{mark}"
        )


if __name__ == "__main__":
    main()
