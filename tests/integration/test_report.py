"""jobs.report: charts from a signals Delta table in the job's exact schema, through the CLI and the builders."""

from __future__ import annotations

import math
import re
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
from pyspark.sql import functions as F

from jobs.lake.report import ReportError, load_signals, signal_figure, signal_plotly_figure
from jobs.pipeline.delta_io import ensure_table
from jobs.pipeline.tables import SIGNALS
from jobs.pipeline.transforms.signals import compute_signals
from tests.support import assert_one_plain_error_line, unreachable_s3_settings

REPO_ROOT = Path(__file__).resolve().parents[2]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
T0 = datetime(2026, 11, 24, 9, 0, 0)


@pytest.fixture(scope="module")
def signals_config(spark, base_config, tmp_path_factory):
    """A signals table written the way the job writes it (schema from jobs.pipeline.tables, rows from the transform)."""
    from jobs.pipeline.config import with_overrides

    root = tmp_path_factory.mktemp("report")
    config = with_overrides(
        base_config, [f"storage.root={root / 'delta'}", f"storage.checkpoint_root={root / 'checkpoints'}"]
    )
    rows = [
        (
            f"SYM{index + 1:03d}",
            T0 + timedelta(seconds=30 * step),
            round(100 + 8 * math.sin(step / (3 + index)) + step * 0.05, 2),
            1000 + (step * 53 + index * 7) % 400,
        )
        for index in range(2)
        for step in range(60)
    ]
    ticks = spark.createDataFrame(rows, "symbol string, event_time timestamp, close double, volume bigint")
    signals = compute_signals(ticks).select(
        *[c for c in SIGNALS.schema.fieldNames() if c not in {"revision", "updated_at", "batch_id", "event_date"}],
        F.lit(0).alias("revision"),
        F.current_timestamp().alias("updated_at"),
        F.lit(0).cast("bigint").alias("batch_id"),
        F.to_date("event_time").alias("event_date"),
    )
    path = config.table_path("signals")
    ensure_table(spark, path, SIGNALS)
    spark.createDataFrame(signals.rdd, SIGNALS.schema).write.format("delta").mode("append").save(path)
    return config


def _cli(config, *args: str) -> subprocess.CompletedProcess[str]:
    command = [
        sys.executable,
        "-m",
        "jobs.report",
        "--config",
        str(REPO_ROOT / "conf" / "local.yaml"),
        f"--set=storage.root={config.storage.root}",
        *args,
    ]
    return subprocess.run(
        command,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "HOME": str(Path.home())},
    )


def test_cli_writes_a_png_and_a_self_contained_html_per_symbol(signals_config, tmp_path: Path) -> None:
    out = tmp_path / "charts"
    result = _cli(signals_config, "--symbols", "SYM001,SYM002", "--out", str(out))
    assert result.returncode == 0, result.stderr
    expected = [out / name for name in ("SYM001.png", "SYM001.html", "SYM002.png", "SYM002.html")]
    assert result.stdout.split() == [str(path) for path in expected]
    for path in expected:
        if path.suffix == ".png":
            assert path.read_bytes()[:8] == PNG_MAGIC
        else:
            html = path.read_text()
            # Self-contained: plotly.js is inlined, no <script src=...> to fetch.
            assert "<html" in html and "Plotly.newPlot" in html and not re.search(r"<script[^>]*\bsrc=", html)


def test_cli_format_option_writes_only_what_is_asked(signals_config, tmp_path: Path) -> None:
    result = _cli(signals_config, "--symbols", "SYM002", "--out", str(tmp_path), "--format", "png", "--last", "30")
    assert result.returncode == 0, result.stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == ["SYM002.png"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--symbols", "SYM001,NOPE"], "no signals for NOPE"),
        (["--symbols", "SYM001", "--format", "svg"], "unknown format svg"),
    ],
)
def test_cli_user_errors_are_one_line_without_traceback(signals_config, tmp_path: Path, args, message) -> None:
    result = _cli(signals_config, *args, "--out", str(tmp_path))
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
    assert "known: SYM001, SYM002" in result.stderr or "svg" in message


