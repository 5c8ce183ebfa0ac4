"""Synthetic market: geometric Brownian motion prices and heavy-tailed, U-shaped intraday volumes.

Everything is generated in vectorised chunks of whole rounds (one tick per symbol) from a single
numpy Generator, so a seed fixes the whole sequence, independently of pacing or of `--count`
(a shorter run is a prefix of a longer one).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from zoneinfo import ZoneInfo

import numpy as np

from simulator.messages import SYMBOL_PATTERN, local_offsets_ms

SECONDS_PER_YEAR = 365.25 * 86_400
TICK_SIZE_CENTS = 1  # prices are rounded to 0.01
CHUNK_TICKS = 8192
START_PRICE_RANGE = (20.0, 500.0)
# Intraday volume profile inside the session: a + b * (2x - 1)^2 over the session fraction x, normalised to
# a mean of 1, so the open and the close are 5x busier than midday; outside the session volumes are quiet.
_U_BASE, _U_CURVE = 0.5, 2.0
OFF_SESSION_FACTOR = 0.2


@dataclass(frozen=True)
class SymbolSpec:
    symbol: str
    drift: float
    volatility: float
    start_price: float | None
    volume_mean: float


@dataclass(frozen=True)
class MarketSpec:
    symbols: tuple[SymbolSpec, ...]
    start_ms: int
    interval_ms: int
    volume_tail: float = 2.5
    session_open_s: int = 9 * 3600 + 15 * 60
    session_close_s: int = 15 * 3600 + 30 * 60
    zone: ZoneInfo = ZoneInfo("Asia/Kolkata")

    def __post_init__(self) -> None:
        if not self.symbols:
            raise ValueError("no symbols")
        if self.interval_ms < 1:
            raise ValueError("the interval per symbol must be at least 1 ms")
        if self.volume_tail <= 1:
            raise ValueError("volume_tail must be > 1")
        for spec in self.symbols:
            if not SYMBOL_PATTERN.match(spec.symbol):
                raise ValueError(f"symbol {spec.symbol!r} is not 1-16 characters of [A-Z0-9._-]")


@dataclass
class TickBatch:
    """Ticks in emission order (column arrays)."""

    symbols: list[str]
    ts_ms: np.ndarray
    close: np.ndarray
    volume: np.ndarray

    def __len__(self) -> int:
        return len(self.symbols)

    def slice(self, start: int, stop: int) -> TickBatch:
        return TickBatch(
            self.symbols[start:stop], self.ts_ms[start:stop], self.close[start:stop], self.volume[start:stop]
        )


def symbol_names(count: int) -> list[str]:
    """SYM001..SYMnnn, the original system's naming."""
    width = max(3, len(str(count)))
    return [f"SYM{index:0{width}d}" for index in range(1, count + 1)]


