"""The foreachBatch function of the streaming job: one micro-batch of Kafka records -> the Delta tables.

The steps, in the order the README describes them:

1. parse        records -> ticks or parse rejects (jobs.pipeline.transforms.parse)
2. classify     too_late, then duplicates and conflicting duplicates, against the batch, the stored ticks of
                the same keys and the per-symbol state (transforms.batch.classify_records), and the counts in
                the same job; a second pass with stored ticks only when a record may repeat one
3. write        raw_ticks, ticks and ticks_quarantine appends
4. recompute    signals of every affected symbol from its earliest new tick on, over a context of stored ticks
                bounded per symbol: its `sma_long` newest, which the state holds (no read), or for late ticks
                from its context start (transforms.batch.recomputed_signals; the bounds are jobs.pipeline.state's)
5. upsert       rows after each symbol's newest earlier tick are new: appended; rows before it may correct a
                stored row: compared and MERGEd (only when late ticks arrived); published first when enabled
6. state        the per-symbol state (jobs.pipeline.state), rewritten whole (beside the signal writes)
7. metrics      one pipeline_metrics row, and a JSON log line
(every `stream.compact_every_batches` batches with ticks: compact the partitions before the lateness horizon)

Work per batch is bounded by the batch: a symbol's `sma_long` newest stored ticks come from the state, and only
a symbol with late ticks reads `ticks`, back to its context start (about two lateness periods). Every read of `ticks`
and `signals` carries literal symbol, date and time bounds that let Delta skip partitions and files; the state
lives in the driver.
Every write is idempotent under a retried batch (Delta txnAppId/txnVersion for appends and overwrites, the
state's saved previous values for the classification, content comparison for the MERGE), so a restart on the
same checkpoint never writes anything twice, whichever writes the failed attempt had committed.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import reduce
from typing import Any, TypeVar

from pyspark.sql import DataFrame, Row, SparkSession
from pyspark.sql import functions as F

from jobs.pipeline.config import AppConfig
from jobs.pipeline.delta_io import append_once, compact, merge_signal_corrections, overwrite_once, signal_rows
from jobs.pipeline.kafka_io import publish_signals
from jobs.pipeline.state import (
    StateSettings,
    SymbolState,
    Tick,
    Watermark,
    check_settings,
    load_state,
    newest_ticks,
    rebuild_context_starts,
    state_frame,
    ticks_of,
    timestamp_literal,
    utc_day,
)
from jobs.pipeline.tables import ALL_TABLES, PIPELINE_METRICS, RAW_TICKS, SIGNAL_STATE, SIGNALS, TICKS, TICKS_QUARANTINE
from jobs.pipeline.transforms.batch import (
    ACCEPT,
    CANDIDATE_OUTCOMES,
    DUPLICATE,
    batch_summary,
    classify_records,
    per_symbol_time,
    recomputed_signals,
    signal_changes,
    split_new_rows,
)
from jobs.pipeline.transforms.batch import newest_ticks as newest_ticks_of
from jobs.pipeline.transforms.parse import parse_records, quarantine_rows, utc_date, valid_ticks

log = logging.getLogger("stream_signals")

_TICK_COLUMNS = ["symbol", "event_time", "close", "volume"]
# Symbols whose context starts lie further apart than this are read with separate scans, so one long-silent
# symbol does not pull every symbol's read back to its own old context.
_MIN_CONTEXT_GAP_MICROS = 3600 * 1_000_000

FaultHook = Callable[[str], None]
T = TypeVar("T")


@dataclass
class BatchOutcome:
    batch_id: int
    batch_started_at: datetime
    records_read: int = 0
    ticks_written: int = 0
    quarantined_by_reason: dict[str, int] = field(default_factory=dict)
    duplicates: int = 0
    signals_emitted: int = 0
    signals_corrected: int = 0
    batch_duration_ms: int = 0
    max_event_time_lag_ms: int | None = None

    @property
    def quarantined(self) -> int:
        return sum(self.quarantined_by_reason.values())

    def as_row(self) -> dict[str, Any]:
        return {
            "batch_id": self.batch_id,
            "batch_started_at": self.batch_started_at,
            "records_read": self.records_read,
            "ticks_written": self.ticks_written,
            "quarantined": self.quarantined,
            "quarantined_by_reason": self.quarantined_by_reason,
            "duplicates": self.duplicates,
            "signals_emitted": self.signals_emitted,
            "signals_corrected": self.signals_corrected,
            "batch_duration_ms": self.batch_duration_ms,
            "max_event_time_lag_ms": self.max_event_time_lag_ms,
        }


@dataclass
class RunTotals:
    """Counts over every batch of one run (kept as sums, so a long run holds no per-batch history)."""

    batches: int = 0
    records_read: int = 0
    ticks_written: int = 0
    quarantined: int = 0
    duplicates: int = 0
    signals_emitted: int = 0
    signals_corrected: int = 0

    def add(self, outcome: BatchOutcome) -> None:
        if not outcome.records_read:
            return
        self.batches += 1
        self.records_read += outcome.records_read
        self.ticks_written += outcome.ticks_written
        self.quarantined += outcome.quarantined
        self.duplicates += outcome.duplicates
        self.signals_emitted += outcome.signals_emitted
        self.signals_corrected += outcome.signals_corrected


@dataclass(frozen=True)
class Accepted:
    """Per symbol, the accepted ticks of the batch: earliest and newest event time (epoch micros), count, and
    the `sma_long` newest ticks, newest first."""

    first: int
    last: int
    count: int
    newest: tuple[Tick, ...] = ()


class StopRequested(RuntimeError):
    """Raised by a batch that waited for a stop that never interrupted it (a failed query, replayed on restart)."""


class SignalBatchProcessor:
    """The foreachBatch function. Holds the config, the table paths and the per-symbol state."""

    def __init__(
        self,
        spark: SparkSession,
        config: AppConfig,
        checkpoint: str,
        app_id: str | None = None,
        fault_hook: FaultHook | None = None,
        batch_log: logging.Logger = log,
    ) -> None:
        self.spark = spark
        self._batch_log = batch_log
        self.config = config
        self.checkpoint = checkpoint
        self.paths = {spec.name: config.table_path(spec.name) for spec in ALL_TABLES}
        self._app_id = app_id
        self._fault_hook = fault_hook
        self._states: dict[str, SymbolState] | None = None
        self.settings = StateSettings.of(config.signals)
        self.totals = RunTotals()
        self._batches_with_ticks = 0
        self._started = time.monotonic()
        self._steps_ms: dict[str, int] = {}
        self._writers = ThreadPoolExecutor(max_workers=4, thread_name_prefix="delta-writer")
        # Held for the whole of a batch: a stop waits on it, so it never lands between two writes of a batch.
        self._batch_lock = threading.Lock()
        self._stop_requested = threading.Event()
        self.parked = threading.Event()  # a batch that arrived after the stop request waits to be stopped

    # ------------------------------------------------------------------ identity and state

    @property
    def app_id(self) -> str:
        """Delta's idempotent-write id: the streaming query's id, kept in its checkpoint.

        A new checkpoint is a new query, so its batch ids (starting at 0 again) are never mistaken for
        batches Delta has already committed.
        """
        if self._app_id is None:
            metadata = self.spark.read.text(f"{self.checkpoint}/metadata").first()
            assert metadata is not None, f"no metadata in checkpoint {self.checkpoint}"
            self._app_id = "market-signals-" + json.loads(metadata[0])["id"]
        return self._app_id

    @property
    def states(self) -> dict[str, SymbolState]:
        if self._states is None:
            self._states = self.load_states()
        return self._states

    def start_without_state(self) -> None:
        """Start from no per-symbol state without reading the state table: for a table this run has just created
        (a read of it costs seconds in a fresh JVM, and finds nothing)."""
        self._states = {}

    def load_states(self) -> dict[str, SymbolState]:
        """The state table, checked against the configured windows (raises SettingsChanged on a change)."""
        states, recorded = load_state(self.spark, self.paths[SIGNAL_STATE.name])
        if check_settings(recorded, self.settings):
            log.warning(
                "signals.allowed_lateness_seconds changed to %d: rebuilding the context starts of %d symbols",
                self.settings.allowed_lateness_seconds,
                len(states),
            )
            states = rebuild_context_starts(self.spark, self._table(TICKS.name), states, self.settings)
        return states

    def _table(self, name: str) -> DataFrame:
        return self.spark.read.format("delta").load(self.paths[name])

    def _fault(self, step: str) -> None:
        """A test hook between the writes of a batch (raising here simulates a crash at that point)."""
        if self._fault_hook is not None:
            self._fault_hook(step)

    def close(self) -> None:
        self._writers.shutdown(wait=True)

    # ------------------------------------------------------------------ the batch

    def _mark(self, step: str) -> None:
        """Milliseconds from the batch's start to the end of a step, logged with the batch (where time goes)."""
        self._steps_ms[step] = int((time.monotonic() - self._started) * 1000)

    # ------------------------------------------------------------------ stopping between batches

    def finish_running_batch(self, timeout_seconds: float) -> bool:
        """Take no new batch, and wait for the running one to end; False when it is still running at the timeout."""
        self._stop_requested.set()
        if not self._batch_lock.acquire(timeout=timeout_seconds):
            return False
        self._batch_lock.release()
        return True

    def __call__(self, batch: DataFrame, batch_id: int) -> None:
        with self._batch_lock:
            if not self._stop_requested.is_set():
                self._run_batch(batch, batch_id)
                return
        self._park(batch_id)

    def _park(self, batch_id: int) -> None:
        """Hold a batch planned after the stop request, untouched, until `query.stop()` interrupts it.

        PySpark runs this callback's JVM calls on the micro-batch thread itself (pinned threads), so the JVM
        sleep below is what `query.stop()` interrupts; Spark then ends the query as stopped, not failed, and the
        batch, of which nothing was written, runs again from its planned offsets on the next start.
        """
        log.info("stop requested: batch %d is left, unwritten, to the next run", batch_id)
        self.parked.set()
        # The interrupt comes back through py4j, which would log it as an error with a traceback: it is the stop.
        logging.getLogger("py4j.clientserver").setLevel(logging.CRITICAL)
        jvm_sleep = self.spark.sparkContext._jvm.java.lang.Thread.sleep  # type: ignore[union-attr]
        deadline = time.monotonic() + self.config.stream.stop_grace_seconds
        while time.monotonic() < deadline:
            jvm_sleep(200)
        raise StopRequested(f"batch {batch_id} was planned after the stop request and left to the next run")

    def _run_batch(self, batch: DataFrame, batch_id: int) -> None:
        started = self._started = time.monotonic()
        self._steps_ms = {}
        outcome = BatchOutcome(batch_id, datetime.now(UTC))
        states = self.states
        _ = self.app_id  # resolved once, before the writer threads use it
        batch = batch.persist()
        pending: list[Future[None]] = []
        try:
            pending.append(self._submit(self._write_raw, batch, batch_id))
            self._process(batch, batch_id, states, outcome, pending)
        finally:
            _wait_all(pending)
            batch.unpersist()
        self._mark("writes")
        outcome.batch_duration_ms = int((time.monotonic() - started) * 1000)
        if outcome.records_read:
            self._write_metrics(outcome)
            self._mark("metrics")
        self.totals.add(outcome)
        if outcome.ticks_written:
            self._batches_with_ticks += 1
            every = self.config.stream.compact_every_batches
            if every and self._batches_with_ticks % every == 0:
                self.compact_settled(states)
        self._batch_log.info(
            json.dumps({"event": "batch", **outcome.as_row(), "steps_ms": self._steps_ms}, default=str)
        )

    def _submit(self, write: Callable[..., T], *args: Any) -> Future[T]:
        return self._writers.submit(write, *args)

    def _process(
        self,
        batch: DataFrame,
        batch_id: int,
        states: dict[str, SymbolState],
        outcome: BatchOutcome,
        pending: list[Future[None]],
    ) -> None:
        # 1. parse
        parsed = self.parse(batch).persist()
        classified: DataFrame | None = None
        try:
            # 2. classify (and count, in the same job)
            watermarks = {symbol: state.before(batch_id) for symbol, state in states.items()}
            classified, summary = self.classify(parsed, watermarks)
            accepted = self.summarize(summary, outcome)
            self._mark("classified")
            # 3. write ticks and quarantine (in parallel with the recomputation)
            pending.append(self._submit(self._write_ticks, classified, batch_id))
            if outcome.quarantined:
                pending.append(self._submit(self._write_quarantine, classified, batch_id))
            if accepted:
                # 4.-6. recompute, upsert, state
                self.update_signals(classified, accepted, watermarks, batch_id, outcome, states)
                self._mark("signals_and_state")
        finally:
            _wait_all(pending)
            pending.clear()
            if classified is not None:
                classified.unpersist()
            parsed.unpersist()

    def parse(self, batch: DataFrame) -> DataFrame:
        stream = self.config.stream
        return parse_records(batch, stream.max_message_bytes, stream.source_timezone, stream.max_future_seconds)

    def classify(self, parsed: DataFrame, watermarks: dict[str, Watermark]) -> tuple[DataFrame, list[Row]]:
        """Every record with its outcome (transforms.batch.classify_records), cached, and the batch's summary.

        The first pass looks up no stored tick: only a candidate at or before its symbol's newest stored tick can
        repeat one, which the summary shows. When there are such candidates, a second pass looks up the stored
        ticks in between; one older than the lateness horizon is too_late whatever it repeats, so the lookup
        never reaches back further than the horizon.
        """
        newest = _newest_before(watermarks)
        last_event_time = per_symbol_time(newest)
        lateness_seconds = self.config.signals.allowed_lateness_seconds
        no_stored = self.spark.createDataFrame([], TICKS.schema)
        classified = classify_records(parsed, no_stored, last_event_time, lateness_seconds).persist()
        summary = self._summary(classified)
        self._mark("parsed")
        first_candidate: dict[str, int] = {}
        for row in summary:
            if row.outcome in CANDIDATE_OUTCOMES:
                first_candidate[row.symbol] = min(row.first_micros, first_candidate.get(row.symbol, row.first_micros))
        lateness = lateness_seconds * 1_000_000
        lookups = {
            symbol: (max(first, newest[symbol] - lateness), newest[symbol])
            for symbol, first in first_candidate.items()
            if symbol in newest and first <= newest[symbol]
        }
        if not lookups:
            return classified, summary
        classified.unpersist()
        classified = classify_records(parsed, self._stored_ticks(lookups), last_event_time, lateness_seconds).persist()
        return classified, self._summary(classified)

    def _summary(self, classified: DataFrame) -> list[Row]:
        return batch_summary(classified, self.config.signals.sma_long).collect()

    def summarize(self, summary: list[Row], outcome: BatchOutcome) -> dict[str, Accepted]:
        """Fill the batch's counts from its summary; returns the accepted ticks per symbol."""
        accepted: dict[str, Accepted] = {}
        reasons: dict[str, int] = {}
        lags: list[int] = []
        for row in summary:
            outcome.records_read += row.records
            if row.outcome == ACCEPT:
                accepted[row.symbol] = Accepted(
                    row.first_micros, row.last_micros, row.records, ticks_of(row.newest_ticks)
                )
                if row.max_lag_ms is not None:
                    lags.append(row.max_lag_ms)
            elif row.outcome == DUPLICATE:
                outcome.duplicates += row.records
            else:
                reasons[row.outcome] = reasons.get(row.outcome, 0) + row.records
        outcome.ticks_written = sum(item.count for item in accepted.values())
        # Every accepted tick gets a new signal row (a correction of a later row is counted apart).
        outcome.signals_emitted = outcome.ticks_written
        outcome.quarantined_by_reason = dict(sorted(reasons.items()))
        outcome.max_event_time_lag_ms = max(lags) if lags else None
        return accepted

    def update_signals(
        self,
        classified: DataFrame,
        accepted: dict[str, Accepted],
        watermarks: dict[str, Watermark],
        batch_id: int,
        outcome: BatchOutcome,
        states: dict[str, SymbolState],
    ) -> None:
        """Recompute the affected symbols' signals, publish and upsert them, and advance the state."""
        signals_config = self.config.signals
        new_ticks = classified.where(F.col("outcome") == ACCEPT).select(*_TICK_COLUMNS)
        stored, read_ticks = self._context(accepted, watermarks)
        context = stored.unionByName(new_ticks)
        if read_ticks:
            # On a retried batch the stored ticks already hold this batch's own: one row per key. (The state's
            # ticks lie at or before the watermark, before every new tick, on a retry too: nothing to drop.)
            context = context.dropDuplicates(["symbol", "event_time"]).persist()
        try:
            recompute_from = per_symbol_time({symbol: item.first for symbol, item in accepted.items()})
            recomputed = recomputed_signals(context, recompute_from, signals_config.sma_short, signals_config.sma_long)
            newest = _newest_before(watermarks)
            new_rows, revisited = split_new_rows(recomputed, per_symbol_time(newest))
            new_rows = new_rows.withColumn("revision", F.lit(0))
            # Symbols with a tick at or before their newest earlier one: their stored rows may change.
            late = {
                symbol: item.first
                for symbol, item in accepted.items()
                if symbol in newest and item.first <= newest[symbol]
            }
            # The state does not depend on the signal rows: computed and written beside them (a retry reads the
            # saved values).
            state_written = self._submit(self._next_states, context, accepted, watermarks, batch_id, states)
            changes = self._corrections(revisited, late, newest, batch_id) if late else None
            if changes is not None:
                outcome.signals_corrected = changes.where(~F.col("is_new")).count()
            if self.config.kafka.publish_signals:
                published = new_rows.withColumn("is_new", F.lit(True))
                if changes is not None:
                    published = published.unionByName(changes.drop("needs_write"))
                publish_signals(published, self.config)
                self._fault("published")
            append_once(signal_rows(new_rows, batch_id), self.paths[SIGNALS.name], SIGNALS, self.app_id, batch_id)
            self._fault("signals_appended")
            if changes is not None:
                rows = signal_rows(changes.where(F.col("needs_write")).drop("is_new", "needs_write"), batch_id)
                days = [utc_day(micros) for micros in [*late.values(), *(newest[symbol] for symbol in late)]]
                merge_signal_corrections(self.spark, self.paths[SIGNALS.name], rows, sorted(late), min(days), max(days))
                self._fault("signals_merged")
                changes.unpersist()
            updated = state_written.result()
            self._fault("state_written")
            states.clear()
            states.update(updated)
        finally:
            context.unpersist()

    def _corrections(
        self,
        revisited: DataFrame,
        late: dict[str, int],
        newest: dict[str, int],
        batch_id: int,
    ) -> DataFrame:
        """Rows at or before the watermark that are new (late ticks) or differ from the stored ones."""
        first = min(late.values())
        # A late tick is older than its symbol's newest tick, so every late symbol has one.
        last = max(newest[symbol] for symbol in late)
        stored = self._table(SIGNALS.name).where(
            F.col("event_date").between(F.lit(utc_day(first)), F.lit(utc_day(last)))
            & F.col("event_time").between(timestamp_literal(first), timestamp_literal(last))
            & F.col("symbol").isin(sorted(late))
        )
        return signal_changes(revisited, stored, batch_id).persist()

    def _next_states(
        self,
        context: DataFrame,
        accepted: dict[str, Accepted],
        watermarks: dict[str, Watermark],
        batch_id: int,
        states: dict[str, SymbolState],
    ) -> dict[str, SymbolState]:
        """Every symbol's state after this batch, written to `_signal_state`.

        The newest event time and ticks come from the batch's summary and the state before it (merged in the
        driver, jobs.pipeline.state.newest_ticks); the context start and mark advance in the driver
        (jobs.pipeline.state.Watermark.advance).
        """
        lateness = self.config.signals.allowed_lateness_seconds * 1_000_000
        length = self.config.signals.sma_long
        # A state written before the newest ticks were kept: read from the context once (one small job).
        unknown = [
            symbol
            for symbol in accepted
            if watermarks.get(symbol, Watermark()).last is not None and watermarks[symbol].recent is None
        ]
        from_context: dict[str, tuple[Tick, ...]] = {}
        if unknown:
            rows = newest_ticks_of(context.where(F.col("symbol").isin(unknown)), length).collect()
            from_context = {row.symbol: ticks_of(row.ticks) for row in rows}
        updated = dict(states)
        for symbol, item in accepted.items():
            before = watermarks.get(symbol, Watermark())
            recent = from_context.get(symbol) or newest_ticks(before.recent or (), item.newest, length)
            now = before.advance(item.first, item.last, recent[-1][0], lateness, recent)
            updated[symbol] = SymbolState(now, before, batch_id)
        state = state_frame(self.spark, updated, self.settings)
        overwrite_once(state, self.paths[SIGNAL_STATE.name], SIGNAL_STATE, self.app_id, batch_id)
        return updated

    def compact_settled(self, states: dict[str, SymbolState]) -> None:
        """OPTIMIZE the partitions no later batch rewrites or reads often: event dates before the newest lateness
        horizon, ingest dates before today. In this driver, between batches, so it never races the job's writes."""
        if not states:
            return
        newest = max(state.last for state in states.values())
        settled = utc_day(newest - self.config.signals.allowed_lateness_seconds * 1_000_000).isoformat()
        today = utc_day(int(time.time() * 1_000_000)).isoformat()
        started = time.monotonic()
        for spec, where in (
            (TICKS, f"event_date < '{settled}'"),
            (SIGNALS, f"event_date < '{settled}'"),
            (RAW_TICKS, f"ingest_date < '{today}'"),
            (TICKS_QUARANTINE, f"ingest_date < '{today}'"),
            (PIPELINE_METRICS, None),
        ):
            compact(self.spark, self.paths[spec.name], where)
        log.info(
            json.dumps({"event": "compaction", "before": settled, "seconds": round(time.monotonic() - started, 1)})
        )

    # ------------------------------------------------------------------ bounded reads

    def _stored_ticks(self, lookups: dict[str, tuple[int, int]]) -> DataFrame:
        """Stored ticks of the given symbols within [first, last] event time each (candidates' possible twins)."""
        if not lookups:
            # Planned as an empty relation: the duplicate join then needs no job.
            return self._table(TICKS.name).where(F.lit(False))
        first = min(bounds[0] for bounds in lookups.values())
        last = max(bounds[1] for bounds in lookups.values())
        lowest = per_symbol_time({symbol: lo for symbol, (lo, _) in lookups.items()})
        highest = per_symbol_time({symbol: hi for symbol, (_, hi) in lookups.items()})
        return (
            self._table(TICKS.name)
            .where(
                F.col("event_date").between(F.lit(utc_day(first)), F.lit(utc_day(last)))
                & F.col("event_time").between(timestamp_literal(first), timestamp_literal(last))
                & F.col("symbol").isin(sorted(lookups))
            )
            .where(F.col("event_time").between(lowest, highest))
        )

    def _context(self, accepted: dict[str, Accepted], watermarks: dict[str, Watermark]) -> tuple[DataFrame, bool]:
        """Stored ticks of the affected symbols, each from the bound its new ticks need (jobs.pipeline.state):
        the state's newest ticks when they all follow its newest stored tick (no read), else `ticks` from the
        context start (or the earliest new tick, or the tail of a state that holds no ticks); and whether
        `ticks` is read."""
        held: list[tuple[str, int, float, int]] = []
        lower: dict[str, int] = {}
        for symbol, item in accepted.items():
            before = watermarks.get(symbol, Watermark())
            if before.last is None:
                continue  # a new symbol has nothing stored before this batch
            if item.first > before.last and before.recent is not None:
                held.extend((symbol, *tick) for tick in before.recent)
            elif item.first > before.last and before.tail is not None:
                lower[symbol] = before.tail
            elif before.context_start is not None:
                lower[symbol] = min(before.context_start, item.first)
            else:
                lower[symbol] = 0  # a state from before starts were kept: the whole history is the context
        parts = [
            self.spark.createDataFrame(held, "symbol string, event_micros long, close double, volume long").select(
                "symbol", F.timestamp_micros("event_micros").alias("event_time"), "close", "volume"
            )
        ]
        lowest = per_symbol_time(lower)
        for group in _groups_by_start(lower, _MIN_CONTEXT_GAP_MICROS):
            first = min(lower[symbol] for symbol in group)
            scan = self._table(TICKS.name).where(
                (F.col("event_date") >= F.lit(utc_day(first)))
                & (F.col("event_time") >= timestamp_literal(first))
                & F.col("symbol").isin(group)
            )
            parts.append(scan.where(F.col("event_time") >= lowest).select(*_TICK_COLUMNS))
        return reduce(DataFrame.unionByName, parts), len(parts) > 1

    # ------------------------------------------------------------------ writes

    def _write_raw(self, batch: DataFrame, batch_id: int) -> None:
        raw = batch.withColumn("ingest_date", utc_date(F.col("ingest_time")))
        append_once(raw, self.paths[RAW_TICKS.name], RAW_TICKS, self.app_id, batch_id)

    def _write_ticks(self, classified: DataFrame, batch_id: int) -> None:
        accepted = classified.where(F.col("outcome") == ACCEPT).drop("outcome")
        append_once(valid_ticks(accepted), self.paths[TICKS.name], TICKS, self.app_id, batch_id)

    def _write_quarantine(self, classified: DataFrame, batch_id: int) -> None:
        rejects = classified.where(F.col("reject_reason").isNotNull()).drop("outcome")
        append_once(
            quarantine_rows(rejects), self.paths[TICKS_QUARANTINE.name], TICKS_QUARANTINE, self.app_id, batch_id
        )

    def _write_metrics(self, outcome: BatchOutcome) -> None:
        metrics = self.spark.createDataFrame([outcome.as_row()], schema=PIPELINE_METRICS.schema)
        append_once(metrics, self.paths[PIPELINE_METRICS.name], PIPELINE_METRICS, self.app_id, outcome.batch_id)


def _newest_before(watermarks: dict[str, Watermark]) -> dict[str, int]:
    """Each symbol's newest event time before the batch (epoch micros), for the symbols that have one."""
    return {symbol: mark.last for symbol, mark in watermarks.items() if mark.last is not None}


def _groups_by_start(lower: dict[str, int], gap: int) -> list[list[str]]:
    """Symbols sorted by where their context starts, split where two starts are more than `gap` apart."""
    groups: list[list[str]] = []
    previous: int | None = None
    for symbol, start in sorted(lower.items(), key=lambda item: item[1]):
        if previous is None or start - previous > gap:
            groups.append([])
        groups[-1].append(symbol)
        previous = start
    return groups


def _wait_all(futures: list[Future[None]]) -> None:
    """Wait for every write; then raise the first failure (a batch never returns with a write still running)."""
    errors = []
    for future in futures:
        try:
            future.result()
        except BaseException as error:  # noqa: BLE001 - every write must finish before one error is raised
            errors.append(error)
    if errors:
        raise errors[0]
