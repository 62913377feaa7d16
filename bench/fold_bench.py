"""The projection's fold alone: a job history applied to a fresh DuckDB file, no NATS.

    python bench/fold_bench.py LABEL      # from a checkout's root, PYTHONPATH=$PWD

105,888 events of ``tests/projector_proc.history(15000)``, applied in batches of 20,000,
best of 2. Runs against older checkouts too (it finds the projection under its old
module path), so two trees can be compared on one machine in alternation.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path.cwd() / "tests"))

from bus import StoredMessage  # noqa: E402
from events import encode, subject_for  # noqa: E402
from projector_proc import history  # noqa: E402

try:
    from central.readmodel.projection import EVENTS_STREAM, Projection
except ImportError:  # a checkout before central's sub-packages
    from central.projection import EVENTS_STREAM, Projection


def main(label: str) -> None:
    events = history(jobs=15000)
    msgs = [StoredMessage(i, subject_for(e), encode(e), {}, 1_700_000_000_000_000_000 + i)
            for i, e in enumerate(events, 1)]
    best = 0.0
    for _ in range(2):
        projection = Projection(Path(tempfile.mkdtemp()) / "p.duckdb")
        started = time.perf_counter()
        for start in range(0, len(msgs), 20000):
            projection.apply(EVENTS_STREAM, msgs[start:start + 20000])
        best = max(best, len(msgs) / (time.perf_counter() - started))
        projection.close()
    print(f"{label}: {len(msgs)} events, best {best:,.0f} events/s")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "this tree")
