"""Glue catalog edge cases, read by Trino as Athena reads them: tables before their first commit, schema changes
picked up by a re-sync, partition columns, and the map<string,bigint> column of pipeline_metrics."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pandas as pd
import pyarrow as pa
import pytest
from deltalake import write_deltalake

from jobs.aws import athena as athena_command
from jobs.aws.glue import sync_catalog
from jobs.lake import query as query_command
from jobs.lake.delta_log import delta_storage_options, delta_uri
from jobs.lake.query import QueryError, run_query
from jobs.pipeline.config import AppConfig
from tests.support import TICKS_ARROW

START = datetime(2026, 3, 2, 23, 50, tzinfo=UTC)  # 30 ticks a minute apart: two UTC days


def ticks(symbols: tuple[str, ...] = ("AAA", "BBB"), count: int = 30) -> pa.Table:
    rows = [
        {
            "symbol": symbol,
            "event_time": START + timedelta(minutes=i),
            "close": 100.0 + index + (i % 7) * 0.5,
            "volume": 1000 + i,
            "message_format": "v1",
            "topic": "stock-ticks",
            "partition": 0,
            "offset": i,
            "ingest_time": START,
            "event_date": (START + timedelta(minutes=i)).date(),
        }
        for index, symbol in enumerate(symbols)
        for i in range(count)
    ]
    return pa.Table.from_pylist(rows, schema=TICKS_ARROW)


def write(config: AppConfig, name: str, data: pa.Table, **options) -> None:
    storage = {**delta_storage_options(config), "AWS_S3_ALLOW_UNSAFE_RENAME": "true"}
    write_deltalake(delta_uri(config.table_path(name)), data, storage_options=storage, **options)


def trino(config: AppConfig, sql: str) -> pd.DataFrame:
    return run_query(config, sql, engine_name="trino")


def test_table_registered_before_its_first_commit_is_a_clear_error(trino_lake, cli_config_args, capsys) -> None:
    config = trino_lake()
    actions = {result.table: result.action for result in sync_catalog(config)}
    assert actions == dict.fromkeys(
        ["raw_ticks", "ticks", "ticks_quarantine", "signals", "pipeline_metrics"], "created"
    )

    # The catalog lists the table, Trino has nothing to read yet: one line that says why and what to do.
    assert "signals" in set(trino(config, "SHOW TABLES")["Table"])
    with pytest.raises(QueryError, match=r"signals is registered in Glue but its Delta table has no commit yet"):
        trino(config, "SELECT count(*) FROM signals")
    args = cli_config_args(config)
    assert query_command.main([*args, "--engine", "trino", "SELECT * FROM ticks"]) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "ticks is registered in Glue but its Delta table has no commit yet" in error

    # Deploying the views needs ticks' first commit too, and says so with the file name.
    assert athena_command.main(["deploy", "--engine", "trino", *args]) == 1
    error = capsys.readouterr().err
    assert error.startswith("error: v_signals.sql: Trino: table ") and error.count("\n") == 1
    assert "ticks is registered in Glue but its Delta table has no commit yet" in error

    # Once the first commit lands, the same registration reads it: no re-sync needed.
    write(config, "ticks", ticks(), partition_by=["event_date"])
    assert athena_command.main(["deploy", "--engine", "trino", *args]) == 0, capsys.readouterr().err
    assert trino(config, "SELECT count(*) AS n FROM v_signals").to_dict("records") == [{"n": 60}]


def test_schema_change_is_picked_up_by_a_re_sync(trino_lake) -> None:
    config = trino_lake()
    write(config, "ticks", ticks(("AAA",), 3), partition_by=["event_date"])
    assert [r.action for r in sync_catalog(config, ["ticks"])] == ["created"]
    assert "venue" not in list(trino(config, "SELECT * FROM ticks").columns)

    wider = ticks(("AAA",), 4).slice(3).append_column("venue", pa.array(["XNSE"], pa.string()))
    write(config, "ticks", wider, mode="append", schema_mode="merge", partition_by=["event_date"])
    assert [r.action for r in sync_catalog(config, ["ticks"])] == ["updated"]
    assert [r.action for r in sync_catalog(config, ["ticks"])] == ["unchanged"]

    rows = trino(config, "SELECT event_time, venue FROM ticks ORDER BY event_time")
    assert rows["venue"].tolist() == [None, None, None, "XNSE"]
    columns = trino(config, "DESCRIBE ticks")
    assert columns.loc[columns["Column"] == "venue", "Type"].tolist() == ["varchar"]


def test_partition_columns_filter_and_list_partitions(trino_lake) -> None:
    config = trino_lake()
    write(config, "ticks", ticks(), partition_by=["event_date"])
    sync_catalog(config, ["ticks"])

    by_day = trino(config, "SELECT event_date, count(*) AS n FROM ticks GROUP BY event_date ORDER BY event_date")
    assert by_day.to_dict("records") == [
        {"event_date": date(2026, 3, 2), "n": 20},
        {"event_date": date(2026, 3, 3), "n": 40},
    ]
    day = trino(config, "SELECT symbol, event_time FROM ticks WHERE event_date = DATE '2026-03-02' ORDER BY 1, 2")
    assert len(day) == 20
    assert (day["event_time"] < pd.Timestamp("2026-03-03", tz="UTC")).all()
    partitions = trino(config, 'SELECT partition.event_date AS d FROM "ticks$partitions" ORDER BY 1')
    assert partitions["d"].tolist() == [date(2026, 3, 2), date(2026, 3, 3)]
    # Glue keeps event_date as a partition key, not as a column twice.
    described = trino(config, "DESCRIBE ticks")
    assert described["Column"].tolist().count("event_date") == 1


def test_map_column_of_pipeline_metrics(trino_lake, cli_config_args, capsys) -> None:
    config = trino_lake()
    metrics = pa.table(
        {
            "batch_id": pa.array([0, 1], pa.int64()),
            "batch_started_at": pa.array([START, START + timedelta(seconds=5)], pa.timestamp("us", tz="UTC")),
            "records_read": pa.array([10, 4], pa.int64()),
            "ticks_written": pa.array([7, 4], pa.int64()),
            "quarantined": pa.array([3, 0], pa.int64()),
            "quarantined_by_reason": pa.array(
                [[("not_json", 2), ("too_late", 1)], []], pa.map_(pa.string(), pa.int64())
            ),
            "duplicates": pa.array([0, 0], pa.int64()),
            "signals_emitted": pa.array([7, 4], pa.int64()),
            "signals_corrected": pa.array([0, 1], pa.int64()),
            "batch_duration_ms": pa.array([1200, 800], pa.int64()),
            "max_event_time_lag_ms": pa.array([None, 50], pa.int64()),
        }
    )
    write(config, "pipeline_metrics", metrics)
    sync_catalog(config, ["pipeline_metrics"])

    described = trino(config, "DESCRIBE pipeline_metrics")
    assert described.loc[described["Column"] == "quarantined_by_reason", "Type"].tolist() == ["map(varchar, bigint)"]
    rows = trino(
        config,
        "SELECT batch_id, element_at(quarantined_by_reason, 'not_json') AS not_json, "
        "element_at(quarantined_by_reason, 'too_late') AS too_late, cardinality(quarantined_by_reason) AS reasons, "
        "quarantined_by_reason FROM pipeline_metrics ORDER BY batch_id",
    )
    subscript = "SELECT quarantined_by_reason['too_late'] AS n FROM pipeline_metrics WHERE batch_id = 0"
    assert trino(config, subscript).to_dict("records") == [{"n": 1}]
    assert rows[["batch_id", "not_json", "too_late", "reasons"]].astype(object).where(rows.notna(), None).to_dict(
        "records"
    ) == [
        {"batch_id": 0, "not_json": 2, "too_late": 1, "reasons": 2},
        {"batch_id": 1, "not_json": None, "too_late": None, "reasons": 0},
    ]
    assert [sorted(value) for value in rows["quarantined_by_reason"]] == [[("not_json", 2), ("too_late", 1)], []]
    exploded = trino(
        config,
        "SELECT reason, sum(n) AS n FROM pipeline_metrics CROSS JOIN UNNEST(quarantined_by_reason) AS r(reason, n) "
        "GROUP BY reason ORDER BY reason",
    )
    assert exploded.to_dict("records") == [{"reason": "not_json", "n": 2}, {"reason": "too_late", "n": 1}]

    sql = "SELECT batch_id, quarantined_by_reason FROM pipeline_metrics ORDER BY batch_id"
    assert query_command.main([*cli_config_args(config), "--engine", "trino", "--format", "csv", sql]) == 0
    assert capsys.readouterr().out.splitlines()[0] == "batch_id,quarantined_by_reason"
