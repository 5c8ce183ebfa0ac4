"""The local query runner over Delta tables in S3 (the session's moto server), and its command line."""

from __future__ import annotations

import io
import json
import uuid
from datetime import UTC, datetime, timedelta

import pandas as pd
import pyarrow as pa
import pytest
from deltalake import write_deltalake

from jobs.aws.clients import aws_client
from jobs.lake.delta_log import delta_storage_options, delta_uri
from jobs.lake.query import main, open_local_engine, run_query
from jobs.pipeline.config import REPO_ROOT, AppConfig
from tests.support import TICKS_ARROW, assert_one_plain_error_line, unreachable_s3_settings


def ticks_table(symbols: int = 3, ticks: int = 30) -> pa.Table:
    start = datetime(2026, 3, 2, 9, 15, tzinfo=UTC)
    rows = [
        {
            "symbol": f"SYM{s:03d}",
            "event_time": start + timedelta(seconds=30 * i),
            "close": 100.0 + s + (i % 7) - (i % 5) * 0.5,
            "volume": 1000 + (i * 13 + s) % 11 * 10,
            "message_format": "v1",
            "topic": "stock-ticks",
            "partition": s % 3,
            "offset": i,
            "ingest_time": start,
            "event_date": start.date(),
        }
        for s in range(1, symbols + 1)
        for i in range(ticks)
    ]
    return pa.Table.from_pylist(rows, schema=TICKS_ARROW)


@pytest.fixture
def s3_config(make_config) -> AppConfig:
    bucket = f"query-{uuid.uuid4().hex[:12]}"
    config = make_config(f"storage.root=s3a://{bucket}/market-signals/delta")
    aws_client(config, "s3").create_bucket(Bucket=bucket)
    options = {**delta_storage_options(config), "AWS_S3_ALLOW_UNSAFE_RENAME": "true"}
    write_deltalake(
        delta_uri(config.table_path("ticks")), ticks_table(), partition_by=["event_date"], storage_options=options
    )
    return config


def cli_args(config: AppConfig) -> list[str]:
    return [
        "--config",
        str(REPO_ROOT / "conf" / "local.yaml"),
        "--set",
        f"storage.root={config.storage.root}",
        "--set",
        f"s3.endpoint={config.s3.endpoint}",
        "--set",
        "s3.path_style_access=true",
        "--set",
        "s3.use_test_credentials=true",
    ]


def test_views_run_over_delta_tables_in_s3(s3_config: AppConfig) -> None:
    engine = open_local_engine(s3_config)
    try:
        assert list(engine.tables) == ["ticks"]
        assert engine.tables["ticks"].startswith("s3a://")
        assert {"raw_ticks", "ticks_quarantine", "signals", "pipeline_metrics"} == set(engine.missing_tables)
        latest = engine.query("SELECT symbol, event_time, signal FROM v_latest_signals ORDER BY symbol")
        assert latest["symbol"].tolist() == ["SYM001", "SYM002", "SYM003"]
        assert (latest["event_time"] == pd.Timestamp("2026-03-02 09:29:30", tz="UTC")).all()
    finally:
        engine.close()
    counts = run_query(s3_config, "SELECT COUNT(*) AS n, COUNT(sma_long) AS warm FROM v_signals")
    assert counts.to_dict("records") == [{"n": 90, "warm": 3 * (30 - 20)}]


def test_cli_formats(s3_config: AppConfig, capsys: pytest.CaptureFixture[str]) -> None:
    query = (
        "SELECT symbol, event_time, event_date, sma_short, prev_volume, signal "
        "FROM v_signals ORDER BY symbol, event_time LIMIT 3"
    )
    assert main([*cli_args(s3_config), "--format", "csv", query]) == 0
    out, err = capsys.readouterr()
    frame = pd.read_csv(io.StringIO(out))
    assert list(frame.columns) == ["symbol", "event_time", "event_date", "sma_short", "prev_volume", "signal"]
    assert frame["event_time"].tolist()[0] == "2026-03-02T09:15:00.000000Z"
    assert frame["event_date"].tolist()[0] == "2026-03-02"
    assert "note: table signals: no Delta table" in err

    assert main([*cli_args(s3_config), "--format", "json", "-q", query]) == 0
    out, err = capsys.readouterr()
    records = json.loads(out)
    assert records[0]["symbol"] == "SYM001" and records[0]["sma_short"] is None and records[0]["prev_volume"] is None
    assert records[1]["prev_volume"] == int(ticks_table()["volume"][0].as_py())
    assert err == ""

    assert main([*cli_args(s3_config), "-q", query]) == 0
    out, _ = capsys.readouterr()
    assert "symbol" in out.splitlines()[0] and "NULL" in out and out.rstrip().endswith("(3 rows)")

    assert main([*cli_args(s3_config), "-q", "--list"]) == 0
    out, _ = capsys.readouterr()
    assert "table ticks" in out and "view  v_signal_summary" in out


def test_cli_user_errors_exit_non_zero_without_traceback(
    s3_config: AppConfig, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*cli_args(s3_config), "-q", "SELECT * FROM signals"]) == 1
    assert capsys.readouterr().err.startswith("error: table signals does not exist yet")

    assert main([*cli_args(s3_config), "-q", "SELECT nope FROM ticks"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: query failed:") and "Traceback" not in err

    assert main([*cli_args(s3_config), "--set", "signals.sma_short=5", "SELECT 1"]) == 2
    err = capsys.readouterr().err
    assert "v_signals.sql computes sma_short=9, sma_long=21" in err and "--substitute-windows" in err

    substituted = [
        *cli_args(s3_config),
        "--set",
        "signals.sma_short=5",
        "--substitute-windows",
        "-q",
        "--format",
        "csv",
    ]
    assert main([*substituted, "SELECT COUNT(sma_short) AS n FROM v_signals"]) == 0
    assert capsys.readouterr().out == "n\n78\n"  # 3 symbols x (30 - 4) warm short averages


def test_an_unreachable_s3_endpoint_is_one_error_line(capsys: pytest.CaptureFixture[str]) -> None:
    """deltalake's error spans a line per cause, with colour codes: the command prints it as one plain line."""
    closed = ["--config", str(REPO_ROOT / "conf" / "local.yaml"), *unreachable_s3_settings()]
    assert main([*closed, "-q", "--list"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert_one_plain_error_line(err, "error: cannot open the Delta tables: ", "Connection refused")