def intraday_profile(ts_ms: np.ndarray, spec: MarketSpec) -> np.ndarray:
    """Volume multiplier at each instant: U-shaped (mean 1) inside the session, OFF_SESSION_FACTOR outside."""
    local_s = ((ts_ms + local_offsets_ms(ts_ms, spec.zone)) // 1000) % 86_400
    length = spec.session_close_s - spec.session_open_s
    fraction = (local_s - spec.session_open_s) / length
    inside = (fraction >= 0) & (fraction < 1)
    u_shape = (_U_BASE + _U_CURVE * (2 * fraction - 1) ** 2) / (_U_BASE + _U_CURVE / 3)
    return np.where(inside, u_shape, OFF_SESSION_FACTOR)


class Market:
    """An endless, seeded stream of ticks: round r, symbol i at start + r*interval + i*interval/n."""

    def __init__(self, spec: MarketSpec, rng: np.random.Generator) -> None:
        self.spec = spec
        self.rng = rng
        count = len(spec.symbols)
        self.names = [s.symbol for s in spec.symbols]
        dt = spec.interval_ms / 1000 / SECONDS_PER_YEAR
        drift = np.array([s.drift for s in spec.symbols])
        self._vol = np.array([s.volatility for s in spec.symbols])
        self._mean_step = (drift - 0.5 * self._vol**2) * dt
        self._step_scale = self._vol * math.sqrt(dt)
        low, high = np.log(START_PRICE_RANGE[0]), np.log(START_PRICE_RANGE[1])
        drawn = np.exp(rng.uniform(low, high, count))  # drawn for all symbols so overrides do not shift the stream
        self._log_price = np.log([s.start_price or p for s, p in zip(spec.symbols, drawn, strict=True)])
        self._volume_mean = np.array([s.volume_mean for s in spec.symbols])
        self._offsets = (np.arange(count, dtype=np.int64) * spec.interval_ms) // count
        self._rounds_per_chunk = max(1, CHUNK_TICKS // count)
        self._next_round = 0

    def ticks_before(self, end_ms: int) -> int:
        """How many ticks have a timestamp earlier than end_ms."""
        elapsed = end_ms - self.spec.start_ms
        if elapsed <= 0:
            return 0
        full_rounds, rest = divmod(elapsed, self.spec.interval_ms)
        return int(full_rounds * len(self.names) + np.count_nonzero(self._offsets < rest))

    def _chunk(self) -> TickBatch:
        spec, rounds, count = self.spec, self._rounds_per_chunk, len(self.names)
        normals = self.rng.standard_normal((rounds, count))
        pareto = self.rng.pareto(spec.volume_tail, (rounds, count))
        steps = self._mean_step + self._step_scale * normals
        if self._next_round == 0:
            steps[0] = 0.0  # the first tick is at the start price
        log_prices = self._log_price + np.cumsum(steps, axis=0)
        self._log_price = log_prices[-1].copy()
        round_index = np.arange(self._next_round, self._next_round + rounds, dtype=np.int64)
        ts = spec.start_ms + round_index[:, None] * spec.interval_ms + self._offsets[None, :]
        self._next_round += rounds
        ts_flat = ts.reshape(-1)
        cents = np.maximum(np.rint(np.exp(log_prices.reshape(-1)) * 100), TICK_SIZE_CENTS)
        # Classical Pareto (Lomax + 1) scaled to mean 1, times the symbol mean and the time-of-day profile.
        shape = spec.volume_tail
        relative = (pareto.reshape(-1) + 1.0) * (shape - 1) / shape
        mean = np.tile(self._volume_mean, rounds) * intraday_profile(ts_flat, spec)
        volume = np.maximum(np.rint(mean * relative), 1).astype(np.int64)
        return TickBatch(self.names * rounds, ts_flat, cents / 100, volume)

    def batches(self, max_ticks: int | None = None, end_ms: int | None = None) -> Iterator[TickBatch]:
        """Chunks of ticks, stopping after max_ticks ticks or before end_ms (whichever comes first)."""
        limit = max_ticks
        if end_ms is not None:
            before = self.ticks_before(end_ms)
            limit = before if limit is None else min(limit, before)
        produced = 0
        while limit is None or produced < limit:
            chunk = self._chunk()
            if limit is not None and produced + len(chunk) > limit:
                chunk = chunk.slice(0, limit - produced)
            produced += len(chunk)
            yield chunk


def build_symbol_specs(
    names: Sequence[str],
    drift: float,
    volatility: float,
    start_price: float | None,
    volume_mean: float,
    overrides: dict[str, dict[str, float | None]] | None = None,
) -> tuple[SymbolSpec, ...]:
    overrides = overrides or {}
    specs = []
    for name in names:
        own = {key: value for key, value in overrides.get(name, {}).items() if value is not None}
        specs.append(
            SymbolSpec(
                symbol=name,
                drift=float(own.get("drift", drift)),
                volatility=float(own.get("volatility", volatility)),
                start_price=own.get("start_price", start_price),
                volume_mean=float(own.get("volume_mean", volume_mean)),
            )
        )
    return tuple(specs)
