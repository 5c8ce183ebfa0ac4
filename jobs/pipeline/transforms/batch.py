"""Pure steps of one micro-batch: de-duplication, lateness, the recomputation window and its bookkeeping.

Each function takes and returns DataFrames; reading and writing Delta happens in jobs.pipeline.micro_batch.
The micro-batch runs them in this order: classify_records (parse rejects, too_late, duplicates) -> batch_summary
(the counts, bounds and newest ticks the driver needs) -> recomputed_signals over the context -> split_new_rows /
signal_changes (newest_ticks only for a state written before it kept them: jobs.pipeline.state).
"""

from __future__ import annotations

from collections.abc import Mapping

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from jobs.pipeline.transforms.signals import SIGNAL_COLUMNS, with_signals

ACCEPT = "accept"
DUPLICATE = "duplicate"
CONFLICT = "conflicting_duplicate"
TOO_LATE = "too_late"

_KEY = ["symbol", "event_time"]


def per_symbol_time(micros_by_symbol: Mapping[str, int | None]) -> Column:
    """Each row's time for its `symbol` from a small driver-side mapping (epoch micros); NULL when absent.

    A literal map looked up per row, not a join with a frame built in the driver: such a join costs a broadcast
    (a Spark job) every batch, which is most of what a small batch spends. The map is one SQL literal parsed in
    the JVM: built from a `lit` per key and value it cost ~1.5 ms of py4j calls per symbol, every batch.
    """
    if not micros_by_symbol:
        return F.lit(None).cast("timestamp")
    entries = ", ".join(
        f"{_sql_string(symbol)}, {'CAST(NULL AS BIGINT)' if micros is None else f'{int(micros)}L'}"
        for symbol, micros in micros_by_symbol.items()
    )
    return F.timestamp_micros(F.expr(f"map({entries})")[F.col("symbol")])


