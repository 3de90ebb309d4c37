"""Run by the benchmark inside the peers' venv: one step of lemon24/reader on a database.

python reader_round.py DB add URLS_FILE     subscribe (not timed by the benchmark)
python reader_round.py DB update WORKERS    one update_feeds() round
python reader_round.py DB count             print the number of stored entries
"""

import sys

from reader import make_reader

db, step = sys.argv[1], sys.argv[2]
reader = make_reader(db)
if step == "add":
    with open(sys.argv[3]) as f:
        urls = f.read().split()
    for url in urls:
        reader.add_feed(url, exist_ok=True)
elif step == "update":
    # scheduled=False: fetch every feed each round, as the other tools do (by default reader
    # skips feeds updated within the last hour)
    reader.update_feeds(workers=int(sys.argv[3]), scheduled=False)
elif step == "count":
    print(reader.get_entry_counts().total)
reader.close()
