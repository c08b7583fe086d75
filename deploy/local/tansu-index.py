"""Adds the index Tansu 0.6's sqlite engine lacks.

Tansu fetches each record's headers with a query that joins `header` on
(topition, offset_id), a table it creates without an index: every fetched record
scans every stored header, so fetching slows as the log grows and a broker holding a
few hundred thousand records spends its time in sqlite (docs/benchmarks.md). This
adds the index; sqlite's planner then looks headers up by key. Idempotent. Waits (up
to 30 s) for Tansu to create its tables.

Usage: python3 tansu-index.py /path/to/tansu.db
"""

import sqlite3
import sys
import time

path = sys.argv[1]
deadline = time.time() + 30
while True:
    try:
        with sqlite3.connect(path, timeout=30) as db:
            found = db.execute(
                "select 1 from sqlite_master where type = 'table' and name = 'header'"
            ).fetchone()
            if found:
                db.execute(
                    "create index if not exists header_topition_offset_id"
                    " on header (topition, offset_id)"
                )
                break
    except sqlite3.Error as e:
        if time.time() > deadline:
            sys.exit(f"tansu-index: {path}: {e}")
    if time.time() > deadline:
        sys.exit(f"tansu-index: no header table in {path} within 30 s")
    time.sleep(0.2)
