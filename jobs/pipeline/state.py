"""The streaming job's per-symbol state: held in the driver between micro-batches, persisted in `_signal_state`.

Per symbol (a `Watermark`): the newest event time processed (the lateness watermark) and two lower bounds for
the stored ticks a recomputation needs, so a batch reads only those:
- `tail`: the `sma_long`-th newest tick (or the first): enough for ticks after the watermark, the usual case;
- `context_start`: at or before the `sma_long`-th tick before the lateness horizon: enough for any late tick.
  It advances without reading anything: a `mark` (an earlier batch's watermark and tail) becomes the context
  start once the horizon has passed the mark's watermark (every tick up to it is then behind the horizon, and
  `sma_long` of them lie at or after its tail), and the current watermark and tail become the next mark.
- `recent`: the stored ticks from `tail` on themselves (the `sma_long` newest, newest first), so ticks after the
  watermark need no read of `ticks` at all: their context is these rows, and the next `recent` is merged in the
  driver from them and the batch's own newest ticks. None for a state written before they were kept (the job then
  reads them from `ticks` once).

Loaded once when the job starts, rewritten whole after every batch that accepted ticks (idempotently, with the
batch's id), so a batch needs no read of it. Times are kept as epoch microseconds: never a naive datetime in the
driver's time zone.

A row also records the batch that wrote it and its values before that batch, so a retried batch (same id after
a crash) sees the state as its first attempt saw it; and the settings it holds for, so a change of settings
between runs is detected instead of silently mixing windows (see `check_settings`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta

from pyspark.sql import Column, DataFrame, Row, SparkSession
from pyspark.sql import functions as F

from jobs.pipeline.config import SignalsConfig
from jobs.pipeline.tables import SIGNAL_STATE

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# A stored tick as the state keeps it: (event time in epoch micros, close, volume).
Tick = tuple[int, float, int]
# The state table's type of a list of ticks (times as epoch micros: never a timestamp read in the driver's zone).
TICKS_TYPE = "array<struct<event_micros:long,close:double,volume:long>>"


def utc_datetime(micros: int) -> datetime:
    """An aware UTC datetime, exact to the microsecond (Spark turns it into the same instant in any zone)."""
    return EPOCH + timedelta(microseconds=micros)


def utc_day(micros: int) -> date:
    return utc_datetime(micros).date()


def timestamp_literal(micros: int) -> Column:
    return F.lit(utc_datetime(micros))


class SettingsChanged(RuntimeError):
    """The state (and the signals) were built with other window settings than the configuration's."""


@dataclass(frozen=True)
class Watermark:
    """A symbol's position as of one batch (epoch micros; None: not known yet)."""

    last: int | None = None
    context_start: int | None = None
    tail: int | None = None
    mark_last: int | None = None
    mark_tail: int | None = None
    recent: tuple[Tick, ...] | None = None

    def advance(
        self, first: int, newest: int, tail: int, lateness_micros: int, recent: tuple[Tick, ...] | None = None
    ) -> Watermark:
        """The position after a batch that accepted ticks from `first` to `newest`; `tail` is the symbol's
        `sma_long`-th newest tick after the batch, `recent` the ticks from it on."""
        last = newest if self.last is None else max(self.last, newest)
        # Nothing is stored before a new symbol's first tick; None (a state from before starts were kept) means
        # the whole history, and stays so until a mark is due.
        start = first if self.last is None else (None if self.context_start is None else min(self.context_start, first))
        mark_last, mark_tail = self.mark_last, self.mark_tail
        if mark_last is not None and mark_tail is not None and mark_last <= last - lateness_micros:
            start = mark_tail if start is None else max(start, mark_tail)
            mark_last = mark_tail = None
        if mark_last is None:
            mark_last, mark_tail = last, tail
        return Watermark(last, start, tail, mark_last, mark_tail, recent)

    def positions(self) -> tuple[int | None, ...]:
        """The five times, in the order of the state table's columns (`_WATERMARK_COLUMNS`)."""
        return (self.last, self.context_start, self.tail, self.mark_last, self.mark_tail)


