"""The Athena path for real: stream job -> Delta on S3 (moto) -> Glue sync (moto) -> views deployed to Trino.

Every view of sql/ runs unchanged on Trino through the Glue catalog, exactly as Athena runs it, and agrees
with the streamed `signals` table and with the original system's published Athena output.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pandas as pd
import pytest
from deltalake import write_deltalake

from jobs.aws import athena as athena_command
from jobs.aws import glue as catalog_command
from jobs.lake import query as query_command
from jobs.lake.delta_log import delta_storage_options, delta_uri, open_delta_table, read_delta_arrow
from jobs.lake.query import run_query
from jobs.pipeline.config import AppConfig
from jobs.pipeline.transforms.signals import SIGNAL_COLUMNS
from jobs.stream_signals import run
from tests.integration.test_query_reference import reference_ticks
from tests.integration.test_stream_signals import legacy, v1

VIEW_ORDER = ["v_signals", "v_crossovers", "v_latest_signals", "v_signal_summary"]
CROSSOVER_COLUMNS = ["symbol", "event_time", "event_date", "crossover", "close", "volume", "sma_short", "sma_long"]
SIGNAL_VIEW_COLUMNS = [*SIGNAL_COLUMNS, "event_date"]


def sync_and_deploy(config: AppConfig, cli_args: list[str], capsys) -> None:
    """`python -m jobs.catalog sync`, then `python -m jobs.athena deploy --engine trino`, as commands."""
    assert catalog_command.main(["sync", *cli_args]) == 0
    assert athena_command.main(["deploy", "--engine", "trino", *cli_args]) == 0
    deployed = capsys.readouterr().out
    assert [line.split()[0] for line in deployed.splitlines()[-4:]] == VIEW_ORDER
    assert all(" SUCCEEDED " in line for line in deployed.splitlines()[-4:])


def trino(config: AppConfig, sql: str) -> pd.DataFrame:
    return run_query(config, sql, engine_name="trino")


def table(config: AppConfig, name: str) -> pd.DataFrame:
    from jobs.lake.query import arrow_to_pandas

    return arrow_to_pandas(read_delta_arrow(open_delta_table(config, name)))


@pytest.mark.timeout(1200)  # a stream run on Spark, plus the session's Trino start when it runs first
def test_streamed_tables_through_glue_on_trino_equal_the_signals_table(
    spark, trino_lake, kafka_broker, kafka_topic, produce, cli_config_args, rows_equal, capsys
) -> None:
    topic = kafka_topic()
    config = trino_lake(f"kafka.bootstrap_servers={kafka_broker.address}", f"kafka.topic={topic}")
    produce(
        topic,
        [v1("AAA", m) for m in range(40)]
        + [legacy("BBB", m) for m in range(0, 60, 2)]
        + [v1("CCC", m, close=100 + (m % 13) * 1.5 - (m % 4)) for m in range(35)]
        + [("AAA", "not json")],
    )
    run(spark, config, once=True, timeout_seconds=300)
    args = cli_config_args(config)
    sync_and_deploy(config, args, capsys)

    signals = table(config, "signals")
    assert len(signals) == 105
    rows_equal(trino(config, "SELECT * FROM v_signals"), signals, SIGNAL_VIEW_COLUMNS)

    crossovers = signals[signals["crossover"].notna()]
    assert len(crossovers) > 0
    rows_equal(trino(config, "SELECT * FROM v_crossovers"), crossovers, [*CROSSOVER_COLUMNS, "signal"])

    latest = signals[signals["event_time"] == signals.groupby("symbol")["event_time"].transform("max")]
    assert sorted(latest["symbol"]) == ["AAA", "BBB", "CCC"]
    rows_equal(trino(config, "SELECT * FROM v_latest_signals"), latest, SIGNAL_VIEW_COLUMNS)

    # The summary equals the per-day aggregation of the signals table (COUNT_IF of nothing is 0 on Trino).
    summary = trino(config, "SELECT * FROM v_signal_summary")
    ordered = signals.sort_values(["symbol", "event_time"])
    expected_summary = (
        ordered.groupby(["symbol", "event_date"])
        .agg(
            ticks=("signal", "size"),
            buy_signals=("signal", lambda s: int((s == "Buy").sum())),
            sell_signals=("signal", lambda s: int((s == "Sell").sum())),
            hold_signals=("signal", lambda s: int((s == "Hold").sum())),
            golden_crosses=("crossover", lambda s: int((s == "golden_cross").sum())),
            death_crosses=("crossover", lambda s: int((s == "death_cross").sum())),
            crossovers=("crossover", "count"),
            first_event_time=("event_time", "first"),
            last_event_time=("event_time", "last"),
            first_close=("close", "first"),
            last_close=("close", "last"),
        )
        .reset_index()
    )
    assert expected_summary["crossovers"].sum() == len(crossovers)
    rows_equal(summary, expected_summary, list(expected_summary.columns))

    # pipeline_metrics (map<string,bigint>) and the quarantine through the catalog.
    metrics = trino(
        config,
        "SELECT sum(records_read) AS r, sum(element_at(quarantined_by_reason, 'not_json')) AS q FROM pipeline_metrics",
    )
    assert metrics.to_dict("records") == [{"r": 106, "q": 1}]
    assert trino(config, "SELECT reason, value FROM ticks_quarantine").to_dict("records") == [
        {"reason": "not_json", "value": "not json"}
    ]

    # The command line: same rows, Athena's output formats.
    assert query_command.main([*args, "--engine", "trino", "--format", "csv", "SELECT * FROM v_signals"]) == 0
    from_csv = pd.read_csv(io.StringIO(capsys.readouterr().out), parse_dates=["event_time"])
    from_csv["event_date"] = pd.to_datetime(from_csv["event_date"]).dt.date
    from_csv["prev_volume"] = from_csv["prev_volume"].astype("Int64")  # CSV has no integer NULL
    from_csv[["crossover"]] = from_csv[["crossover"]].astype(object).where(from_csv[["crossover"]].notna(), None)
    rows_equal(from_csv, signals, SIGNAL_VIEW_COLUMNS)
    assert query_command.main([*args, "--engine", "trino", "--format", "json", "SELECT 1 AS one"]) == 0
    assert json.loads(capsys.readouterr().out) == [{"one": 1}]
    assert query_command.main([*args, "--engine", "trino", "--list"]) == 0
    listed = capsys.readouterr().out.split("\n")
    assert "view  v_signals" in listed and "table signals" in listed


def test_v_signals_on_trino_reproduces_the_reference_athena_output(
    reference_csv: Path, trino_lake, cli_config_args, capsys
) -> None:
    config: AppConfig = trino_lake()
    reference = pd.read_csv(reference_csv)
    assert len(reference) == 24_000
    options = {**delta_storage_options(config), "AWS_S3_ALLOW_UNSAFE_RENAME": "true"}
    write_deltalake(
        delta_uri(config.table_path("ticks")),
        reference_ticks(reference, config.stream.source_timezone),
        partition_by=["event_date"],
        storage_options=options,
    )
    sync_and_deploy(config, cli_config_args(config), capsys)

    actual = trino(config, "SELECT symbol, event_time, close, volume, sma_short, sma_long, signal FROM v_signals")
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
