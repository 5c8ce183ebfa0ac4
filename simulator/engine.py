"""The loop shared by `run` and `replay`: encode, inject faults, pace, send, report progress, summarise."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from simulator.faults import MALFORMED_KINDS, FaultInjector, empty_counts
from simulator.market import TickBatch
from simulator.messages import Encoder, utc_iso

PACE_SLICE_SECONDS = 0.05  # wall time covered by one paced slice: smooth enough, few sleeps
RATE_LINE_SECONDS = 5.0


class Sink(Protocol):
    attempted: int
    sent: int
    failed: int
    errors: list[str]

    def send_many(self, records: Sequence[tuple[bytes, bytes]]) -> None: ...

    def flush(self) -> None: ...


class MemorySink:
    """Collects records in memory (dry runs, tests of the pure pipeline)."""

    def __init__(self) -> None:
        self.records: list[tuple[bytes, bytes]] = []
        self.attempted = self.sent = self.failed = 0
        self.errors: list[str] = []

    def send_many(self, records: Sequence[tuple[bytes, bytes]]) -> None:
        self.records.extend(records)
        self.attempted += len(records)
        self.sent += len(records)

    def flush(self) -> None:
        return None


@dataclass
class StreamOptions:
    speed: float | None = None  # simulated seconds per wall second; None: as fast as possible
    total_ticks: int | None = None  # known length: progress bar; None: periodic rate lines
    quiet: bool = False
    progress_stream: Any = field(default_factory=lambda: sys.stderr)


class _KeyCache(dict[str, bytes]):
    def __missing__(self, symbol: str) -> bytes:
        key = symbol.encode()
        self[symbol] = key
        return key


class Pacer:
    """Maps simulated time to wall time at a fixed speed; sleeps until a slice is due (wakes on stop)."""

    def __init__(self, speed: float | None, stop: threading.Event) -> None:
        self.speed = speed
        self.stop = stop
        self._origin: tuple[int, float] | None = None

    def slices(self, batch: TickBatch) -> Iterator[TickBatch]:
        if self.speed is None or len(batch) == 0:
            yield batch
            return
        span_ms = max(1, int(PACE_SLICE_SECONDS * 1000 * self.speed))
        start = 0
        while start < len(batch):
            stop = int(np.searchsorted(batch.ts_ms, batch.ts_ms[start] + span_ms, side="left"))
            stop = max(stop, start + 1)
            yield batch.slice(start, stop)
            start = stop

    def wait(self, ts_ms: int) -> None:
        if self.speed is None:
            return
        if self._origin is None:
            self._origin = (ts_ms, time.monotonic())
        sim_origin, wall_origin = self._origin
        due = wall_origin + (ts_ms - sim_origin) / 1000 / self.speed
        delay = due - time.monotonic()
        if delay > 0:
            self.stop.wait(delay)


class Progress:
    def __init__(self, options: StreamOptions) -> None:
        self.options = options
        self._bar = None
        self._last_line = time.monotonic()
        self._last_count = 0
        stream = options.progress_stream
        if options.total_ticks is not None and not options.quiet and getattr(stream, "isatty", lambda: False)():
            from rich.console import Console
            from rich.progress import Progress as Bar

            self._bar = Bar(console=Console(file=stream), transient=False)
            self._task = self._bar.add_task("ticks", total=options.total_ticks)
            self._bar.start()

    def update(self, ticks: int, done: int, sink: Sink, last_ts: int | None) -> None:
        if self._bar is not None:
            self._bar.advance(self._task, ticks)
            return
        if self.options.quiet or self.options.total_ticks is not None:
            return
        now = time.monotonic()
        if now - self._last_line >= RATE_LINE_SECONDS:
            rate = (done - self._last_count) / (now - self._last_line)
            at = utc_iso(last_ts) if last_ts is not None else "-"
            print(
                f"ticks {done:,}  {rate:,.0f}/s  sent {sink.sent:,}  failed {sink.failed:,}  simulated {at}",
                file=self.options.progress_stream,
                flush=True,
            )
            self._last_line, self._last_count = now, done

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()


def stream_ticks(
    batches: Iterable[TickBatch],
    encoder: Encoder,
    sink: Sink,
    injector: FaultInjector | None = None,
    options: StreamOptions | None = None,
    stop: threading.Event | None = None,
) -> dict[str, Any]:
    """Send every tick (and injected fault) to the sink; returns the summary (see `summary`)."""
    options = options or StreamOptions()
    stop = stop or threading.Event()
    pacer = Pacer(options.speed, stop)
    progress = Progress(options)
    keys = _KeyCache()
    ticks = 0
    first_ts: int | None = None
    last_ts: int | None = None
    started = time.perf_counter()
    try:
        for batch in batches:
            for piece in pacer.slices(batch):
                if stop.is_set():
                    break
                pacer.wait(int(piece.ts_ms[0]))
                if stop.is_set():
                    break
                values = encoder.encode_batch(piece.symbols, piece.ts_ms, piece.close, piece.volume)
                piece_keys = [keys[symbol] for symbol in piece.symbols]
                records = (
                    injector.process(piece, piece_keys, values)
                    if injector
                    else list(zip(piece_keys, values, strict=True))
                )
                sink.send_many(records)
                ticks += len(piece)
                first_ts = int(piece.ts_ms[0]) if first_ts is None else first_ts
                last_ts = int(piece.ts_ms[-1])
                progress.update(len(piece), ticks, sink, last_ts)
            if stop.is_set():
                break
        if injector:
            sink.send_many(injector.finish())
    finally:
        progress.close()
        sink.flush()
    elapsed = time.perf_counter() - started
    counts = injector.counts if injector else {**empty_counts(), "clean": ticks}
    return summary(sink, counts, elapsed, first_ts, last_ts, stop.is_set())


def summary(
    sink: Sink, counts: dict[str, int], elapsed: float, first_ts: int | None, last_ts: int | None, stopped: bool
) -> dict[str, Any]:
    malformed = {kind: counts[kind] for kind in MALFORMED_KINDS}
    # Keyed by the streaming job's reject reasons (jobs.pipeline.tables.REJECT_REASONS).
    quarantined = {"conflicting_duplicate": counts["conflicts"], "too_late": counts["too_late"], **malformed}
    return {
        "messages": sink.attempted,
        "sent": sink.sent,
        "failed": sink.failed,
        "elapsed_seconds": round(elapsed, 3),
        "rate_per_second": round(sink.sent / elapsed, 1) if elapsed > 0 else 0.0,
        "ticks": counts["clean"],
        "faults": {
            "duplicates": counts["duplicates"],
            "conflicts": counts["conflicts"],
            "out_of_order": counts["out_of_order"],
            "too_late": counts["too_late"],
            "malformed": malformed,
        },
        # What the streaming job must end with: records read = ticks + duplicates + quarantined.
        "expected": {
            "ticks": counts["clean"],
            "duplicates": counts["duplicates"],
            "quarantined": sum(quarantined.values()),
            "quarantined_by_reason": quarantined,
        },
        "first_event_time": utc_iso(first_ts) if first_ts is not None else None,
        "last_event_time": utc_iso(last_ts) if last_ts is not None else None,
        "stopped_by_signal": stopped,
        "errors": list(sink.errors),
    }
