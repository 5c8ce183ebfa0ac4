"""The streaming job's per-symbol state: held in the driver between micro-batches, persisted in `_signal_state`.

Per symbol: the newest event time processed (the lateness watermark) and where the context of a recomputation
starts (the `sma_long`-th tick before the lateness horizon, or the symbol's first tick). Loaded once when the job
starts, rewritten whole after every batch that accepted ticks (idempotently, with the batch's id), so a batch
needs no read of it. Times are kept as epoch microseconds: never a naive datetime in the driver's time zone.

A row also records the batch that wrote it and its values before that batch, so a retried batch (same id after
a crash) sees the state as its first attempt saw it; and the settings it holds for, so a change of settings
between runs is detected instead of silently mixing windows (see `check_settings`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from jobs.pipeline.config import SignalsConfig
from jobs.pipeline.tables import SIGNAL_STATE

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


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
class SymbolState:
    last: int
    previous_last: int | None
    context_start: int | None
    previous_context_start: int | None
    batch_id: int

    def before(self, batch_id: int) -> tuple[int | None, int | None]:
        """(newest event time, context start) as they were before `batch_id` ran (also on its retry)."""
        if self.batch_id == batch_id:
            return self.previous_last, self.previous_context_start
        return self.last, self.context_start


@dataclass(frozen=True)
class StateSettings:
    sma_short: int
    sma_long: int
    allowed_lateness_seconds: int

    @classmethod
    def of(cls, config: SignalsConfig) -> StateSettings:
        return cls(config.sma_short, config.sma_long, config.allowed_lateness_seconds)


def _micros(column: str) -> Column:
    return F.unix_micros(F.col(column)).alias(column)


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
    rows = table.select(
        "symbol",
        _micros("last_event_time"),
        _micros("previous_last_event_time"),
        _micros("context_start_time"),
        _micros("previous_context_start_time"),
        "batch_id",
        *settings_columns,
    ).collect()
    states = {
        row.symbol: SymbolState(
            row.last_event_time,
            row.previous_last_event_time,
            row.context_start_time,
            row.previous_context_start_time,
            row.batch_id,
        )
        for row in rows
    }
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
        rebuilt[row.symbol] = replace(state, context_start=start, previous_context_start=start)
    return rebuilt


def state_frame(spark: SparkSession, states: dict[str, SymbolState], settings: StateSettings) -> DataFrame:
    """The `_signal_state` rows of `states`."""
    rows = [
        (
            symbol,
            s.last,
            s.previous_last,
            s.context_start,
            s.previous_context_start,
            s.batch_id,
            settings.sma_short,
            settings.sma_long,
            settings.allowed_lateness_seconds,
        )
        for symbol, s in sorted(states.items())
    ]
    frame = spark.createDataFrame(
        rows,
        "symbol string, last long, previous_last long, context_start long, previous_context_start long, "
        "batch_id long, sma_short int, sma_long int, allowed_lateness_seconds long",
    )
    return frame.select(
        "symbol",
        F.timestamp_micros("last").alias("last_event_time"),
        F.timestamp_micros("previous_last").alias("previous_last_event_time"),
        F.timestamp_micros("context_start").alias("context_start_time"),
        F.timestamp_micros("previous_context_start").alias("previous_context_start_time"),
        "batch_id",
        "sma_short",
        "sma_long",
        "allowed_lateness_seconds",
    ).select(*SIGNAL_STATE.schema.fieldNames())