def test_missing_table_says_what_to_run(base_config, tmp_path: Path) -> None:
    from jobs.pipeline.config import with_overrides

    config = with_overrides(base_config, [f"storage.root={tmp_path / 'empty'}"])
    with pytest.raises(ReportError, match="no signals table at .*run the streaming job"):
        load_signals(config, ["SYM001"])
    result = _cli(config, "--symbols", "SYM001", "--out", str(tmp_path))
    assert result.returncode == 2 and "Traceback" not in result.stderr


def test_figures_mark_every_signal_and_crossover(signals_config) -> None:
    frame = load_signals(signals_config, ["SYM001"])
    assert frame["event_time"].is_monotonic_increasing and len(frame) == 60
    buys, sells = (int((frame["signal"] == kind).sum()) for kind in ("Buy", "Sell"))
    crossovers = int(frame["crossover"].notna().sum())
    assert buys and sells and crossovers, "the fixture should produce every kind of marker"

    figure = signal_figure(frame, "SYM001", signals_config)
    price, volume = figure.axes
    assert [len(c.get_offsets()) for c in price.collections] == [buys, sells]
    assert {line.get_label() for line in price.get_lines()} >= {"close", "SMA(9)", "SMA(21)"}
    vertical = [line for line in price.get_lines() if line.get_linestyle() == "--"]
    assert len(vertical) == crossovers
    assert len(volume.patches) == 60

    interactive = signal_plotly_figure(frame, "SYM001", signals_config)
    names = [trace.name for trace in interactive.data]
    assert names[:3] == ["close", "SMA(9)", "SMA(21)"]
    assert f"Buy ({buys})" in names and f"Sell ({sells})" in names
    assert len(interactive.layout.shapes) == crossovers * 1  # one dashed line spanning both rows per crossover


def test_reading_a_table_without_spark_exits_cleanly_every_time(signals_config) -> None:
    """delta-rs's pyarrow dataset scanned on Arrow's thread pool aborts some interpreter exits ('terminate called
    without an active exception', SIGABRT, exit -6) after the work is done: a CLI that prints its result and then
    dies with 134 breaks every script that checks it. Each reader in jobs.lake goes through read_delta_arrow."""
    script = (
        "import sys\n"
        "from jobs.lake.delta_log import open_delta_table, read_delta_arrow\n"
        "from jobs.pipeline.config import load_config, with_overrides\n"
        f"config = with_overrides(load_config({str(REPO_ROOT / 'conf' / 'local.yaml')!r}),"
        f" ['storage.root={signals_config.storage.root}'])\n"
        "table = read_delta_arrow(open_delta_table(config, 'signals'), columns=['symbol', 'close'])\n"
        "print(table.num_rows)\n"
        "sys.exit(3)\n"
    )
    codes = []
    for _ in range(8):
        result = subprocess.run(
            [sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
        )
        assert result.stdout.strip() == "120", result.stderr
        codes.append(result.returncode)
    assert codes == [3] * 8


def test_last_keeps_the_newest_ticks_of_each_symbol(signals_config) -> None:
    everything = load_signals(signals_config, ["SYM002", "SYM001"])
    assert list(everything.groupby("symbol").size()) == [60, 60]
    last = load_signals(signals_config, ["SYM002", "SYM001"], last=10)
    expected = everything.groupby("symbol").tail(10).reset_index(drop=True)
    assert last.equals(expected)
    assert last["event_time"].min() == pd.Timestamp(T0 + timedelta(seconds=30 * 50), tz="UTC")
    assert list(last["symbol"]) == ["SYM001"] * 10 + ["SYM002"] * 10


def test_an_unreachable_s3_endpoint_is_one_error_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from jobs.lake.report import main

    assert main([*unreachable_s3_settings(), "--symbols", "SYM001", "--out", str(tmp_path)]) == 1
    assert_one_plain_error_line(
        capsys.readouterr().err, "error: cannot read the signals table or write the charts: ", "Connection refused"
    )
