"""Unit tests of the benchmark helpers that turn tables into figures (real Delta tables, no mocks)."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake

from bench.bench_latency import started_between, sustained
from bench.bench_sql import TICKS_ARROW, build_ticks
from bench.common import commits, first_visible, percentile, trigger_seconds
from jobs.pipeline.tables import TICKS

pytestmark = pytest.mark.unit

SCHEMA = pa.schema([pa.field("key", pa.int64()), pa.field("value", pa.string())])


def _commit_ms(table: Path, version: int) -> int:
    return os.stat(table / "_delta_log" / f"{version:020d}.json").st_mtime_ns // 1_000_000


def _set_commit_ms(table: Path, version: int, epoch_ms: int) -> None:
    path = table / "_delta_log" / f"{version:020d}.json"
    os.utime(path, ns=(epoch_ms * 1_000_000, epoch_ms * 1_000_000))


def test_first_visible_maps_each_row_to_the_commit_that_added_it(tmp_path: Path) -> None:
    table = tmp_path / "t"
    write_deltalake(str(table), pa.table({"key": [1, 2], "value": ["a", "b"]}, schema=SCHEMA))
    write_deltalake(str(table), pa.table({"key": [3], "value": ["c"]}, schema=SCHEMA), mode="append")
    # A MERGE that rewrites the file holding keys 1 and 2 (key 2 changes) and adds key 4.
    (
        DeltaTable(str(table))
        .merge(pa.table({"key": [2, 4], "value": ["B", "d"]}, schema=SCHEMA), "t.key = s.key", "s", "t")
        .when_matched_update_all()
        .when_not_matched_insert_all()
        .execute()
    )
    # Distinct, known commit times (the tests run faster than the file system's clock resolution).
    for version, epoch_ms in enumerate((1_000_000, 2_000_000, 3_000_000)):
        _set_commit_ms(table, version, epoch_ms)

    rows = first_visible(table, ["key", "value"], ["key"]).sort_values("key").reset_index(drop=True)

    assert [c.operation for c in commits(table)] == ["WRITE", "WRITE", "MERGE"]
    assert rows["key"].tolist() == [1, 2, 3, 4]
    # Keys 1 and 2 became visible at version 0; the MERGE re-adding them does not move their time.
    assert rows["visible_ms"].tolist() == [1_000_000, 1_000_000, 2_000_000, 3_000_000]
    assert rows["value"].tolist() == ["a", "b", "c", "d"]


def test_first_visible_ignores_files_re_added_by_compaction(tmp_path: Path) -> None:
    table = tmp_path / "t"
    write_deltalake(str(table), pa.table({"key": [1], "value": ["a"]}, schema=SCHEMA))
    write_deltalake(str(table), pa.table({"key": [2], "value": ["b"]}, schema=SCHEMA), mode="append")
    DeltaTable(str(table)).optimize.compact()
    assert [len(c.added) for c in commits(table)] == [1, 1, 0]  # compaction adds with dataChange=false
    _set_commit_ms(table, 0, 5_000)
    _set_commit_ms(table, 1, 7_000)

    rows = first_visible(table, ["key"], ["key"]).sort_values("key")

    assert rows["visible_ms"].tolist() == [5_000, 7_000]
    assert _commit_ms(table, 2) > 0


def test_sustained_ignores_only_the_first_batch() -> None:
    durations = pd.DataFrame({"batch_duration_ms": [30_000, 4_000, 5_000]})
    assert sustained(durations, 5_000) == (True, 5_000.0)
    slow = pd.DataFrame({"batch_duration_ms": [1_000, 4_000, 5_001]})
    assert sustained(slow, 5_000) == (False, 5_001.0)


def test_started_between_takes_the_batches_that_started_in_the_step() -> None:
    batches = pd.DataFrame(
        {
            "batch_id": [3, 1, 2, 4],
            "batch_started_at": pd.to_datetime(
                ["1970-01-01 00:00:10", "1970-01-01 00:00:01", "1970-01-01 00:00:05", "1970-01-01 00:00:11"]
            ),
            "batch_duration_ms": [300, 100, 200, 400],
        }
    )
    assert started_between(batches, 5_000, 11_000)["batch_id"].tolist() == [2, 3]
    assert started_between(batches, 0, 1_000).empty


def test_trigger_seconds_and_percentile() -> None:
    assert trigger_seconds("5 seconds") == 5.0
    assert trigger_seconds("500 milliseconds") == 0.5
    assert trigger_seconds("1 minute") == 60.0
    assert percentile([1, 2, 3, 4, 100], 50) == 3.0
    assert percentile(list(range(1, 101)), 99) == pytest.approx(99.01)


def test_sql_bench_table_has_the_job_ticks_schema_and_exact_rows(tmp_path: Path) -> None:
    location = tmp_path / "ticks"
    assert build_ticks(location, ticks=1_000, symbols=4, chunk_symbols=3) == 1_000
    table = DeltaTable(str(location))
    assert [field.name for field in TICKS_ARROW] == TICKS.schema.fieldNames()
    assert table.metadata().partition_columns == ["event_date"]
    frame = table.to_pandas().sort_values(["symbol", "event_time"]).reset_index(drop=True)
    assert frame.groupby("symbol").size().to_dict() == {"SYM001": 250, "SYM002": 250, "SYM003": 250, "SYM004": 250}
    assert frame["offset"].sort_values().tolist() == list(range(1_000))
    # One tick per second per symbol, on the 0.01 price grid, positive volumes.
    steps = frame.groupby("symbol")["event_time"].diff().dropna().unique()
    assert list(steps) == [pd.Timedelta(seconds=1)]
    assert ((frame["close"] * 100).round(6) % 1 == 0).all()
    assert (frame["close"] > 0).all() and (frame["volume"] > 0).all()
    assert (frame["event_date"] == frame["event_time"].dt.date).all()
