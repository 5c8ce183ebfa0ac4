"""Shared test data shapes and readers of a job's checkpoint and Delta logs."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa

# The `ticks` Delta table (jobs/tables.py TICKS) as an Arrow schema, for writing fixtures with deltalake.
TICKS_ARROW = pa.schema(
    [
        pa.field("symbol", pa.string(), False),
        pa.field("event_time", pa.timestamp("us", tz="UTC"), False),
        pa.field("close", pa.float64(), False),
        pa.field("volume", pa.int64(), False),
        pa.field("message_format", pa.string(), False),
        pa.field("topic", pa.string(), False),
        pa.field("partition", pa.int32(), False),
        pa.field("offset", pa.int64(), False),
        pa.field("ingest_time", pa.timestamp("us", tz="UTC"), False),
        pa.field("event_date", pa.date32(), False),
    ]
)


def write_ticks(root: Path, rows: list[tuple[str, datetime, float, int]]) -> None:
    """Append (symbol, event_time, close, volume) rows to the Delta `ticks` table under `root` (deltalake)."""
    from deltalake import write_deltalake

    ingested = datetime(2026, 1, 1, tzinfo=UTC)
    table = pa.Table.from_pylist(
        [
            {
                "symbol": symbol,
                "event_time": at,
                "close": close,
                "volume": volume,
                "message_format": "v1",
                "topic": "stock-ticks",
                "partition": 0,
                "offset": offset,
                "ingest_time": ingested,
                "event_date": at.date(),
            }
            for offset, (symbol, at, close, volume) in enumerate(rows)
        ],
        schema=TICKS_ARROW,
    )
    write_deltalake(str(root / "ticks"), table, partition_by=["event_date"], mode="append")


def json_ticks(
    first_step: int,
    steps: int,
    symbols: int = 10,
    prefix: str = "SYM",
    start: datetime = datetime(2026, 11, 24, 9, tzinfo=UTC),
) -> list[tuple[str, str]]:
    """(key, v1 JSON) Kafka records: `symbols` symbols, one tick each every 30 s from step `first_step` on."""
    records = []
    for step in range(first_step, first_step + steps):
        for index in range(symbols):
            symbol = f"{prefix}{index + 1:03d}"
            body = {
                "v": 1,
                "symbol": symbol,
                "ts": (start + timedelta(seconds=30 * step)).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
                "close": round(50 + (step * 7 + index) % 13 + step / 100, 2),
                "volume": 100 + (step * 11 + index) % 17,
            }
            records.append((symbol, json.dumps(body)))
    return records


def batch_ids(folder: Path) -> set[int]:
    """The micro-batch ids in a checkpoint's `offsets/` or `commits/` folder."""
    return {int(path.name) for path in folder.glob("[0-9]*")} if folder.exists() else set()


def delta_commits(table: Path) -> list[list[dict]]:
    """A Delta table's commits in version order, each as its list of actions."""
    files = sorted((table / "_delta_log").glob("*.json")) if table.exists() else []
    return [[json.loads(line) for line in path.read_text().splitlines() if line] for path in files]


def appended_at(table: Path) -> dict[int, int]:
    """Batch id (the `txn` version of an idempotent append) -> the timestamp (ms) of the commit that wrote it."""
    appended = {}
    for actions in delta_commits(table):
        versions = [int(action["txn"]["version"]) for action in actions if "txn" in action]
        stamps = [action["commitInfo"]["timestamp"] for action in actions if "commitInfo" in action]
        for version in versions:
            appended[version] = stamps[0] if stamps else 0
    return appended


def unreachable_s3_settings() -> list[str]:
    """`--set` options for tables in S3 at an endpoint where nothing listens (a free local port)."""
    from jobs.devstack.services import free_port

    settings = [
        "storage.root=s3a://no-such-bucket/delta",
        f"s3.endpoint=http://127.0.0.1:{free_port()}",
        "s3.path_style_access=true",
        "s3.use_test_credentials=true",
    ]
    return [option for setting in settings for option in ("--set", setting)]


def assert_one_plain_error_line(err: str, start: str, cause: str) -> None:
    """stderr is exactly one line, starting with `start`, naming `cause`, with no colour codes or `↳` chain marks."""
    (line,) = err.splitlines()
    assert line.startswith(start) and cause in line, line
    assert "\x1b" not in line and "↳" not in line