def ticks_of(rows: Iterable[Row]) -> tuple[Tick, ...]:
    """Ticks as the state keeps them, from rows of event_micros, close, volume (a `TICKS_TYPE` value)."""
    return tuple((row.event_micros, row.close, row.volume) for row in rows)


def newest_ticks(stored: Iterable[Tick], new: Iterable[Tick], length: int) -> tuple[Tick, ...]:
    """The `length` newest of two sets of ticks, newest first (a new tick wins over a stored one at its time).

    The newest `length` of a union lie within the newest `length` of each part, so a symbol's `recent` ticks
    after a batch follow from its `recent` before it and the batch's own newest ticks, late ones included.
    """
    by_time = {tick[0]: tick for tick in stored}
    by_time.update((tick[0], tick) for tick in new)
    return tuple(sorted(by_time.values(), key=lambda tick: tick[0], reverse=True)[:length])


@dataclass(frozen=True)
class SymbolState:
    now: Watermark
    previous: Watermark
    batch_id: int

    @property
    def last(self) -> int:
        assert self.now.last is not None
        return self.now.last

    def before(self, batch_id: int) -> Watermark:
        """The position as it was before `batch_id` ran (also on its retry)."""
        return self.previous if self.batch_id == batch_id else self.now


@dataclass(frozen=True)
class StateSettings:
    sma_short: int
    sma_long: int
    allowed_lateness_seconds: int

    @classmethod
    def of(cls, config: SignalsConfig) -> StateSettings:
        return cls(config.sma_short, config.sma_long, config.allowed_lateness_seconds)


# The state table's column of each Watermark field (with the prefix "previous_" for the values before the batch).
_WATERMARK_COLUMNS = ("last_event", "context_start", "tail", "mark_last", "mark_tail")


def load_state(spark: SparkSession, path: str) -> tuple[dict[str, SymbolState], set[StateSettings]]:
    """Every symbol's state, and the distinct settings the rows were written with (rows from before settings
    were recorded count as unknown and are not returned)."""
    table = spark.read.format("delta").load(path)
    has_settings = "sma_long" in table.columns
    settings_columns = (
        [F.col("sma_short"), F.col("sma_long"), F.col("allowed_lateness_seconds")]
        if has_settings
        else [
            F.lit(None).alias("sma_short"),
            F.lit(None).alias("sma_long"),
            F.lit(None).alias("allowed_lateness_seconds"),
        ]
    )

    def optional(column: str) -> Column:
        return F.unix_micros(F.col(column)).alias(column) if column in table.columns else F.lit(None).alias(column)

    def optional_ticks(column: str) -> Column:
        return F.col(column) if column in table.columns else F.lit(None).cast(TICKS_TYPE).alias(column)

    rows = table.select(
        "symbol",
        "batch_id",
        *settings_columns,
        *[optional(f"{prefix}{column}_time") for prefix in ("", "previous_") for column in _WATERMARK_COLUMNS],
        optional_ticks("recent_ticks"),
        optional_ticks("previous_recent_ticks"),
    ).collect()

    def watermark(row: Row, prefix: str) -> Watermark:
        ticks = row[f"{prefix}recent_ticks"]
        recent = None if ticks is None else ticks_of(ticks)
        times = [row[f"{prefix}{column}_time"] for column in _WATERMARK_COLUMNS]
        return replace(Watermark(*times), recent=recent)

    states = {row.symbol: SymbolState(watermark(row, ""), watermark(row, "previous_"), row.batch_id) for row in rows}
    settings = {
        StateSettings(row.sma_short, row.sma_long, int(row.allowed_lateness_seconds))
        for row in rows
        if row.sma_long is not None
    }
    return states, settings


