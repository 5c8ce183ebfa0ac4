"""`make demo` in a shortened run: what it prints and writes, checked against the tables and the views."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from jobs.devstack.demo import LATEST_SQL
from jobs.lake.query import run_query
from jobs.pipeline.config import load_config

REPO_ROOT = Path(__file__).resolve().parents[2]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
KEY = ["symbol", "event_time"]
COMPARED = ["symbol", "event_time", "sma_short", "sma_long", "signal"]


def _assert_same_signals(actual: pd.DataFrame, expected: pd.DataFrame) -> None:
    """Equal on symbol, event_time, signal; averages equal within 1e-9 (both NULL counts as equal)."""
    actual = actual[COMPARED].sort_values(KEY).reset_index(drop=True)
    expected = expected[COMPARED].sort_values(KEY).reset_index(drop=True)
    assert len(actual) == len(expected)
    for frame in (actual, expected):
        # CSV, Arrow and DuckDB give different dtypes (object/string, ns/us): compare values.
        frame["event_time"] = pd.to_datetime(frame["event_time"], utc=True).astype("datetime64[ns, UTC]")
        frame["symbol"] = frame["symbol"].astype(str)
        frame["signal"] = frame["signal"].astype(str)
    for column in ("symbol", "event_time", "signal"):
        assert actual[column].tolist() == expected[column].tolist(), column
    for column in ("sma_short", "sma_long"):
        left, right = actual[column].astype("float64"), expected[column].astype("float64")
        assert (left.isna() == right.isna()).all(), column
        assert ((left - right).abs().fillna(0) <= 1e-9).all(), column


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    data_dir = tmp_path_factory.mktemp("demo")
    command = [
        sys.executable,
        "-m",
        "jobs.demo",
        "--config",
        str(REPO_ROOT / "conf" / "local.yaml"),
        "--duration",
        "20",
        "--ticks-per-symbol",
        "30",
        "--kafka-port",
        "0",
        "--data-dir",
        str(data_dir),
        "--set",
        "spark.driver_memory=1g",
        "--set",
        "spark.shuffle_partitions=2",
    ]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=480)
    assert result.returncode == 0, f"demo failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return result, data_dir


def test_demo_prints_latest_signals_equal_to_the_local_view(demo) -> None:
    result, data_dir = demo
    summary = json.loads((data_dir / "demo-summary.json").read_text())
    out = result.stdout
    assert "Latest signal per symbol (v_latest_signals" in out
    for header in ("symbol", "event_time (UTC)", "close", "sma_9", "sma_21", "signal", "crossover"):
        assert header in out
    assert summary["progress"]["batches"] >= 1 and summary["progress"]["signals_emitted"] > 0
    assert "ticks/s" in out  # live progress lines

    config = load_config(
        REPO_ROOT / "conf" / "local.yaml",
        [f"storage.root={data_dir / 'delta'}", f"storage.checkpoint_root={data_dir / 'checkpoints'}"],
        environ={},
    )
    printed = pd.read_csv(summary["latest_signals_csv"])
    assert len(printed) == summary["latest_signals_rows"] > 0
    _assert_same_signals(printed, run_query(config, LATEST_SQL))
    printed_rows = [line.split() for line in out.splitlines() if line.strip().startswith("SYM")]
    assert [row[0] for row in printed_rows] == list(printed["symbol"])
    assert [row[-1] if row[-1] in {"Buy", "Sell", "Hold"} else row[-2] for row in printed_rows] == list(
        printed["signal"]
    )

    # The stream's signals table is the view over its ticks (the demo's late ticks included).
    from jobs.lake.delta_log import open_delta_table

    signals = open_delta_table(config, "signals").to_pyarrow_table().to_pandas()
    assert len(signals) > 0
    _assert_same_signals(signals, run_query(config, "SELECT * FROM v_signals"))


def test_demo_prints_quarantine_counts_by_reason(demo) -> None:
    result, data_dir = demo
    summary = json.loads((data_dir / "demo-summary.json").read_text())
    out = result.stdout
    assert "Quarantine by reason vs injected" in out
    assert "total quarantined" in out and "duplicates (dropped)" in out
    for reason, count in summary["quarantine"].items():
        assert reason in out
    injected = summary["simulator"]["expected"]
    read, sent = summary["progress"]["records_read"], summary["simulator"]["sent"]
    assert (
        read == summary["progress"]["ticks"] + sum(summary["quarantine"].values()) + summary["progress"]["duplicates"]
    )
    if read == sent:  # the job caught up: every injected fault is accounted for
        observed = summary["quarantine"]
        assert observed == {reason: count for reason, count in injected["quarantined_by_reason"].items() if count}
        assert observed.get("too_late", 0) > 0
        assert summary["progress"]["duplicates"] == injected["duplicates"]
        assert summary["progress"]["ticks"] == injected["ticks"]


def test_demo_writes_png_and_html_charts_and_stops_what_it_started(demo) -> None:
    result, data_dir = demo
    summary = json.loads((data_dir / "demo-summary.json").read_text())
    charts = [Path(path) for path in summary["charts"]]
    assert len(charts) == 2 * len(summary["chart_symbols"]) == 6
    for path in charts:
        assert path.parent == data_dir / "charts"
        assert str(path) in result.stdout
        if path.suffix == ".png":
            assert path.read_bytes()[:8] == PNG_MAGIC and path.stat().st_size > 10_000
        else:
            html = path.read_text()
            assert html.lstrip().lower().startswith("<!doctype html>") and html.rstrip().endswith("</html>")
            assert "Plotly.newPlot" in html
            assert not re.search(r"<script[^>]*\bsrc=", html)  # self-contained: plotly.js is inlined
    assert "stopped: " in result.stdout
    assert not (data_dir / "demo-processes.json").exists()
