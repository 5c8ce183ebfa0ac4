"""The views, run locally over a small local Delta `ticks` table, against the signal definition of docs/design.md."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from jobs.lake.query import QueryError, open_local_engine, run_query
from jobs.lake.sql_views import WindowMismatch
from jobs.pipeline.config import REPO_ROOT, AppConfig, load_config
from tests.support import write_ticks


def local_config(root: Path, *overrides: str) -> AppConfig:
    return load_config(
        REPO_ROOT / "conf" / "local.yaml",
        [f"storage.root={root}", f"storage.checkpoint_root={root / 'checkpoints'}", *overrides],
        environ={},
    )


def expected_signals(rows: list[tuple[str, datetime, float, int]], short: int, long: int) -> pd.DataFrame:
    """The definition of docs/design.md, written out plainly: averages compared as exact sums of whole millionths."""
    out = []
    for symbol in sorted({r[0] for r in rows}):
        ticks = sorted((r for r in rows if r[0] == symbol), key=lambda r: r[1])
        previous: tuple[int | None, None] = (None, None)
        for i, (_, at, close, volume) in enumerate(ticks):
            closes = [t[2] for t in ticks[: i + 1]]
            sma_s = sum(closes[-short:]) / short if len(closes) >= short else None
            sma_l = sum(closes[-long:]) / long if len(closes) >= long else None
            prev_volume = ticks[i - 1][3] if i else None
            rising = prev_volume is not None and volume > prev_volume
            both = sma_s is not None and sma_l is not None
            micros = [round(c * 1_000_000) for c in closes]
            trend = (
                (sum(micros[-short:]) * long > sum(micros[-long:]) * short)
                - (sum(micros[-short:]) * long < sum(micros[-long:]) * short)
                if both
                else None
            )
            signal = "Buy" if both and rising and trend > 0 else "Sell" if both and rising and trend < 0 else "Hold"
            crossover = None
            if trend is not None and previous[0] is not None:
                if previous[0] <= 0 and trend > 0:
                    crossover = "golden_cross"
                elif previous[0] >= 0 and trend < 0:
                    crossover = "death_cross"
            previous = (trend, None)
            out.append((symbol, at, close, volume, sma_s, sma_l, prev_volume, signal, crossover))
    return pd.DataFrame(
        out,
        columns=[
            "symbol",
            "event_time",
            "close",
            "volume",
            "sma_short",
            "sma_long",
            "prev_volume",
            "signal",
            "crossover",
        ],
    )


def zigzag_rows() -> list[tuple[str, datetime, float, int]]:
    start = datetime(2025, 7, 19, 23, 50, tzinfo=UTC)  # crosses midnight: two event_dates
    rows = []
    for s, symbol in enumerate(("AAA", "BBB")):
        for i in range(40):
            close = 100 + 10 * math.sin((i + 3 * s) / 4) + (i % 3)
            volume = 1000 + ((i * 37 + s * 11) % 17) * 10
            rows.append((symbol, start + timedelta(seconds=30 * i), close, volume))
    return rows


def assert_matches(actual: pd.DataFrame, expected: pd.DataFrame) -> None:
    actual = actual.sort_values(["symbol", "event_time"]).reset_index(drop=True)
    assert len(actual) == len(expected)
    for column in ("sma_short", "sma_long"):
        a, e = actual[column], expected[column].astype("float64")
        assert (a.isna() == e.isna()).all(), column
        assert ((a - e).abs().fillna(0) < 1e-9).all(), column
    assert actual["prev_volume"].astype("Int64").tolist() == expected["prev_volume"].astype("Int64").tolist()
    assert actual["signal"].tolist() == expected["signal"].tolist()
    assert actual["crossover"].where(actual["crossover"].notna(), None).tolist() == expected["crossover"].tolist()


def test_v_signals_follows_the_design_definition(tmp_path: Path) -> None:
    rows = zigzag_rows()
    write_ticks(tmp_path, rows)
    actual = run_query(local_config(tmp_path), "SELECT * FROM v_signals")
    assert list(actual.columns) == [
        "symbol",
        "event_time",
        "event_date",
        "close",
        "volume",
        "sma_short",
        "sma_long",
        "prev_volume",
        "signal",
        "crossover",
    ]
    expected = expected_signals(rows, 9, 21)
    assert_matches(actual, expected)
    assert set(expected["crossover"].dropna()) == {"golden_cross", "death_cross"}  # the data exercises both


def test_substituted_windows_follow_the_config(tmp_path: Path) -> None:
    rows = zigzag_rows()
    write_ticks(tmp_path, rows)
    config = local_config(tmp_path, "signals.sma_short=3", "signals.sma_long=5")
    with pytest.raises(WindowMismatch):
        run_query(config, "SELECT * FROM v_signals")
    actual = run_query(config, "SELECT * FROM v_signals", substitute_windows=True)
    assert_matches(actual, expected_signals(rows, 3, 5))


def test_every_view_runs_with_typed_columns(tmp_path: Path) -> None:
    rows = zigzag_rows()
    write_ticks(tmp_path, rows)
    engine = open_local_engine(local_config(tmp_path))
    try:
        assert engine.views == ["v_signals", "v_crossovers", "v_latest_signals", "v_signal_summary"]
        types = {
            name: {r[0]: r[1] for r in engine.connection.sql(f"DESCRIBE {name}").fetchall()} for name in engine.views
        }
        assert types["v_signals"] == {
            "symbol": "VARCHAR",
            "event_time": "TIMESTAMP WITH TIME ZONE",
            "event_date": "DATE",
            "close": "DOUBLE",
            "volume": "BIGINT",
            "sma_short": "DOUBLE",
            "sma_long": "DOUBLE",
            "prev_volume": "BIGINT",
            "signal": "VARCHAR",
            "crossover": "VARCHAR",
        }
        latest = engine.query("SELECT symbol, event_time FROM v_latest_signals ORDER BY symbol")
        assert latest["symbol"].tolist() == ["AAA", "BBB"]
        assert (latest["event_time"] == max(r[1] for r in rows)).all()

        expected = expected_signals(rows, 9, 21)
        crosses = engine.query("SELECT symbol, event_time, crossover FROM v_crossovers ORDER BY symbol, event_time")
        assert len(crosses) == expected["crossover"].notna().sum()
        assert set(crosses["crossover"]) == {"golden_cross", "death_cross"}

        summary = engine.query("SELECT * FROM v_signal_summary ORDER BY symbol, event_date")
        assert summary["event_date"].tolist() == [date(2025, 7, 19), date(2025, 7, 20)] * 2
        assert summary["ticks"].sum() == len(rows)
        assert (summary["buy_signals"] + summary["sell_signals"] + summary["hold_signals"] == summary["ticks"]).all()
        assert summary["crossovers"].sum() == len(crosses)
        assert (summary["golden_crosses"] + summary["death_crosses"] == summary["crossovers"]).all()
        first = summary.iloc[0]
        aaa_day1 = [r for r in rows if r[0] == "AAA" and r[1].date() == date(2025, 7, 19)]
        assert first["first_close"] == aaa_day1[0][2] and first["last_close"] == aaa_day1[-1][2]
        assert first["ticks"] == len(aaa_day1)
        buys = expected[(expected.symbol == "AAA") & (expected.event_time.map(lambda t: t.date()) == date(2025, 7, 19))]
        assert first["buy_signals"] == (buys["signal"] == "Buy").sum()
    finally:
        engine.close()


def test_missing_tables_are_skipped_and_their_views_error_clearly(tmp_path: Path) -> None:
    engine = open_local_engine(local_config(tmp_path))
    try:
        assert engine.tables == {}
        assert "ticks" in engine.missing_tables and engine.views == []
        assert any("table ticks" in note for note in engine.notes)
        with pytest.raises(QueryError, match=r"view v_signals is not available: it reads ticks, which does not exist"):
            engine.query("SELECT * FROM v_signals")
        with pytest.raises(QueryError, match=r"view v_signal_summary is not available: it reads v_signals"):
            engine.query("SELECT * FROM v_signal_summary")
        with pytest.raises(QueryError, match=r"table signals does not exist yet"):
            engine.query("SELECT count(*) FROM signals")
    finally:
        engine.close()


def falling_then_flat_rows() -> list[tuple[str, datetime, float, int]]:
    """20 ticks from 101.07 down by 0.05, then 30 at 100.07: once both windows are flat the averages are equal,
    though a floating-point sum makes sma_long 100.06999999999996 (which used to read as a golden cross)."""
    start = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)
    closes = [round(101.07 - 0.05 * i, 2) for i in range(20)] + [100.07] * 30
    return [("FLAT", start + timedelta(minutes=i), close, 1000 + i) for i, close in enumerate(closes)]


def test_equal_averages_are_equal_in_the_views(tmp_path: Path) -> None:
    rows = falling_then_flat_rows()
    write_ticks(tmp_path, rows)
    config = local_config(tmp_path)
    actual = run_query(config, "SELECT * FROM v_signals ORDER BY event_time")
    flat = actual.iloc[40:]  # both windows hold only 100.07 from the 41st tick on
    assert set(flat["signal"]) == {"Hold"}
    assert actual["crossover"].dropna().tolist() == []
    expected = expected_signals(rows, 9, 21)
    assert actual["signal"].tolist() == expected["signal"].tolist()


def test_a_query_that_would_differ_on_duckdb_is_refused_unless_written_for_duckdb(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Integer `/` truncates in Athena and not in DuckDB: the command refuses it in one line naming the construct,
    rather than answer something Athena would not; `--dialect duckdb` runs it as DuckDB SQL."""
    from jobs.lake.query import main

    t0 = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)
    write_ticks(tmp_path, [("SYM001", t0, 10.0, 5), ("SYM001", t0 + timedelta(seconds=30), 11.0, 7)])
    common = ["--set", f"storage.root={tmp_path}", "--set", f"storage.checkpoint_root={tmp_path / 'cp'}", "-q"]
    sql = "SELECT volume / 2 AS half FROM ticks ORDER BY event_time"
    assert main([*common, sql]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    (line,) = err.splitlines()
    assert line.startswith("error: query: ") and "/" in line and "--dialect duckdb" in line
    assert main([*common, "--dialect", "duckdb", "--format", "csv", sql]) == 0
    out, err = capsys.readouterr()
    assert out.split() == ["half", "2.5", "3.5"]
    # The Athena way to the same numbers is translated, not refused.
    assert main([*common, "--format", "csv", "SELECT CAST(volume AS DOUBLE) / 2 AS half FROM ticks ORDER BY 1"]) == 0
    assert capsys.readouterr().out.split() == ["half", "2.5", "3.5"]


def test_the_query_comes_from_a_file_or_stdin_and_trino_takes_athena_sql_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import io

    from jobs.lake.query import main

    t0 = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)
    write_ticks(tmp_path, [("SYM001", t0, 10.0, 5), ("SYM002", t0, 11.0, 7)])
    common = ["--set", f"storage.root={tmp_path}", "--set", f"storage.checkpoint_root={tmp_path / 'cp'}", "-q"]
    query = tmp_path / "volumes.sql"
    query.write_text("-- the volume of each symbol\nSELECT symbol, volume FROM ticks ORDER BY symbol\n")
    assert main([*common, "--format", "csv", "-f", str(query)]) == 0
    assert capsys.readouterr().out.split() == ["symbol,volume", "SYM001,5", "SYM002,7"]
    monkeypatch.setattr("sys.stdin", io.StringIO(query.read_text()))
    assert main([*common, "--format", "csv", "-f", "-"]) == 0
    assert capsys.readouterr().out.split() == ["symbol,volume", "SYM001,5", "SYM002,7"]

    for refused, why in (
        (["--dialect", "duckdb"], "--dialect duckdb needs --engine duckdb"),
        (["--substitute-windows"], "--substitute-windows needs --engine duckdb"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            main([*common, "--engine", "trino", *refused, "SELECT 1"])
        assert exit_info.value.code == 2
        assert why in capsys.readouterr().err


def test_a_query_file_that_cannot_be_read_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from jobs.lake.query import main

    missing = tmp_path / "nowhere.sql"
    with pytest.raises(SystemExit) as exit_info:
        main(["--set", f"storage.root={tmp_path}", "-f", str(missing)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"error: --file {missing}: cannot read it (No such file or directory)" in err
    assert "Traceback" not in err
