"""v_signal_summary and v_crossovers equal an independent pandas aggregation of the signal definition.

The views run on DuckDB (`jobs.lake.query.run_query`) over a `ticks` Delta table written here with deltalake;
the expected rows are computed in pandas from the README's definition, so swapping Buy/Sell/Hold counts,
golden/death crosses, first/last close or the day boundary makes these tests fail.
"""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from jobs.lake.query import run_query
from jobs.pipeline.config import REPO_ROOT, AppConfig, load_config
from tests.support import write_ticks as _write_ticks

SHORT, LONG = 9, 21
# 23:00 UTC: each symbol's ticks span two UTC days, so the per-day grouping is exercised.
START = datetime(2026, 3, 2, 22, 0, tzinfo=UTC)


def _rows(seed: int = 12, symbols: int = 4, ticks: int = 140) -> list[tuple[str, datetime, float, int]]:
    """A seeded random walk per symbol with regime changes, so every signal and both crosses occur."""
    rng = random.Random(seed)
    rows = []
    for index in range(symbols):
        symbol = f"AGG{index:02d}"
        price = 50.0 + 10 * index
        for step in range(ticks):
            drift = 0.6 if (step // 25) % 2 == 0 else -0.6
            price = max(1.0, price + drift + rng.uniform(-1.5, 1.5))
            at = START + timedelta(minutes=step, seconds=index)
            rows.append((symbol, at, round(price, 2), rng.randint(100, 2000)))
    rng.shuffle(rows)  # storage order must not matter
    return rows


def _config(root: Path) -> AppConfig:
    return load_config(
        REPO_ROOT / "conf" / "local.yaml",
        [f"storage.root={root}", f"storage.checkpoint_root={root / 'checkpoints'}"],
        environ={},
    )


def _expected_signals(rows: list[tuple[str, datetime, float, int]]) -> pd.DataFrame:
    """The signal definition in pandas: exact window sums (math.fsum), previous tick by shift."""
    frame = pd.DataFrame(rows, columns=["symbol", "event_time", "close", "volume"])
    frame = frame.sort_values(["symbol", "event_time"]).reset_index(drop=True)
    parts = []
    for _, group in frame.groupby("symbol", sort=True):
        group = group.copy()
        closes = group["close"].tolist()
        group["sma_short"] = [
            math.fsum(closes[i + 1 - SHORT : i + 1]) / SHORT if i + 1 >= SHORT else math.nan for i in range(len(closes))
        ]
        group["sma_long"] = [
            math.fsum(closes[i + 1 - LONG : i + 1]) / LONG if i + 1 >= LONG else math.nan for i in range(len(closes))
        ]
        group["prev_volume"] = group["volume"].shift(1)
        rising = group["volume"] > group["prev_volume"]
        above = group["sma_short"] > group["sma_long"]
        below = group["sma_short"] < group["sma_long"]
        group["signal"] = "Hold"
        group.loc[above & rising, "signal"] = "Buy"
        group.loc[below & rising, "signal"] = "Sell"
        previous_short, previous_long = group["sma_short"].shift(1), group["sma_long"].shift(1)
        known = group[["sma_short", "sma_long"]].notna().all(axis=1) & previous_short.notna() & previous_long.notna()
        group["crossover"] = None
        group.loc[known & (previous_short <= previous_long) & above, "crossover"] = "golden_cross"
        group.loc[known & (previous_short >= previous_long) & below, "crossover"] = "death_cross"
        parts.append(group)
    out = pd.concat(parts, ignore_index=True)
    out["event_date"] = out["event_time"].map(lambda at: at.date())
    return out


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> tuple[AppConfig, pd.DataFrame]:
    root = tmp_path_factory.mktemp("aggregates")
    rows = _rows()
    _write_ticks(root, rows)
    expected = _expected_signals(rows)
    both = expected.dropna(subset=["sma_short", "sma_long"])
    # No near-ties between the averages: a comparison cannot flip on rounding between engines.
    assert (both["sma_short"] - both["sma_long"]).abs().min() > 1e-6
    return _config(root), expected


def test_v_signal_summary_equals_a_pandas_aggregation_per_symbol_and_day(lake) -> None:
    config, signals = lake
    grouped = signals.groupby(["symbol", "event_date"], sort=True)
    expected = pd.DataFrame(
        {
            "ticks": grouped.size(),
            "buy_signals": grouped["signal"].agg(lambda s: int((s == "Buy").sum())),
            "sell_signals": grouped["signal"].agg(lambda s: int((s == "Sell").sum())),
            "hold_signals": grouped["signal"].agg(lambda s: int((s == "Hold").sum())),
            "golden_crosses": grouped["crossover"].agg(lambda s: int((s == "golden_cross").sum())),
            "death_crosses": grouped["crossover"].agg(lambda s: int((s == "death_cross").sum())),
            "first_event_time": grouped["event_time"].min(),
            "last_event_time": grouped["event_time"].max(),
            "first_close": grouped.apply(lambda g: g.loc[g["event_time"].idxmin(), "close"], include_groups=False),
            "last_close": grouped.apply(lambda g: g.loc[g["event_time"].idxmax(), "close"], include_groups=False),
        }
    ).reset_index()
    expected["crossovers"] = expected["golden_crosses"] + expected["death_crosses"]
    # The data can tell the columns apart: a swap of Buy/Sell, golden/death or first/last would show.
    assert (expected["buy_signals"] != expected["sell_signals"]).any()
    assert (expected["golden_crosses"] != expected["death_crosses"]).any()
    assert (expected["first_close"] != expected["last_close"]).all()
    # Every (symbol, day) has a crossover: a day without any is the case of the test below.
    assert (expected["crossovers"] > 0).all()
    assert expected["golden_crosses"].sum() > 0 and expected["death_crosses"].sum() > 0
    assert expected["buy_signals"].sum() > 0 and expected["sell_signals"].sum() > 0
    assert len(expected) == 8  # 4 symbols x 2 UTC days

    actual = run_query(config, "SELECT * FROM v_signal_summary ORDER BY symbol, event_date")
    assert list(actual.columns) == [
        "symbol",
        "event_date",
        "ticks",
        "buy_signals",
        "sell_signals",
        "hold_signals",
        "golden_crosses",
        "death_crosses",
        "crossovers",
        "first_event_time",
        "last_event_time",
        "first_close",
        "last_close",
    ]
    actual = actual.assign(
        event_date=pd.to_datetime(actual["event_date"]).dt.date,
        first_event_time=pd.to_datetime(actual["first_event_time"], utc=True),
        last_event_time=pd.to_datetime(actual["last_event_time"], utc=True),
    )
    expected = expected.assign(
        first_event_time=pd.to_datetime(expected["first_event_time"], utc=True),
        last_event_time=pd.to_datetime(expected["last_event_time"], utc=True),
    )
    counts = ["ticks", "buy_signals", "sell_signals", "hold_signals", "golden_crosses", "death_crosses", "crossovers"]
    assert actual[["symbol", "event_date"]].values.tolist() == expected[["symbol", "event_date"]].values.tolist()
    for column in counts:
        assert actual[column].astype("int64").tolist() == expected[column].astype("int64").tolist(), column
    for column in ("first_event_time", "last_event_time"):
        left = actual[column].astype("datetime64[us, UTC]").tolist()
        assert left == expected[column].astype("datetime64[us, UTC]").tolist(), column
    for column in ("first_close", "last_close"):
        assert actual[column].tolist() == pytest.approx(expected[column].tolist(), abs=1e-9), column


def test_v_crossovers_lists_exactly_the_pandas_crosses(lake) -> None:
    config, signals = lake
    expected = signals[signals["crossover"].notna()].sort_values(["symbol", "event_time"]).reset_index(drop=True)
    assert set(expected["crossover"]) == {"golden_cross", "death_cross"}
    actual = run_query(config, "SELECT * FROM v_crossovers ORDER BY symbol, event_time")
    assert list(actual.columns) == [
        "symbol",
        "event_time",
        "event_date",
        "crossover",
        "close",
        "volume",
        "sma_short",
        "sma_long",
        "signal",
    ]
    assert len(actual) == len(expected)
    assert actual["symbol"].tolist() == expected["symbol"].tolist()
    assert (
        pd.to_datetime(actual["event_time"], utc=True).astype("datetime64[us, UTC]").tolist()
        == pd.to_datetime(expected["event_time"], utc=True).astype("datetime64[us, UTC]").tolist()
    )
    assert pd.to_datetime(actual["event_date"]).dt.date.tolist() == expected["event_date"].tolist()
    assert actual["crossover"].tolist() == expected["crossover"].tolist()
    assert actual["signal"].tolist() == expected["signal"].tolist()
    assert actual["volume"].astype("int64").tolist() == expected["volume"].astype("int64").tolist()
    for column in ("close", "sma_short", "sma_long"):
        assert actual[column].tolist() == pytest.approx(expected[column].tolist(), abs=1e-9), column
    # Golden: the short average is above the long one on the crossing tick; death: below.
    golden = actual["crossover"] == "golden_cross"
    assert (actual.loc[golden, "sma_short"] > actual.loc[golden, "sma_long"]).all()
    assert (actual.loc[~golden, "sma_short"] < actual.loc[~golden, "sma_long"]).all()


def test_v_signal_summary_counts_zero_crosses_on_a_day_without_any(tmp_path: Path) -> None:
    # 12 ticks: no long average, so crossover is NULL on every row of the day.
    rows = [("QUIET", START + timedelta(minutes=step), 10.0 + step, 100 + step) for step in range(12)]
    _write_ticks(tmp_path, rows)
    actual = run_query(_config(tmp_path), "SELECT * FROM v_signal_summary")
    assert len(actual) == 1
    row = actual.iloc[0]
    assert (row["ticks"], row["hold_signals"]) == (12, 12)
    crosses = [row["golden_crosses"], row["death_crosses"], row["crossovers"]]
    assert [None if pd.isna(value) else int(value) for value in crosses] == [0, 0, 0]
