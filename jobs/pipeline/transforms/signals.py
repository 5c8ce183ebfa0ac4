"""The one definition of the signal logic (docs/design.md, "The signal definition"), as pure DataFrame functions.

`sql/v_signals.sql` states the same definition for Athena; tests prove the two agree row for row.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

SIGNAL_COLUMNS = (
    "symbol",
    "event_time",
    "close",
    "volume",
    "sma_short",
    "sma_long",
    "prev_volume",
    "signal",
    "crossover",
)


def _trailing_mean(close: Column, by_time: Window, length: int) -> Column:
    """Mean of the `length` most recent closes up to this tick; NULL while fewer exist."""
    frame = by_time.rowsBetween(-(length - 1), Window.currentRow)
    return F.when(F.count(close).over(frame) >= length, F.avg(close).over(frame))


def signal_label(sma_short: Column, sma_long: Column, volume: Column, prev_volume: Column) -> Column:
    rising_volume = volume > prev_volume
    # Comparisons with NULL are NULL, so `when` falls through to Hold for any missing input.
    return (
        F.when((sma_short > sma_long) & rising_volume, F.lit("Buy"))
        .when((sma_short < sma_long) & rising_volume, F.lit("Sell"))
        .otherwise(F.lit("Hold"))
    )


def crossover_label(sma_short: Column, sma_long: Column, prev_short: Column, prev_long: Column) -> Column:
    # NULL averages make every comparison NULL, so no cross is reported until both exist on both ticks.
    return F.when((prev_short <= prev_long) & (sma_short > sma_long), F.lit("golden_cross")).when(
        (prev_short >= prev_long) & (sma_short < sma_long), F.lit("death_cross")
    )


def with_signals(ticks: DataFrame, sma_short: int = 9, sma_long: int = 21) -> DataFrame:
    """Add sma_short, sma_long, prev_volume, signal and crossover to ticks (symbol, event_time, close, volume).

    Rows are kept as they are (other columns pass through). The averages are only exact for rows that have
    at least `sma_long` ticks of their symbol before them in `ticks`, or all of the symbol's history.
    """
    by_time = Window.partitionBy("symbol").orderBy("event_time")
    with_averages = (
        ticks.withColumn("sma_short", _trailing_mean(F.col("close"), by_time, sma_short))
        .withColumn("sma_long", _trailing_mean(F.col("close"), by_time, sma_long))
        .withColumn("prev_volume", F.lag("volume").over(by_time))
    )
    return with_averages.withColumn(
        "signal",
        signal_label(F.col("sma_short"), F.col("sma_long"), F.col("volume"), F.col("prev_volume")),
    ).withColumn(
        "crossover",
        crossover_label(
            F.col("sma_short"),
            F.col("sma_long"),
            F.lag("sma_short").over(by_time),
            F.lag("sma_long").over(by_time),
        ),
    )


def compute_signals(ticks: DataFrame, sma_short: int = 9, sma_long: int = 21) -> DataFrame:
    """The signal columns for every tick, over the whole history given (the batch recomputation)."""
    return with_signals(ticks, sma_short, sma_long).select(*SIGNAL_COLUMNS)