def _sql_string(text: str) -> str:
    """A Spark SQL string literal of any text (backslash escapes, so no character can end it early)."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def classify_duplicates(candidates: DataFrame, existing: DataFrame) -> DataFrame:
    """Add `disposition` (accept | duplicate | conflicting_duplicate) and `duplicate_of` to valid ticks.

    `existing` holds already stored ticks for (at least) the candidates' keys. The first record of a key wins:
    a stored tick, else the batch's record with the lowest (partition, offset). A later record with the same
    close and volume is an identical re-send (dropped and counted); with different values it conflicts.
    A stored tick with the candidate's own Kafka coordinates is the candidate itself, written by an earlier
    attempt of the same batch, so a retried batch classifies every record as its first attempt did.
    """
    stored = existing.select(
        *_KEY,
        F.col("close").alias("stored_close"),
        F.col("volume").alias("stored_volume"),
        F.struct("topic", "partition", "offset").alias("stored_at"),
    )
    first_in_batch = Window.partitionBy(*_KEY).orderBy("partition", "offset")
    ranked = (
        candidates.withColumn("batch_rank", F.row_number().over(first_in_batch))
        .withColumn("batch_first_close", F.first("close").over(first_in_batch))
        .withColumn("batch_first_volume", F.first("volume").over(first_in_batch))
        .withColumn("batch_first_at", F.first(F.struct("topic", "partition", "offset")).over(first_in_batch))
        .join(stored, on=_KEY, how="left")
    )
    is_self = F.col("stored_at") == F.struct("topic", "partition", "offset")
    has_other_stored = F.col("stored_at").isNotNull() & ~is_self
    winner_close = F.when(has_other_stored, F.col("stored_close")).otherwise(F.col("batch_first_close"))
    winner_volume = F.when(has_other_stored, F.col("stored_volume")).otherwise(F.col("batch_first_volume"))
    winner_at = F.when(has_other_stored, F.col("stored_at")).otherwise(F.col("batch_first_at"))
    is_first = ~has_other_stored & (F.col("batch_rank") == 1)
    identical = (F.col("close") == winner_close) & (F.col("volume") == winner_volume)
    disposition = F.when(is_first, F.lit(ACCEPT)).when(identical, F.lit(DUPLICATE)).otherwise(F.lit(CONFLICT))
    duplicate_of = F.when(
        ~is_first,
        F.format_string("%s[%d]@%d", winner_at["topic"], winner_at["partition"], winner_at["offset"]),
    )
    return (
        ranked.withColumn("disposition", disposition)
        .withColumn("duplicate_of", duplicate_of)
        .drop(
            "batch_rank",
            "batch_first_close",
            "batch_first_volume",
            "batch_first_at",
            "stored_close",
            "stored_volume",
            "stored_at",
        )
    )


def flag_too_late(ticks: DataFrame, last_event_time: Column, allowed_lateness_seconds: int) -> DataFrame:
    """Add `too_late`: the tick is older than its symbol's newest earlier tick by more than the lateness.

    `last_event_time`: per row, its symbol's newest event time before this batch (see `per_symbol_time`).

    "Earlier" is arrival order: every tick of the symbol processed in previous batches (the watermark) and the
    records before this one in the batch, by (partition, offset). So the outcome does not depend on where the
    stream happens to split micro-batches.
    """
    arrived_before = (
        Window.partitionBy("symbol").orderBy("partition", "offset").rowsBetween(Window.unboundedPreceding, -1)
    )
    # greatest() skips NULLs: a symbol never seen, or the batch's first record of it, only has one of the two.
    newest_before = F.greatest(F.col("last_event_time"), F.max("event_time").over(arrived_before))
    horizon = newest_before - F.make_dt_interval(secs=F.lit(allowed_lateness_seconds))
    return (
        ticks.withColumn("last_event_time", last_event_time)
        .withColumn("too_late", F.coalesce(F.col("event_time") < horizon, F.lit(False)))
        .drop("last_event_time")
    )


def recomputed_signals(context: DataFrame, recompute_from: Column, sma_short: int, sma_long: int) -> DataFrame:
    """Signals of the context ticks at or after their symbol's `recompute_from` (NULL: none of that symbol).

    `context` holds every stored tick of the affected symbols from a bound on (jobs.pipeline.state: the tail, or
    the context start for late ticks) that leaves at least `sma_long` ticks before any tick that may change, so
    the windows are complete.
    """
    return (
        with_signals(context, sma_short, sma_long).where(F.col("event_time") >= recompute_from).select(*SIGNAL_COLUMNS)
    )


def signal_changes(recomputed: DataFrame, stored: DataFrame, batch_id: int | None = None) -> DataFrame:
    """Recomputed rows that are new (`is_new`) or differ from the stored row; `revision` is the stored one + 1.

    With `batch_id`, a stored row this very batch already wrote (an earlier attempt of a retried batch) is kept
    too, with its stored revision and `needs_write` false: it still counts as this batch's correction and is
    published again, but is not rewritten.
    """
    compared = ("close", "volume", "sma_short", "sma_long", "prev_volume", "signal", "crossover")
    own_batch = F.col("batch_id") == F.lit(batch_id) if batch_id is not None else F.lit(False)
    previous = stored.select(
        *_KEY,
        F.col("revision").alias("stored_revision"),
        own_batch.alias("stored_by_this_batch"),
        *[F.col(c).alias(f"stored_{c}") for c in compared],
    )
    joined = recomputed.join(previous, on=_KEY, how="left")
    unchanged = F.lit(True)
    for column in compared:
        unchanged = unchanged & F.col(column).eqNullSafe(F.col(f"stored_{column}"))
    is_new = F.col("stored_revision").isNull()
    already_written = ~is_new & unchanged & F.col("stored_by_this_batch") & (F.col("stored_revision") > 0)
    return (
        joined.where(is_new | ~unchanged | already_written)
        .withColumn("is_new", is_new)
        .withColumn(
            "revision",
            F.when(is_new, F.lit(0))
            .when(already_written, F.col("stored_revision"))
            .otherwise(F.col("stored_revision") + 1),
        )
        .withColumn("needs_write", ~already_written)
        .select(*SIGNAL_COLUMNS, "revision", "is_new", "needs_write")
    )


def newest_ticks(context: DataFrame, length: int) -> DataFrame:
    """Per symbol of `context`, its `length` newest ticks, newest first (`ticks`: event_micros, close, volume)."""
    return context.groupBy("symbol").agg(_newest(F.lit(True), length).alias("ticks"))


def _newest(condition: Column, length: int) -> Column:
    """The `length` newest ticks among the group's rows where `condition` holds, newest first (an aggregate)."""
    tick = F.struct(F.unix_micros("event_time").alias("event_micros"), "close", "volume")
    return F.slice(F.sort_array(F.collect_list(F.when(condition, tick)), asc=False), 1, length)


