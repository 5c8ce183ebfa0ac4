"""Statistical and structural properties of the synthetic market (fixed seeds: these cannot flake)."""

from __future__ import annotations

from zoneinfo import ZoneInfo

import numpy as np
import pytest

from simulator.market import (
    SECONDS_PER_YEAR,
    Market,
    MarketSpec,
    SymbolSpec,
    TickBatch,
    build_symbol_specs,
    intraday_profile,
    symbol_names,
)
from simulator.messages import Encoder, decode, parse_iso_time

KOLKATA = ZoneInfo("Asia/Kolkata")
START = parse_iso_time("2026-01-05T09:15:00+05:30")


def generate(spec: MarketSpec, count: int, seed: int = 11) -> TickBatch:
    batches = list(Market(spec, np.random.Generator(np.random.PCG64(seed))).batches(max_ticks=count))
    return TickBatch(
        [s for b in batches for s in b.symbols],
        np.concatenate([b.ts_ms for b in batches]),
        np.concatenate([b.close for b in batches]),
        np.concatenate([b.volume for b in batches]),
    )


def spec_for(
    names: list[str],
    drift: float,
    vol: float,
    interval_s: float,
    start_price: float | None = 100.0,
    volume_mean: float = 1000.0,
) -> MarketSpec:
    return MarketSpec(
        build_symbol_specs(names, drift, vol, start_price, volume_mean), START, round(interval_s * 1000), zone=KOLKATA
    )


def test_symbol_names_match_the_original_set() -> None:
    names = symbol_names(120)
    assert names[0] == "SYM001" and names[-1] == "SYM120" and len(set(names)) == 120


def test_timestamps_follow_the_simulated_clock() -> None:
    ticks = generate(spec_for(symbol_names(4), 0.0, 0.2, 30), 4 * 10)
    assert ticks.symbols[:5] == ["SYM001", "SYM002", "SYM003", "SYM004", "SYM001"]
    assert ticks.ts_ms[:5].tolist() == [START, START + 7500, START + 15000, START + 22500, START + 30000]
    assert np.all(np.diff(ticks.ts_ms) > 0)
    sym1 = ticks.ts_ms[np.array(ticks.symbols) == "SYM001"]
    assert np.all(np.diff(sym1) == 30_000)


def test_prices_positive_and_on_the_tick_grid_even_when_crashing() -> None:
    names = symbol_names(20)
    spec = MarketSpec(build_symbol_specs(names, -3.0, 3.0, 0.05, 1000.0), START, 3_600_000, zone=KOLKATA)
    ticks = generate(spec, 20 * 5000, seed=5)
    assert ticks.close.min() == 0.01  # the floor was reached, and held
    assert np.all(ticks.close > 0)
    cents = ticks.close * 100
    assert np.all(np.abs(cents - np.rint(cents)) < 1e-6)


def test_log_returns_have_the_configured_drift_and_volatility() -> None:
    drift, vol, n_symbols, per_symbol = 0.5, 0.3, 100, 3653  # ~10 years of daily ticks per symbol
    ticks = generate(
        spec_for(symbol_names(n_symbols), drift, vol, 86_400, start_price=100.0), n_symbols * per_symbol, seed=2026
    )
    prices = ticks.close.reshape(per_symbol, n_symbols)
    returns = np.diff(np.log(prices), axis=0)
    dt = 86_400 / SECONDS_PER_YEAR
    est_vol = returns.std(ddof=1) / np.sqrt(dt)
    est_drift = returns.mean() / dt + 0.5 * est_vol**2
    # Standard errors: vol 0.3/sqrt(2*365k) ~ 0.0004, drift 0.3/sqrt(1000 years) ~ 0.0095.
    assert est_vol == pytest.approx(vol, abs=0.005)
    assert est_drift == pytest.approx(drift, abs=0.05)
    # Per-symbol overrides are honoured.
    specs = (SymbolSpec("CALM", 0.0, 0.05, 100.0, 1000.0), SymbolSpec("WILD", 0.0, 0.8, 100.0, 1000.0))
    pair = generate(MarketSpec(specs, START, 86_400_000, zone=KOLKATA), 2 * 5000, seed=9)
    pair_returns = np.diff(np.log(pair.close.reshape(5000, 2)), axis=0)
    assert pair_returns[:, 0].std() / np.sqrt(dt) == pytest.approx(0.05, rel=0.05)
    assert pair_returns[:, 1].std() / np.sqrt(dt) == pytest.approx(0.8, rel=0.05)


