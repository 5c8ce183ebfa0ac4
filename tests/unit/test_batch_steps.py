"""De-duplication, lateness and recomputation bookkeeping on hand-made rows."""

from __future__ import annotations

from datetime import datetime, timedelta

from chispa import assert_df_equality
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from jobs.pipeline.state import Watermark, newest_ticks
from jobs.pipeline.transforms.batch import (
    batch_summary,
    classify_duplicates,
    classify_records,
    flag_too_late,
    per_symbol_time,
    recomputed_signals,
    signal_changes,
)
from jobs.pipeline.transforms.batch import newest_ticks as newest_ticks_of
from jobs.pipeline.transforms.signals import compute_signals

T0 = datetime(2026, 11, 24, 9, 0, 0)
CANDIDATE_SCHEMA = (
    "symbol string, event_time timestamp, close double, volume long, topic string, partition int, offset long"
)


def _t(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


def _micros(minutes: int) -> int:
    return int(_t(minutes).timestamp() * 1_000_000)


def test_classify_duplicates_first_by_offset_wins(spark: SparkSession) -> None:
    candidates = spark.createDataFrame(
        [
            ("AAA", _t(0), 10.0, 100, "ticks", 0, 7),  # first of its key in the batch
            ("AAA", _t(0), 10.0, 100, "ticks", 0, 9),  # identical re-send
            ("AAA", _t(0), 10.5, 100, "ticks", 0, 8),  # conflicting, later offset than 7
            ("AAA", _t(1), 11.0, 100, "ticks", 0, 10),  # stored already by another record, identical
            ("AAA", _t(2), 12.0, 100, "ticks", 0, 11),  # stored already with a different close
            ("AAA", _t(3), 13.0, 100, "ticks", 0, 12),  # stored by this very record (a retried batch)
            ("BBB", _t(0), 20.0, 5, "ticks", 1, 3),  # same time, other symbol: its own key
        ],
        schema=CANDIDATE_SCHEMA,
    )
    stored = spark.createDataFrame(
        [
            ("AAA", _t(1), 11.0, 100, "ticks", 0, 2),
            ("AAA", _t(2), 12.5, 100, "ticks", 0, 3),
            ("AAA", _t(3), 13.0, 100, "ticks", 0, 12),
        ],
        schema=CANDIDATE_SCHEMA,
    )
    actual = classify_duplicates(candidates, stored).select("offset", "disposition", "duplicate_of")
    expected = spark.createDataFrame(
        [
            (7, "accept", None),
            (9, "duplicate", "ticks[0]@7"),
            (8, "conflicting_duplicate", "ticks[0]@7"),
            (10, "duplicate", "ticks[0]@2"),
            (11, "conflicting_duplicate", "ticks[0]@3"),
            (12, "accept", None),
            (3, "accept", None),
        ],
        schema="offset long, disposition string, duplicate_of string",
    )
    assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)


def test_too_late_is_relative_to_the_newest_tick_that_arrived_before(spark: SparkSession) -> None:
    ticks = spark.createDataFrame(
        [
            ("AAA", _t(0), 0, 1),
            ("AAA", _t(50), 0, 2),
            ("AAA", _t(49), 0, 3),
            ("BBB", _t(0), 1, 1),
            ("CCC", _t(0), 2, 1),
            # Within a batch arrival order counts: once minute 200 has arrived, 139 is too late and 140 is not.
            ("CCC", _t(200), 2, 2),
            ("CCC", _t(139), 2, 3),
            ("CCC", _t(140), 2, 4),
        ],
        schema="symbol string, event_time timestamp, partition int, offset long",
    )
    last_event_time = per_symbol_time({"AAA": _micros(110), "BBB": _micros(60)})
    actual = flag_too_late(ticks, last_event_time, allowed_lateness_seconds=3600).select("symbol", "offset", "too_late")
    expected = spark.createDataFrame(
        [
            ("AAA", 1, True),
            ("AAA", 2, False),  # exactly at the horizon: still allowed
            ("AAA", 3, True),
            ("BBB", 1, False),
            ("CCC", 1, False),  # never seen, first of its batch: nothing to be late against
            ("CCC", 2, False),
            ("CCC", 3, True),
            ("CCC", 4, False),
        ],
        schema="symbol string, offset long, too_late boolean",
    )
    assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)


