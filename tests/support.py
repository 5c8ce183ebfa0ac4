"""Shared test data shapes."""

from __future__ import annotations

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
