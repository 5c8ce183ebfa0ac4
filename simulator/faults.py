"""Seeded fault injection: turns a stream of clean ticks into the records a real feed delivers.

Faults other than out-of-order are *extra* records after a clean tick, so `clean` stays the number of
distinct valid ticks and the summary tells a test exactly what the streaming job must keep, drop as a
duplicate or quarantine (and under which reason code).
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

import numpy as np

from simulator.market import TickBatch
from simulator.messages import Encoder, Tick, dump

MALFORMED_KINDS = (
    "not_json",
    "missing_field",
    "bad_type",
    "non_positive_price",
    "non_finite",
    "unknown_version",
    "oversized",
)
FAULT_KINDS = ("duplicates", "conflicts", "out_of_order", "too_late", "malformed")
TOO_LATE_MARGIN_MS = 3_600_000  # a too-late tick is older than the horizon by one more hour
_UNIFORM_BLOCK = 65_536

Record = tuple[bytes, bytes]  # (key, value)


@dataclass(frozen=True)
class FaultRates:
    duplicates: float = 0.0
    conflicts: float = 0.0
    out_of_order: float = 0.0
    too_late: float = 0.0
    malformed: float = 0.0
    max_delay_ms: int = 120_000
    lateness_ms: int = 3_600_000
    max_message_bytes: int = 4096

    def __post_init__(self) -> None:
        for name in FAULT_KINDS:
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"--{name.replace('_', '-')} must be a probability between 0 and 1, not {value}")
        if self.out_of_order > 0 and not 0 < self.max_delay_ms < self.lateness_ms:
            raise ValueError(
                f"--max-delay ({self.max_delay_ms / 1000:g} s) must be positive and below the allowed lateness "
                f"({self.lateness_ms / 1000:g} s, signals.allowed_lateness_seconds), or the delayed ticks are too late"
            )

    @property
    def active(self) -> bool:
        return any(getattr(self, name) > 0 for name in FAULT_KINDS)


def empty_counts() -> dict[str, int]:
    return {
        "clean": 0,
        "duplicates": 0,
        "conflicts": 0,
        "out_of_order": 0,
        "too_late": 0,
        **{kind: 0 for kind in MALFORMED_KINDS},
    }


@dataclass(order=True)
class _Held:
    release_ms: int
    seq: int
    tick: Tick = field(compare=False)
    records: list[Record] = field(compare=False)
    late: bool = field(compare=False)


class _Uniforms:
    """One stream of uniforms drawn in fixed blocks, so results do not depend on how the input is sliced."""

    def __init__(self, rng: np.random.Generator) -> None:
        self._rng = rng
        self._block: list[float] = []
        self._index = 0

    def next(self) -> float:
        if self._index == len(self._block):
            self._block = self._rng.random(_UNIFORM_BLOCK).tolist()
            self._index = 0
        value = self._block[self._index]
        self._index += 1
        return value


class FaultInjector:
    def __init__(self, rates: FaultRates, rng: np.random.Generator, encoder: Encoder) -> None:
        self.rates = rates
        self.encoder = encoder
        self.counts = empty_counts()
        self._uniform = _Uniforms(rng)
        self._held: list[_Held] = []
        self._seq = 0
        self._latest: dict[str, int] = {}

    def process(self, batch: TickBatch, keys: list[bytes], values: list[bytes]) -> list[Record]:
        out: list[Record] = []
        u = self._uniform.next
        rates = self.rates
        closes, volumes, stamps = batch.close.tolist(), batch.volume.tolist(), batch.ts_ms.tolist()
        for index, symbol in enumerate(batch.symbols):
            ts = stamps[index]
            while self._held and self._held[0].release_ms < ts:
                self._release(heapq.heappop(self._held), out)
            tick = Tick(symbol, ts, closes[index], volumes[index])
            key, value = keys[index], values[index]
            self.counts["clean"] += 1
            records = [(key, value)]
            # Fixed draw order per tick keeps the sequence reproducible.
            hold, dup, conflict, late, bad = (
                u() < rates.out_of_order,
                u() < rates.duplicates,
                u() < rates.conflicts,
                u() < rates.too_late,
                u() < rates.malformed,
            )
            if dup:
                records.append((key, value))
                self.counts["duplicates"] += 1
            if conflict:
                records.append((key, self._conflicting(tick)))
                self.counts["conflicts"] += 1
            if bad:
                records.append((key, self._malformed(tick)))
            if hold:
                release = ts + max(1, int(u() * rates.max_delay_ms))
                self._seq += 1
                heapq.heappush(self._held, _Held(release, self._seq, tick, records, late))
                continue
            self._emit(tick, records, late, out)
        return out

    def finish(self) -> list[Record]:
        """Release every held-back tick (end of stream)."""
        out: list[Record] = []
        while self._held:
            self._release(heapq.heappop(self._held), out)
        return out

    def _release(self, held: _Held, out: list[Record]) -> None:
        if self._latest.get(held.tick.symbol, held.tick.ts_ms) > held.tick.ts_ms:
            self.counts["out_of_order"] += 1
        self._emit(held.tick, held.records, held.late, out)

    def _emit(self, tick: Tick, records: list[Record], late: bool, out: list[Record]) -> None:
        out.extend(records)
        latest = max(self._latest.get(tick.symbol, tick.ts_ms), tick.ts_ms)
        self._latest[tick.symbol] = latest
        if late:
            old = Tick(tick.symbol, latest - self.rates.lateness_ms - TOO_LATE_MARGIN_MS, tick.close, tick.volume)
            out.append((records[0][0], self.encoder.encode(old)))
            self.counts["too_late"] += 1

    def _conflicting(self, tick: Tick) -> bytes:
        cents = round(tick.close * 100)
        delta = 1 + int(self._uniform.next() * max(1, cents // 50))  # 1 cent to ~2 %
        other = cents + delta if self._uniform.next() < 0.5 or cents - delta < 1 else cents - delta
        return self.encoder.encode(Tick(tick.symbol, tick.ts_ms, other / 100, tick.volume))

    def _malformed(self, tick: Tick) -> bytes:
        kind = MALFORMED_KINDS[min(int(self._uniform.next() * len(MALFORMED_KINDS)), len(MALFORMED_KINDS) - 1)]
        self.counts[kind] += 1
        fields = self.encoder.fields(tick)
        close, volume = self.encoder.close_field, self.encoder.volume_field
        if kind == "not_json":
            text = dump(fields)
            return text[: max(1, len(text) // 2)]
        if kind == "missing_field":
            names = list(fields)
            droppable = [name for name in names if name != "v"]
            del fields[droppable[min(int(self._uniform.next() * len(droppable)), len(droppable) - 1)]]
        elif kind == "bad_type":
            fields[close if self._uniform.next() < 0.5 else volume] = "n/a"
        elif kind == "non_positive_price":
            fields[close] = -tick.close if self._uniform.next() < 0.5 else 0
        elif kind == "non_finite":
            fields[close] = float("nan")
        elif kind == "unknown_version":
            fields = {"v": 2, **{name: value for name, value in self.encoder.fields(tick).items() if name != "v"}}
            if "ts" not in fields:  # legacy fields become a well-formed v2 record: only the version is wrong
                fields = {
                    "v": 2,
                    "symbol": tick.symbol,
                    "ts": Encoder("v1", self.encoder.zone).fields(tick)["ts"],
                    "close": tick.close,
                    "volume": tick.volume,
                }
        elif kind == "oversized":
            base = dump(fields)
            fields["padding"] = "x" * (self.rates.max_message_bytes - len(base) + 1 + int(self._uniform.next() * 64))
        return dump(fields)
