"""The signal definition on hand-computed fixtures: warm-up NULLs, volume ties, SMA ties, crossovers."""

from __future__ import annotations

from datetime import datetime, timedelta

from chispa import assert_df_equality
from pyspark.sql import SparkSession

from jobs.pipeline.transforms.signals import compute_signals

T0 = datetime(2026, 11, 24, 9, 15, 0)
SIGNAL_SCHEMA = (
    "symbol string, event_time timestamp, close double, volume long, sma_short double, sma_long double, "
    "prev_volume long, signal string, crossover string"
)


def _ticks(spark: SparkSession, rows: list[tuple[str, int, float, int]]):
    return spark.createDataFrame(
        [(symbol, T0 + timedelta(seconds=30 * step), close, volume) for symbol, step, close, volume in rows],
        schema="symbol string, event_time timestamp, close double, volume long",
    )


def _at(step: int) -> datetime:
    return T0 + timedelta(seconds=30 * step)


def test_short_windows_hand_computed(spark: SparkSession) -> None:
    # Delivered out of order on purpose: the definition orders by event_time, not by arrival.
    ticks = _ticks(
        spark,
        [
            ("AAA", 5, 13.0, 400),
            ("AAA", 0, 10.0, 100),
            ("AAA", 1, 11.0, 200),
            ("AAA", 2, 12.0, 200),
            ("AAA", 3, 11.0, 150),
            ("AAA", 4, 10.0, 300),
            ("BBB", 0, 5.0, 1),
            ("BBB", 1, 5.0, 2),
            ("BBB", 2, 5.0, 3),
            ("BBB", 3, 6.0, 4),
        ],
    )
    expected = spark.createDataFrame(
        [
            ("AAA", _at(0), 10.0, 100, None, None, None, "Hold", None),
            ("AAA", _at(1), 11.0, 200, 10.5, None, 100, "Hold", None),
            # volume equal to the previous one is not rising: Hold
            ("AAA", _at(2), 12.0, 200, 11.5, 11.0, 200, "Hold", None),
            ("AAA", _at(3), 11.0, 150, 11.5, 34.0 / 3, 200, "Hold", None),
            ("AAA", _at(4), 10.0, 300, 10.5, 11.0, 150, "Sell", "death_cross"),
            ("AAA", _at(5), 13.0, 400, 11.5, 34.0 / 3, 300, "Buy", "golden_cross"),
            ("BBB", _at(0), 5.0, 1, None, None, None, "Hold", None),
            ("BBB", _at(1), 5.0, 2, 5.0, None, 1, "Hold", None),
            # equal averages with rising volume: neither Buy nor Sell
            ("BBB", _at(2), 5.0, 3, 5.0, 5.0, 2, "Hold", None),
            # from equal (<=) to above: a golden cross
            ("BBB", _at(3), 6.0, 4, 5.5, 16.0 / 3, 3, "Buy", "golden_cross"),
        ],
        schema=SIGNAL_SCHEMA,
    )
    actual = compute_signals(ticks, sma_short=2, sma_long=3)
    assert_df_equality(
        actual,
        expected,
        ignore_row_order=True,
        ignore_nullable=True,
        allow_nan_equality=True,
        ignore_column_order=False,
    )


def test_default_windows_warm_up_and_values(spark: SparkSession) -> None:
    closes = [100.0 + step for step in range(22)]
    volumes = [1000 + (step % 3) * 10 for step in range(22)]
    ticks = _ticks(spark, [("SYM001", step, closes[step], volumes[step]) for step in range(22)])
    rows = {row.event_time: row for row in compute_signals(ticks).collect()}
    for step in range(22):
        row = rows[_at(step)]
        expected_short = sum(closes[step - 8 : step + 1]) / 9 if step >= 8 else None
        expected_long = sum(closes[step - 20 : step + 1]) / 21 if step >= 20 else None
        assert row.sma_short == expected_short or abs(row.sma_short - expected_short) < 1e-9
        assert row.sma_long == expected_long or abs(row.sma_long - expected_long) < 1e-9
        assert row.prev_volume == (volumes[step - 1] if step else None)
    # Rising prices: the short average is above the long one from tick 21 on; volume rises on steps 1,2 mod 3.
    assert [rows[_at(step)].signal for step in (19, 20, 21)] == ["Hold", "Buy", "Hold"]
    assert rows[_at(20)].crossover is None  # the long average did not exist on the previous tick