def test_volumes_are_positive_heavy_tailed_integers_with_a_u_shaped_day() -> None:
    # One tick per minute for 100 symbols over 20 days.
    ticks = generate(spec_for(symbol_names(100), 0.0, 0.2, 60), 100 * 1440 * 20, seed=77)
    assert ticks.volume.dtype == np.int64 and ticks.volume.min() >= 1
    local_minute = ((ticks.ts_ms // 1000 + 19_800) % 86_400) // 60  # Kolkata is UTC+05:30
    opening = ticks.volume[(local_minute >= 9 * 60 + 15) & (local_minute < 9 * 60 + 45)].mean()
    midday = ticks.volume[(local_minute >= 12 * 60) & (local_minute < 12 * 60 + 45)].mean()
    closing = ticks.volume[(local_minute >= 15 * 60) & (local_minute < 15 * 60 + 30)].mean()
    night = ticks.volume[(local_minute >= 1 * 60) & (local_minute < 5 * 60)].mean()
    assert opening > 3 * midday and closing > 3 * midday
    assert midday > night
    session = ticks.volume[(local_minute >= 9 * 60 + 15) & (local_minute < 15 * 60 + 30)]
    assert session.mean() == pytest.approx(1000, rel=0.05)  # the profile averages to volume_mean
    assert np.percentile(session, 99.9) > 8 * np.median(session)  # heavy tail


def test_intraday_profile_shape() -> None:
    spec = spec_for(["A"], 0.0, 0.2, 60)
    day = START - (9 * 3600 + 15 * 60) * 1000  # local midnight
    at = np.array([day + m * 60_000 for m in (9 * 60 + 15, 12 * 60 + 22, 15 * 60 + 29, 3 * 60)], dtype=np.int64)
    profile = intraday_profile(at, spec)
    assert profile[0] == pytest.approx(2.5 / (0.5 + 2 / 3))
    assert profile[1] == pytest.approx(0.5 / (0.5 + 2 / 3), rel=1e-3)
    assert profile[2] == pytest.approx(2.5 / (0.5 + 2 / 3), rel=0.02)
    assert profile[3] == 0.2


def test_same_seed_same_ticks_and_shorter_runs_are_prefixes() -> None:
    spec = spec_for(symbol_names(7), 0.05, 0.25, 30, start_price=None)
    long, again, short = generate(spec, 20_000, 3), generate(spec, 20_000, 3), generate(spec, 1_234, 3)
    other = generate(spec, 20_000, 4)
    assert np.array_equal(long.close, again.close) and np.array_equal(long.volume, again.volume)
    assert np.array_equal(long.close[:1_234], short.close) and long.symbols[:1_234] == short.symbols
    assert not np.array_equal(long.close, other.close)


def test_ticks_before_counts_a_duration() -> None:
    market = Market(spec_for(symbol_names(4), 0.0, 0.2, 30), np.random.Generator(np.random.PCG64(1)))
    assert market.ticks_before(START) == 0
    assert market.ticks_before(START + 1) == 1
    assert market.ticks_before(START + 60_000) == 8
    assert market.ticks_before(START + 60_001) == 9


def test_encoded_messages_decode_to_the_ticks() -> None:
    ticks = generate(spec_for(symbol_names(3), 0.0, 0.2, 30), 30)
    for fmt in ("v1", "legacy"):
        values = Encoder(fmt, KOLKATA).encode_batch(ticks.symbols, ticks.ts_ms, ticks.close, ticks.volume)
        for index, value in enumerate(values):
            tick = decode(value, KOLKATA)
            assert (tick.symbol, tick.ts_ms, tick.close, tick.volume) == (
                ticks.symbols[index],
                int(ticks.ts_ms[index]),
                float(ticks.close[index]),
                int(ticks.volume[index]),
            )
    first = Encoder("v1", KOLKATA).encode_batch(
        ["SYM001"], np.array([START + 123]), np.array([187.2]), np.array([1200])
    )[0]
    assert first == b'{"v":1,"symbol":"SYM001","ts":"2026-01-05T03:45:00.123Z","close":187.2,"volume":1200}'
    legacy = Encoder("legacy", KOLKATA).encode_batch(
        ["SYM001"], np.array([START + 999]), np.array([525.6]), np.array([4194])
    )[0]
    assert legacy == b'{"symbol":"SYM001","Date-Time":"2026-01-05 09:15:00","Close":525.6,"Volume":4194}'
