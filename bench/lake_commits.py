"""Lake commit latency as a table grows: many micro-batch commits to one Iceberg table, with
snapshot expiry as maintenance, on the embedded (SQLite + local folder) catalog.

Prints one JSON object. ``p99_last100 / p99_first100`` is the ratio to watch (goal <= 2): with
metadata cleanup, manifest merging and regular expiry a commit should not get slower as the table
ages.

    python bench/lake_commits.py [--commits 500] [--rows 200] [--expire-every 50]
                                 [--retain-last 10] [--compact-every 0] [--keep DIR]

A commit's latency is the sink's ``flush()``: rows mapped, the data file written, the manifest,
manifest list and metadata file written and the catalog updated. Maintenance runs between
commits and is timed apart. Event times advance 2.6 s per record, so the table spans about three
days (three partitions). Each batch is built just before its commit and dropped after, as a
consumer would: holding all of them inflates Python's garbage-collection pauses as the run goes.

p99 is the nearest-rank 99th percentile of 100 commits (the second slowest). ``max_ms`` shows the
commit that merges manifests (every ~100 commits with the default
``commit.manifest.min-count-to-merge``), whose cost grows with the number of live data files
until compaction (``--compact-every``) bounds them.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyiceberg
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from refluent.embedded.services import lake_catalog
from refluent.lake import maintenance as lm
from refluent.lake.mappings import RawEventsTable
from refluent.observability import stats
from refluent.sinks.base import SinkRecord
from refluent.sinks.iceberg import IcebergSink
from refluent.streams.contracts import LogEvent

err = Console(stderr=True)
T0 = datetime(2024, 3, 1, tzinfo=UTC)


def batch(commit: int, rows: int) -> list[SinkRecord[Any]]:
    """``rows`` log events of one commit, spread over 3 partitions of one topic."""
    out = []
    for j in range(rows):
        i = commit * rows + j
        event = LogEvent(source="app", ts=T0 + timedelta(seconds=2.6 * i), message=f"event {i}",
                         level="info" if i % 10 else "warning", entity_id=f"u{i % 1000}",
                         attributes={"i": i, "path": f"/p/{i % 50}"})
        out.append(SinkRecord("logs.app", i % 3, i // 3, f"u{i % 1000}".encode(), event))
    return out


def summary(latencies: list[float]) -> dict[str, float]:
    """p50 / p99 / mean / max in milliseconds."""
    return stats.summary(latencies, digits=2)


def run(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    """Make the commits; returns the result object."""
    (root / "warehouse").mkdir(parents=True, exist_ok=True)
    catalog = lake_catalog(f"sqlite:///{root / 'catalog.db'}", (root / "warehouse").as_uri())
    sink = IcebergSink(catalog, RawEventsTable(), "bench_raw", namespace="bench",
                       max_records=args.rows, max_seconds=3600)
    sink.setup()
    latencies: list[float] = []
    maintenance: list[float] = []
    expired = deleted = compacted = 0
    progress = Progress(TextColumn("[bold]commits"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), TextColumn("{task.fields[last]}"), console=err,
                        transient=True)
    with progress:
        task = progress.add_task("commits", total=args.commits, last="")
        for c in range(1, args.commits + 1):
            # Built here, outside the timing, and dropped after: a consumer holds one batch.
            records = batch(c - 1, args.rows)
            sink.write(records[:-1])
            started = time.perf_counter()
            sink.write(records[-1:])  # fills the micro-batch: write_batch + commit
            latencies.append(time.perf_counter() - started)
            if args.expire_every and c % args.expire_every == 0:
                t = time.perf_counter()
                if args.compact_every and c % args.compact_every == 0:
                    compacted += lm.compact(sink.table, target_file_rows=100_000).files_removed
                result = lm.expire_snapshots(sink.table, older_than=timedelta(0),
                                             retain_last=args.retain_last)
                expired += result.expired_snapshots
                deleted += result.deleted_files
                maintenance.append(time.perf_counter() - t)
            progress.update(task, advance=1, last=f"{latencies[-1] * 1000:.0f} ms")
    table = sink.table
    table.refresh()
    head = table.current_snapshot()
    assert head is not None
    manifests = head.manifests(table.io)
    n = min(100, len(latencies))
    first, last = summary(latencies[:n]), summary(latencies[-n:])
    rows = int(head.summary.get("total-records") or 0) if head.summary else 0
    return {
        "commits": args.commits,
        "rows_per_commit": args.rows,
        "rows_in_table": rows,
        "expected_rows": args.commits * args.rows,
        "first100": first,
        "last100": last,
        "all": summary(latencies),
        "p99_ratio_last_over_first": round(last["p99_ms"] / first["p99_ms"], 3),
        "goal_p99_ratio_le_2": last["p99_ms"] <= 2 * first["p99_ms"],
        "maintenance": {"every_commits": args.expire_every, "retain_last": args.retain_last,
                        "runs": len(maintenance), "expired_snapshots": expired,
                        "deleted_files": deleted, "compacted_files": compacted,
                        **({"run_p50_ms": round(stats.quantile(maintenance, 0.5) * 1000, 1),
                            "run_max_ms": round(max(maintenance) * 1000, 1)}
                           if maintenance else {})},
        "end_state": {"snapshots": len(table.metadata.snapshots),
                      "metadata_log": len(table.metadata.metadata_log),
                      "manifests_in_head": len(manifests),
                      "data_files": int(head.summary.get("total-data-files") or 0),
                      "metadata_json_bytes": Path(table.metadata_location.removeprefix(
                          "file://")).stat().st_size},
        "env": {"python": platform.python_version(), "pyiceberg": pyiceberg.__version__,
                "machine": platform.machine()},
    }


def main() -> None:
    """Parse arguments, run, print JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commits", type=int, default=500)
    parser.add_argument("--rows", type=int, default=200, help="rows per commit")
    parser.add_argument("--expire-every", type=int, default=50,
                        help="expire snapshots every N commits (0: never)")
    parser.add_argument("--retain-last", type=int, default=10)
    parser.add_argument("--compact-every", type=int, default=0,
                        help="also compact every N commits (a multiple of --expire-every)")
    parser.add_argument("--keep", type=Path, default=None,
                        help="folder for the catalog and warehouse (kept afterwards)")
    args = parser.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="refluent-lake-bench-"))
    try:
        result = run(args, root)
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