def classify_records(
    parsed: DataFrame, stored: DataFrame, last_event_time: Column, allowed_lateness_seconds: int
) -> DataFrame:
    """Every record of the batch with its `outcome` and, for rejects, `reject_reason` and `reject_detail`.

    outcome: accept, duplicate (an identical re-send: dropped and counted), or the reason it is quarantined
    (a parse check's, too_late, conflicting_duplicate). `stored` holds the stored ticks that share a key with a
    candidate (see classify_duplicates); `last_event_time` each row's symbol's newest event time before this batch.

    Lateness is judged before duplication: a record older than the horizon is too_late whether or not a stored
    tick shares its key, so the stored ticks to look up never reach back further than the horizon.
    """
    candidates = parsed.where(F.col("reject_reason").isNull())
    flagged = flag_too_late(classify_duplicates(candidates, stored), last_event_time, allowed_lateness_seconds)
    outcome = (
        F.when(F.col("too_late"), F.lit(TOO_LATE))
        .when(F.col("disposition") != ACCEPT, F.col("disposition"))
        .otherwise(F.lit(ACCEPT))
    )
    detail = F.when(
        F.col("outcome") == CONFLICT,
        F.concat(
            F.lit("same symbol and event_time as "), F.col("duplicate_of"), F.lit(" with a different close or volume")
        ),
    ).when(
        F.col("outcome") == TOO_LATE,
        F.lit(f"older than the symbol's newest tick by more than {allowed_lateness_seconds} s"),
    )
    judged = (
        flagged.withColumn("outcome", outcome)
        .withColumn("reject_reason", F.when(F.col("outcome").isin(CONFLICT, TOO_LATE), F.col("outcome")))
        .withColumn("reject_detail", detail)
        .select(*parsed.columns, "outcome")
    )
    rejected = parsed.where(F.col("reject_reason").isNotNull()).withColumn("outcome", F.col("reject_reason"))
    return rejected.unionByName(judged)


CANDIDATE_OUTCOMES = (ACCEPT, DUPLICATE, CONFLICT, TOO_LATE)


def batch_summary(classified: DataFrame, newest_length: int) -> DataFrame:
    """What the driver needs after classification, in one small aggregation.

    Per outcome, and per symbol for the records that passed parsing: the count, the earliest and newest event
    time (epoch microseconds), the largest lag from event time to ingestion (milliseconds) and, for accepted
    ticks, the `newest_length` newest (event_micros, close, volume), newest first. A parse reject's group has
    no symbol.
    """
    candidate = F.col("outcome").isin(*CANDIDATE_OUTCOMES)
    return classified.groupBy("outcome", F.when(candidate, F.col("symbol")).alias("symbol")).agg(
        F.count(F.lit(1)).alias("records"),
        F.min(F.when(candidate, F.unix_micros("event_time"))).alias("first_micros"),
        F.max(F.when(candidate, F.unix_micros("event_time"))).alias("last_micros"),
        F.max(F.when(candidate, F.unix_millis("ingest_time") - F.unix_millis("event_time"))).alias("max_lag_ms"),
        _newest(F.col("outcome") == ACCEPT, newest_length).alias("newest_ticks"),
    )


def split_new_rows(recomputed: DataFrame, last_event_time: Column) -> tuple[DataFrame, DataFrame]:
    """(rows after each symbol's newest earlier tick, rows at or before it).

    The first are new signal rows for sure (no stored tick is newer than the watermark), so they are appended;
    only the second may correct stored rows and need the comparison and the MERGE.
    """
    beyond = last_event_time.isNull() | (F.col("event_time") > last_event_time)
    return (
        recomputed.where(beyond).select(*SIGNAL_COLUMNS),
        recomputed.where(~beyond).select(*SIGNAL_COLUMNS),
    )
