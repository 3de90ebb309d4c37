"""Generate N labeled news entries (the `aggregator eval` JSONL format) for clustering benchmarks.

Stories have Zipf-like sizes; each story has a few rare "event" words (names, places) and every
title mixes some of them with common words drawn from a Zipf distribution, so that token
statistics resemble real headlines. Entries arrive over ``days`` in time order.

Event words are made of ``name_syllables`` syllables (28 ** 4 = 614,656 possible names by
default). With 3 syllables (21,952 names, the generator's first version) the "rare" words of
different stories collide: 100,000 entries make ~23,000 stories drawing ~69,000 names, so a
name is shared by ~3 unrelated stories, unlike real names and places. ``--name-syllables 3``
reproduces that harder, less realistic case.

    python bench/gen_entries.py 100000 > /tmp/entries.jsonl
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from datetime import UTC, datetime, timedelta

SYLLABLES = [
    "ka",
    "lo",
    "mi",
    "ren",
    "tas",
    "vor",
    "bel",
    "chi",
    "dun",
    "fa",
    "gor",
    "hil",
    "ix",
    "jun",
    "kez",
    "lum",
    "nar",
    "ob",
    "pel",
    "quo",
    "rus",
    "sev",
    "tor",
    "ul",
    "vin",
    "wex",
    "yas",
    "zor",
]


def word(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(SYLLABLES) for _ in range(n))


def generate(n: int, days: float, seed: int, out, name_syllables: int = 4) -> None:
    rng = random.Random(seed)
    common = [word(rng, rng.randint(1, 3)) for _ in range(20_000)]
    weights = [1 / (i + 1) ** 1.05 for i in range(len(common))]
    start = datetime(2026, 1, 1, tzinfo=UTC)
    span = days * 86400
    made = 0
    story = 0
    sources = [f"outlet-{i}" for i in range(2000)]
    pending = []
    while made < n:
        size = min(n - made, max(1, int(rng.paretovariate(1.3))))
        story += 1
        event = [word(rng, name_syllables).capitalize() for _ in range(rng.randint(2, 4))]
        t0 = rng.uniform(0, span)
        for _ in range(size):
            k = rng.randint(1, len(event))
            title_words = rng.sample(event, k) + rng.choices(common, weights, k=rng.randint(5, 9))
            rng.shuffle(title_words)
            pending.append((t0 + rng.expovariate(1 / 3600), story, " ".join(title_words)))
        made += size
    pending.sort()
    for i, (t, label, title) in enumerate(pending):
        rec = {
            "id": str(i),
            "title": title,
            "summary": "",
            "url": f"https://{rng.choice(sources)}.example/{i}",
            "source": rng.choice(sources),
            "published": (start + timedelta(seconds=t)).isoformat().replace("+00:00", "Z"),
            "label": str(label),
        }
        out.write(json.dumps(rec) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("n", type=int)
    ap.add_argument("--days", type=float, default=None, help="time span (default: n / 30000 days)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--name-syllables", type=int, default=4, help="syllables per event word")
    args = ap.parse_args()
    generate(
        args.n, args.days or max(1.0, args.n / 30_000), args.seed, sys.stdout, args.name_syllables
    )


if __name__ == "__main__":
    main()
