"""Replaying the original system's published Athena output: v_signals, run locally, reproduces it row for row."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
from deltalake import write_deltalake

from jobs.lake.query import run_query
from jobs.pipeline.config import AppConfig
from tests.support import TICKS_ARROW

SOURCE_TIMEZONE = "Asia/Kolkata"


def reference_ticks(reference: pd.DataFrame, source_timezone: str) -> pa.Table:
    """The reference rows as the streaming job stores legacy ticks: Date-Time in the source zone -> UTC."""
    event_time = (
        pd.to_datetime(reference["Date-Time"], format="%Y-%m-%d %H:%M:%S")
        .dt.tz_localize(source_timezone)
        .dt.tz_convert("UTC")
    )
    frame = pd.DataFrame(
        {
            "symbol": reference["symbol"],
            "event_time": event_time,
            "close": reference["Close"].astype("float64"),
            "volume": reference["Volume"].astype("int64"),
            "message_format": "legacy",
            "topic": "stock-ticks",
            "partition": pd.Series(0, index=reference.index, dtype="int32"),
            "offset": pd.Series(range(len(reference)), index=reference.index, dtype="int64"),
            "ingest_time": pd.Timestamp("2026-01-01", tz="UTC"),
            "event_date": event_time.dt.date,
        }
    )
    return pa.Table.from_pandas(frame, schema=TICKS_ARROW, preserve_index=False)


def test_v_signals_reproduces_the_reference_athena_output(reference_csv: Path, make_config) -> None:
    config: AppConfig = make_config()
    reference = pd.read_csv(reference_csv)
    assert len(reference) == 24_000
    write_deltalake(
        config.table_path("ticks"),
        reference_ticks(reference, config.stream.source_timezone),
        partition_by=["event_date"],
    )

    actual = run_query(config, "SELECT symbol, event_time, close, volume, sma_short, sma_long, signal FROM v_signals")
    assert len(actual) == 24_000

    reference = reference.assign(
        event_time=pd.to_datetime(reference["Date-Time"])
        .dt.tz_localize(config.stream.source_timezone)
        .dt.tz_convert("UTC")
        .astype(actual["event_time"].dtype)
    )
    joined = reference.merge(actual, on=["symbol", "event_time"], how="outer", validate="one_to_one", indicator=True)
    assert (joined["_merge"] == "both").all(), "every reference row has exactly one v_signals row and vice versa"
    assert (joined["Close"] == joined["close"]).all() and (joined["Volume"] == joined["volume"]).all()

    for ours, theirs in (("sma_short", "sma_9"), ("sma_long", "sma_21")):
        assert (joined[ours].isna() == joined[theirs].isna()).all(), f"{ours}: NULLs differ from {theirs}"
        difference = (joined[ours] - joined[theirs]).abs().max()
        assert difference < 1e-9, f"{ours} differs from {theirs} by up to {difference}"
    mismatched = joined[joined["signal_x"] != joined["signal_y"]]
    assert mismatched.empty, f"{len(mismatched)} signals differ, e.g.\n{mismatched.head()}"
    assert joined["sma_short"].isna().sum() == 120 * 8 and joined["sma_long"].isna().sum() == 120 * 20