def test_a_record_beyond_the_lateness_is_too_late_even_on_a_stored_key(spark: SparkSession) -> None:
    """Lateness is judged first: whether a stored tick shares its key must not matter once a record is older than
    the horizon (the job then never has to look up stored ticks that old)."""
    parsed = spark.createDataFrame(
        [
            ("AAA", _t(0), 10.0, 100, "ticks", 0, 20, None, None),  # stored, identical, 120 min behind: too late
            ("AAA", _t(1), 99.0, 100, "ticks", 0, 21, None, None),  # stored, different close, too late
            ("AAA", _t(100), 15.0, 100, "ticks", 0, 22, None, None),  # stored, identical, within the lateness
            ("AAA", _t(101), 99.0, 100, "ticks", 0, 23, None, None),  # stored, different close, within
            ("AAA", _t(2), 12.0, 100, "ticks", 0, 24, "bad_type", "x"),  # a parse reject stays what it is
        ],
        schema=CANDIDATE_SCHEMA + ", reject_reason string, reject_detail string",
    )
    stored = spark.createDataFrame(
        [
            ("AAA", _t(0), 10.0, 100, "ticks", 0, 1),
            ("AAA", _t(1), 11.0, 100, "ticks", 0, 2),
            ("AAA", _t(100), 15.0, 100, "ticks", 0, 3),
            ("AAA", _t(101), 16.0, 100, "ticks", 0, 4),
        ],
        schema=CANDIDATE_SCHEMA,
    )
    actual = classify_records(parsed, stored, per_symbol_time({"AAA": _micros(120)}), allowed_lateness_seconds=3600)
    expected = spark.createDataFrame(
        [(20, "too_late"), (21, "too_late"), (22, "duplicate"), (23, "conflicting_duplicate"), (24, "bad_type")],
        schema="offset long, outcome string",
    )
    assert_df_equality(actual.select("offset", "outcome"), expected, ignore_row_order=True, ignore_nullable=True)
    reasons = {row.offset: row.reject_reason for row in actual.collect()}
    assert reasons == {20: "too_late", 21: "too_late", 22: None, 23: "conflicting_duplicate", 24: "bad_type"}


def test_newest_ticks_of_a_context_are_the_long_window_newest_first(spark: SparkSession) -> None:
    context = spark.createDataFrame(
        [("AAA", _t(m), float(m), m) for m in (0, 1, 2, 4, 5, 9, 7)] + [("BBB", _t(m), 1.5, 3) for m in range(2)],
        schema="symbol string, event_time timestamp, close double, volume long",
    )
    rows = {row.symbol: [tuple(tick) for tick in row.ticks] for row in newest_ticks_of(context, 3).collect()}
    # AAA's three newest: minutes 9, 7 and 5; BBB has fewer than three: all of them
    assert rows == {
        "AAA": [(_micros(9), 9.0, 9), (_micros(7), 7.0, 7), (_micros(5), 5.0, 5)],
        "BBB": [(_micros(1), 1.5, 3), (_micros(0), 1.5, 3)],
    }


def test_the_newest_ticks_after_a_batch_follow_from_the_state_and_the_batch_alone() -> None:
    stored = ((_micros(9), 9.0, 9), (_micros(7), 7.0, 7), (_micros(5), 5.0, 5))
    # In order: the batch's newest push the oldest stored ones out.
    assert newest_ticks(stored, [(_micros(11), 11.0, 1), (_micros(10), 10.0, 1)], 3) == (
        (_micros(11), 11.0, 1),
        (_micros(10), 10.0, 1),
        (_micros(9), 9.0, 9),
    )
    # A late tick lands in the middle; one older than all three changes nothing.
    assert newest_ticks(stored, [(_micros(8), 8.0, 2), (_micros(1), 1.0, 2)], 3) == (
        (_micros(9), 9.0, 9),
        (_micros(8), 8.0, 2),
        (_micros(7), 7.0, 7),
    )
    # A young symbol keeps everything it has.
    assert newest_ticks((), [(_micros(2), 2.0, 2)], 3) == ((_micros(2), 2.0, 2),)


def test_batch_summary_counts_outcomes_and_bounds_candidates_per_symbol(spark: SparkSession) -> None:
    classified = spark.createDataFrame(
        [
            ("AAA", _t(5), 5.0, 50, _t(6), "accept"),
            ("AAA", _t(3), 3.0, 30, _t(6), "accept"),
            ("AAA", _t(4), 4.0, 40, _t(6), "accept"),
            ("AAA", _t(1), 1.0, 10, _t(6), "duplicate"),
            ("BBB", _t(2), 2.0, 20, _t(9), "too_late"),
            (None, None, None, None, _t(6), "not_json"),
            ("CCC", None, None, None, _t(6), "bad_timestamp"),
        ],
        schema="symbol string, event_time timestamp, close double, volume long, ingest_time timestamp, outcome string",
    )
    rows = {
        (row.outcome, row.symbol): (row.records, row.first_micros, row.last_micros, row.max_lag_ms, row.newest_ticks)
        for row in batch_summary(classified, 2).collect()
    }
    ticks = [(_micros(5), 5.0, 50), (_micros(4), 4.0, 40)]
    assert rows == {
        ("accept", "AAA"): (3, _micros(3), _micros(5), 180_000, ticks),
        ("duplicate", "AAA"): (1, _micros(1), _micros(1), 300_000, []),
        ("too_late", "BBB"): (1, _micros(2), _micros(2), 420_000, []),
        ("not_json", None): (1, None, None, None, []),
        ("bad_timestamp", None): (1, None, None, None, []),
    }


MINUTE = 60_000_000


