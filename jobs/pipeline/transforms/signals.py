"""The one definition of the signal logic (docs/design.md, "The signal definition"), as pure DataFrame functions.

`sql/v_signals.sql` states the same definition for Athena; tests prove the two agree row for row.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql.window import WindowSpec

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


# Prices are compared as whole micro-units (6 decimals): sums of integers are exact in every engine, so two equal
# averages compare equal in Spark, Trino and DuckDB alike, instead of being decided by the rounding noise of a
# floating-point sum whose order each engine picks. parse rejects prices that do not fit (price_out_of_range).
PRICE_SCALE = 1_000_000


def close_micros(close: Column) -> Column:
    """The close in whole millionths, the exact form the averages are compared in."""
    return F.round(close * F.lit(PRICE_SCALE)).cast("bigint")


def _trailing_mean(close: Column, by_time: WindowSpec, length: int) -> Column:
    """Mean of the `length` most recent closes up to this tick; NULL while fewer exist."""
    frame = by_time.rowsBetween(-(length - 1), Window.currentRow)
    return F.when(F.count(close).over(frame) >= length, F.avg(close).over(frame))


def _trend(close: Column, by_time: WindowSpec, sma_short: int, sma_long: int) -> Column:
    """1 when SMA short > SMA long, -1 when below, 0 when equal (exactly), NULL while a window is incomplete.

    sum_short / short > sum_long / long  <=>  sum_short * long > sum_long * short, in integers.
    """
    short_frame = by_time.rowsBetween(-(sma_short - 1), Window.currentRow)
    long_frame = by_time.rowsBetween(-(sma_long - 1), Window.currentRow)
    micros = close_micros(close)
    short_side = F.sum(micros).over(short_frame) * F.lit(sma_long)
    long_side = F.sum(micros).over(long_frame) * F.lit(sma_short)
    complete = F.count(close).over(long_frame) >= sma_long
    return F.when(complete, F.when(short_side > long_side, 1).when(short_side < long_side, -1).otherwise(0))


def signal_label(trend: Column, volume: Column, prev_volume: Column) -> Column:
    rising_volume = volume > prev_volume
    # Comparisons with NULL are NULL, so `when` falls through to Hold for any missing input.
    return (
        F.when((trend > 0) & rising_volume, F.lit("Buy"))
        .when((trend < 0) & rising_volume, F.lit("Sell"))
        .otherwise(F.lit("Hold"))
    )


def crossover_label(trend: Column, prev_trend: Column) -> Column:
    # A NULL trend (incomplete window) makes every comparison NULL: no cross until both ticks have both averages.
    return F.when((prev_trend <= 0) & (trend > 0), F.lit("golden_cross")).when(
        (prev_trend >= 0) & (trend < 0), F.lit("death_cross")
    )


def with_signals(ticks: DataFrame, sma_short: int = 9, sma_long: int = 21) -> DataFrame:
    """Add sma_short, sma_long, prev_volume, signal and crossover to ticks (symbol, event_time, close, volume).

    Rows are kept as they are (other columns pass through). The averages are only exact for rows that have
    at least `sma_long` ticks of their symbol before them in `ticks`, or all of the symbol's history.
    """
    by_time = Window.partitionBy("symbol").orderBy("event_time")
    trend = "_signal_trend"
    with_averages = (
        ticks.withColumn("sma_short", _trailing_mean(F.col("close"), by_time, sma_short))
        .withColumn("sma_long", _trailing_mean(F.col("close"), by_time, sma_long))
        .withColumn("prev_volume", F.lag("volume").over(by_time))
        .withColumn(trend, _trend(F.col("close"), by_time, sma_short, sma_long))
    )
    return (
        with_averages.withColumn("signal", signal_label(F.col(trend), F.col("volume"), F.col("prev_volume")))
        .withColumn("crossover", crossover_label(F.col(trend), F.lag(trend).over(by_time)))
        .drop(trend)
    )


def compute_signals(ticks: DataFrame, sma_short: int = 9, sma_long: int = 21) -> DataFrame:
    """The signal columns for every tick, over the whole history given (the batch recomputation)."""
    return with_signals(ticks, sma_short, sma_long).select(*SIGNAL_COLUMNS)
