"""Robustness check for `aggregator eval`: the same labeled file with every timestamp moved by
a random offset of up to +-MINUTES (default 30), then evaluated with the real pipeline.

On the UCI sample each story's timestamps sit within about a minute of each other and the file
runs story by story, so a method that leaned on seconds-level time order would fall apart here.

    python bench/jitter_eval.py ../shared/data/uci-news-aggregator-sample.jsonl [MINUTES]
"""

from __future__ import annotations

import json
import random
import sys
import tempfile
from datetime import datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aggregator.config import Settings
from aggregator.evaluate import evaluate_file, report_text


def main() -> None:
    src = Path(sys.argv[1])
    minutes = float(sys.argv[2]) if len(sys.argv) > 2 else 30.0
    rng = random.Random(11)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "jittered.jsonl"
        with src.open(encoding="utf-8") as f, out.open("w", encoding="utf-8") as g:
            for line in f:
                r = json.loads(line)
                if r.get("published"):
                    t = datetime.fromisoformat(r["published"].replace("Z", "+00:00"))
                    t += timedelta(seconds=rng.uniform(-60 * minutes, 60 * minutes))
                    r["published"] = t.isoformat()
                g.write(json.dumps(r) + "\n")
        report = evaluate_file(out, Settings())
    report["file"] = f"{src} with timestamps moved by up to +-{minutes:g} min"
    print(report_text(report))


if __name__ == "__main__":
    main()