# The first 23 ticks of AAPL1 in the original system's published Athena output: close, volume, sma_9, sma_21,
# signal (the rows are copied here; the full file is checked by the replay tests).
REFERENCE_AAPL1 = [
    (191.15, 7558, None, None, "Hold"),
    (356.77, 2048, None, None, "Hold"),
    (939.51, 3725, None, None, "Hold"),
    (539.52, 4605, None, None, "Hold"),
    (495.15, 3628, None, None, "Hold"),
    (989.38, 6613, None, None, "Hold"),
    (861.15, 5120, None, None, "Hold"),
    (461.35, 1136, None, None, "Hold"),
    (834.4, 5842, 629.82, None, "Hold"),
    (1096.19, 6231, 730.38, None, "Hold"),
    (531.34, 3750, 749.7766666666666, None, "Hold"),
    (162.89, 4721, 663.4855555555555, None, "Hold"),
    (150.72, 3668, 620.2855555555556, None, "Hold"),
    (168.71, 1221, 584.0144444444445, None, "Hold"),
    (1050.19, 8809, 590.7711111111112, None, "Hold"),
    (1413.34, 5794, 652.1255555555556, None, "Hold"),
    (610.15, 3073, 668.6588888888889, None, "Hold"),
    (155.29, 1446, 593.2022222222222, None, "Hold"),
    (1401.01, 3419, 627.0711111111111, None, "Hold"),
    (711.36, 9471, 647.0733333333333, None, "Hold"),
    (1199.63, 6223, 762.2666666666667, 681.8666666666667, "Hold"),
    (833.56, 4566, 838.1377777777778, 712.4576190476191, "Hold"),
    (734.28, 9868, 900.978888888889, 730.4342857142858, "Buy"),
]


def test_reference_sample_rows(spark: SparkSession) -> None:
    ticks = _ticks(spark, [("AAPL1", step, close, volume) for step, (close, volume, *_) in enumerate(REFERENCE_AAPL1)])
    rows = sorted(compute_signals(ticks).collect(), key=lambda row: row.event_time)
    for row, (close, volume, sma_9, sma_21, signal) in zip(rows, REFERENCE_AAPL1, strict=True):
        assert (row.close, row.volume, row.signal) == (close, volume, signal)
        for actual, published in ((row.sma_short, sma_9), (row.sma_long, sma_21)):
            assert (actual is None) == (published is None)
            assert published is None or abs(actual - published) < 1e-9


def test_equal_averages_compare_equal_whatever_the_rounding_of_the_sum(spark: SparkSession) -> None:
    """20 ticks from 101.07 down by 0.05, then 100.07 flat: once both windows are flat the averages are equal
    (the floating-point sum says sma_long = 100.06999999999996): Hold and no crossover, not a golden cross."""
    closes = [round(101.07 - 0.05 * i, 2) for i in range(20)] + [100.07] * 30
    ticks = _ticks(spark, [("FLAT", i, close, 1000 + i) for i, close in enumerate(closes)])
    rows = compute_signals(ticks).orderBy("event_time").collect()
    assert [row.crossover for row in rows if row.crossover] == []
    flat = rows[40:]
    assert {row.signal for row in flat} == {"Hold"}
    assert all(row.sma_short == 100.07 for row in flat)
    # Falling averages with rising volume before that: Sell once both windows exist.
    assert {row.signal for row in rows[20:29]} == {"Sell"}
