"""Shared test data shapes."""

from __future__ import annotations

from datetime import UTC, datetime
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