def test_the_context_start_advances_to_a_mark_once_the_horizon_passes_it() -> None:
    lateness = 10 * MINUTE
    # A new symbol: its context starts at its first tick; the mark is this batch's watermark and tail.
    first = Watermark().advance(first=0, newest=5 * MINUTE, tail=3 * MINUTE, lateness_micros=lateness)
    assert first == Watermark(5 * MINUTE, 0, 3 * MINUTE, 5 * MINUTE, 3 * MINUTE)
    # The horizon (14 - 10 = minute 4) has not passed the mark's watermark (minute 5): nothing moves.
    second = first.advance(first=6 * MINUTE, newest=14 * MINUTE, tail=12 * MINUTE, lateness_micros=lateness)
    assert second == Watermark(14 * MINUTE, 0, 12 * MINUTE, 5 * MINUTE, 3 * MINUTE)
    # Horizon at minute 6: every tick up to minute 5 is too late now, and three of them lie at or after minute 3.
    third = second.advance(first=15 * MINUTE, newest=16 * MINUTE, tail=14 * MINUTE, lateness_micros=lateness)
    assert third == Watermark(16 * MINUTE, 3 * MINUTE, 14 * MINUTE, 16 * MINUTE, 14 * MINUTE)
    # A late tick before the context start (possible after allowed_lateness_seconds grew) moves the start back.
    late = third.advance(first=2 * MINUTE, newest=17 * MINUTE, tail=15 * MINUTE, lateness_micros=20 * MINUTE)
    assert late.context_start == 2 * MINUTE
    # A state from before starts were kept (None: the whole history) gets one at its first due mark.
    legacy = Watermark(last=5 * MINUTE).advance(
        first=6 * MINUTE, newest=7 * MINUTE, tail=5 * MINUTE, lateness_micros=lateness
    )
    assert (legacy.context_start, legacy.mark_last) == (None, 7 * MINUTE)
    assert legacy.advance(18 * MINUTE, 18 * MINUTE, 16 * MINUTE, lateness).context_start == 5 * MINUTE


def test_recomputed_signals_on_a_trimmed_context_equal_the_full_recomputation(spark: SparkSession) -> None:
    closes = [10.0, 12.0, 11.0, 15.0, 14.0, 13.0, 16.0, 18.0, 17.0, 19.0]
    full = spark.createDataFrame(
        [("AAA", _t(m), closes[m], 100 + (m % 4) * 7) for m in range(10)],
        schema="symbol string, event_time timestamp, close double, volume long",
    )
    # A context starting 3 ticks (sma_long) before the recomputation start gives complete windows.
    context = full.where(F.col("event_time") >= F.lit(_t(3)))
    actual = recomputed_signals(context, per_symbol_time({"AAA": _micros(6)}), sma_short=2, sma_long=3)
    expected = compute_signals(full, sma_short=2, sma_long=3).where(F.col("event_time") >= F.lit(_t(6)))
    assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)


def test_signal_changes_new_corrected_and_unchanged(spark: SparkSession) -> None:
    columns = (
        "symbol string, event_time timestamp, close double, volume long, sma_short double, "
        "sma_long double, prev_volume long, signal string, crossover string"
    )
    recomputed = spark.createDataFrame(
        [
            ("AAA", _t(0), 10.0, 5, 10.0, None, None, "Hold", None),  # unchanged
            ("AAA", _t(1), 11.0, 6, 10.5, 10.5, 5, "Hold", None),  # changed average
            ("AAA", _t(2), 12.0, 7, 11.5, 11.0, 6, "Buy", "golden_cross"),  # new
        ],
        schema=columns,
    )
    stored = spark.createDataFrame(
        [
            ("AAA", _t(0), 10.0, 5, 10.0, None, None, "Hold", None, 0),
            ("AAA", _t(1), 11.0, 6, 10.5, None, 5, "Hold", None, 2),
        ],
        schema=columns + ", revision int",
    )
    actual = signal_changes(recomputed, stored).select("event_time", "revision", "is_new", "sma_long")
    expected = spark.createDataFrame(
        [(_t(1), 3, False, 10.5), (_t(2), 0, True, 11.0)],
        schema="event_time timestamp, revision int, is_new boolean, sma_long double",
    )
    assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)


def test_per_symbol_time_looks_up_any_symbol_text_exactly(spark: SparkSession) -> None:
    odd = ["AAA", "it's", "back\\slash", "quote'\\'", "ünï", "SYM.1-_"]
    times: dict[str, int | None] = {symbol: _micros(i) for i, symbol in enumerate(odd)}
    times["none"] = None
    rows = spark.createDataFrame([(symbol,) for symbol in [*odd, "none", "absent"]], "symbol string")
    looked_up = {
        row.symbol: row.micros
        for row in rows.select("symbol", F.unix_micros(per_symbol_time(times)).alias("micros")).collect()
    }
    assert looked_up == {**{symbol: _micros(i) for i, symbol in enumerate(odd)}, "none": None, "absent": None}