def check_settings(recorded: set[StateSettings], wanted: StateSettings) -> bool:
    """Whether the context starts must be rebuilt for `wanted`; raises when the windows changed.

    A change of sma_short/sma_long changes every stored signal: refuse, and say how to start over. A change of
    allowed_lateness_seconds only moves where contexts must start: rebuild them from `ticks` (rebuild_context_starts).
    """
    windows = {(s.sma_short, s.sma_long) for s in recorded}
    if windows and windows != {(wanted.sma_short, wanted.sma_long)}:
        before = ", ".join(f"sma_short={short} sma_long={long}" for short, long in sorted(windows))
        raise SettingsChanged(
            f"signals.sma_short/signals.sma_long changed since the tables were written (they hold {before}; the "
            f"configuration says sma_short={wanted.sma_short} sma_long={wanted.sma_long}): every stored signal "
            "would mix two definitions. Set them back, or start over with an empty storage.root and a new "
            "checkpoint (storage.checkpoint_root or stream.checkpoint_name), replaying the topic from the start."
        )
    return any(s.allowed_lateness_seconds != wanted.allowed_lateness_seconds for s in recorded)


def rebuild_context_starts(
    spark: SparkSession, ticks: DataFrame, states: dict[str, SymbolState], settings: StateSettings
) -> dict[str, SymbolState]:
    """Each symbol's context start for new settings, from its stored ticks (one pass, at start-up only)."""
    from pyspark.sql import Window

    if not states:
        return states
    watermarks = spark.createDataFrame(
        [(symbol, state.last) for symbol, state in states.items()], "symbol string, last_micros long"
    )
    horizon = F.col("last_micros") - F.lit(settings.allowed_lateness_seconds * 1_000_000)
    ranked = (
        ticks.select("symbol", F.unix_micros("event_time").alias("micros"))
        .join(F.broadcast(watermarks), on="symbol", how="inner")
        .withColumn("before_horizon", F.col("micros") < horizon)
        .withColumn(
            "rank",
            F.when(
                F.col("before_horizon"),
                F.row_number().over(Window.partitionBy("symbol", "before_horizon").orderBy(F.desc("micros"))),
            ),
        )
    )
    starts = ranked.groupBy("symbol").agg(
        F.min(F.when(F.col("rank") == settings.sma_long, F.col("micros"))).alias("start"),
        F.min("micros").alias("first"),
    )
    rebuilt = dict(states)
    for row in starts.collect():
        state = states[row.symbol]
        start = row.start if row.start is not None else row.first
        rebuilt[row.symbol] = SymbolState(
            replace(state.now, context_start=start), replace(state.previous, context_start=start), state.batch_id
        )
    return rebuilt


def state_frame(spark: SparkSession, states: dict[str, SymbolState], settings: StateSettings) -> DataFrame:
    """The `_signal_state` rows of `states`."""
    rows = [
        (
            symbol,
            state.batch_id,
            settings.sma_short,
            settings.sma_long,
            settings.allowed_lateness_seconds,
            *state.now.positions(),
            *state.previous.positions(),
            _ticks_value(state.now.recent),
            _ticks_value(state.previous.recent),
        )
        for symbol, state in sorted(states.items())
    ]
    watermark_columns = [f"{prefix}{column}" for prefix in ("", "previous_") for column in _WATERMARK_COLUMNS]
    frame = spark.createDataFrame(
        rows,
        "symbol string, batch_id long, sma_short int, sma_long int, allowed_lateness_seconds long, "
        + ", ".join(f"{column} long" for column in watermark_columns)
        + f", recent_ticks {TICKS_TYPE}, previous_recent_ticks {TICKS_TYPE}",
    )
    return frame.select(
        "symbol",
        "batch_id",
        "sma_short",
        "sma_long",
        "allowed_lateness_seconds",
        *[F.timestamp_micros(column).alias(f"{column}_time") for column in watermark_columns],
        "recent_ticks",
        "previous_recent_ticks",
    ).select(*SIGNAL_STATE.schema.fieldNames())


def _ticks_value(ticks: tuple[Tick, ...] | None) -> list[tuple[int, float, int]] | None:
    return None if ticks is None else [(int(micros), float(close), int(volume)) for micros, close, volume in ticks]
