"""The streaming job: Kafka ticks -> Delta raw_ticks, ticks, ticks_quarantine, signals, pipeline_metrics.

    spark-submit jobs/stream_signals.py --config conf/local.yaml [--set key=value ...] [--once]
    python -m jobs.stream_signals --config conf/local.yaml [--once]

Each micro-batch runs in foreachBatch: parse and validate, de-duplicate against stored ticks, quarantine
rejects, append ticks, then recompute the signals of every affected symbol from its earliest new tick on,
over a bounded context read back from Delta, and upsert the rows that are new or changed.
Every write is idempotent under a retried batch, so a restart on the same checkpoint never duplicates rows.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery

if __package__ in (None, ""):
    # Run as a script by spark-submit: make the project root importable (py-files do this on a cluster).
    import os

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from jobs.pipeline.config import AppConfig, ConfigError, add_config_arguments, config_from_args  # noqa: E402
from jobs.pipeline.delta_io import append_once, ensure_tables, upsert_signals, upsert_state  # noqa: E402
from jobs.pipeline.tables import ALL_TABLES, PIPELINE_METRICS, RAW_TICKS, TICKS, TICKS_QUARANTINE  # noqa: E402
from jobs.pipeline.transforms.batch import (  # noqa: E402
    ACCEPT,
    CONFLICT,
    DUPLICATE,
    classify_duplicates,
    effective_watermarks,
    flag_too_late,
    next_state,
    recompute_from,
    recomputed_signals,
    signal_changes,
)
from jobs.pipeline.transforms.parse import parse_records, quarantine_rows, valid_ticks  # noqa: E402

log = logging.getLogger("stream_signals")


def kafka_options(config: AppConfig) -> dict[str, str]:
    """Client settings shared by the Kafka source and the signals sink."""
    options = {
        "kafka.bootstrap.servers": config.kafka.bootstrap_servers,
        "kafka.security.protocol": config.kafka.security_protocol,
        "kafka.request.timeout.ms": str(config.kafka.request_timeout_ms),
    }
    if config.kafka.sasl_mechanism:
        options["kafka.sasl.mechanism"] = config.kafka.sasl_mechanism
    options.update({f"kafka.{key}": value for key, value in config.kafka.options.items()})
    return options


def read_records(spark: SparkSession, config: AppConfig) -> DataFrame:
    """The Kafka topic as a stream of records in the shape jobs.pipeline.transforms.parse expects."""
    reader = spark.readStream.format("kafka").options(**kafka_options(config))
    reader = reader.option("subscribe", config.kafka.topic).option("startingOffsets", config.kafka.starting_offsets)
    if config.kafka.max_offsets_per_trigger:
        reader = reader.option("maxOffsetsPerTrigger", config.kafka.max_offsets_per_trigger)
    return reader.load().select(
        F.col("key").cast("string").alias("kafka_key"),
        F.col("value").cast("string").alias("value"),
        "topic",
        "partition",
        "offset",
        F.col("timestamp").alias("kafka_timestamp"),
        F.current_timestamp().alias("ingest_time"),
    )


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


class SignalBatchProcessor:
    """The foreachBatch function. Holds the config and the paths; state lives in Delta only."""

    def __init__(self, spark: SparkSession, config: AppConfig, checkpoint: str) -> None:
        self.spark = spark
        self.config = config
        self.checkpoint = checkpoint
        self.paths = {spec.name: config.table_path(spec.name) for spec in ALL_TABLES}
        self._app_id: str | None = None
        self.totals = RunTotals()

    @property
    def app_id(self) -> str:
        """Delta's idempotent-write id: the streaming query's id, kept in its checkpoint.

        A new checkpoint is a new query, so its batch ids (starting at 0 again) are never mistaken for
        batches Delta has already committed.
        """
        if self._app_id is None:
            metadata = self.spark.read.text(f"{self.checkpoint}/metadata").first()
            self._app_id = "market-signals-" + json.loads(metadata[0])["id"]
        return self._app_id

    def _table(self, name: str) -> DataFrame:
        return self.spark.read.format("delta").load(self.paths[name])

    def __call__(self, batch: DataFrame, batch_id: int) -> None:
        started = time.monotonic()
        outcome = BatchOutcome(batch_id, datetime.now(UTC))
        batch = batch.persist()
        try:
            outcome.records_read = batch.count()
            if outcome.records_read:
                self._process(batch, batch_id, outcome)
        finally:
            batch.unpersist()
        outcome.batch_duration_ms = int((time.monotonic() - started) * 1000)
        if outcome.records_read:
            metrics = self.spark.createDataFrame([outcome.as_row()], schema=PIPELINE_METRICS.schema)
            append_once(metrics, self.paths["pipeline_metrics"], PIPELINE_METRICS, self.app_id, batch_id)
        self.totals.add(outcome)
        log.info(json.dumps({"event": "batch", **outcome.as_row(), "quarantined": outcome.quarantined}, default=str))

    def _process(self, batch: DataFrame, batch_id: int, outcome: BatchOutcome) -> None:
        config = self.config
        append_once(
            batch.withColumn("ingest_date", F.to_date("ingest_time")),
            self.paths["raw_ticks"],
            RAW_TICKS,
            self.app_id,
            batch_id,
        )

        parsed = parse_records(batch, config.stream.max_message_bytes, config.stream.source_timezone)
        parsed = parsed.localCheckpoint(eager=True)
        candidates = parsed.where(F.col("reject_reason").isNull())
        symbols = [row.symbol for row in candidates.select("symbol").distinct().collect()]
        stored_ticks = self._ticks_for_keys(candidates)
        state = self._table("_signal_state").where(F.col("symbol").isin(symbols))
        watermarks = effective_watermarks(state, batch_id).localCheckpoint(eager=True)

        classified = flag_too_late(
            classify_duplicates(candidates, stored_ticks), watermarks, config.signals.allowed_lateness_seconds
        )
        outcome_column = (
            F.when(F.col("disposition") != ACCEPT, F.col("disposition"))
            .when(F.col("too_late"), F.lit("too_late"))
            .otherwise(F.lit(ACCEPT))
        )
        # Materialised once: later steps write the tables these rows were compared against.
        classified = classified.withColumn("outcome", outcome_column).localCheckpoint(eager=True)
        accepted = classified.where(F.col("outcome") == ACCEPT)
        late_or_conflicting = classified.where(F.col("outcome").isin(CONFLICT, "too_late")).withColumns(
            {
                "reject_reason": F.col("outcome"),
                "reject_detail": F.when(
                    F.col("outcome") == CONFLICT,
                    F.concat(
                        F.lit("same symbol and event_time as "),
                        F.col("duplicate_of"),
                        F.lit(" with a different close or volume"),
                    ),
                ).otherwise(
                    F.lit(
                        f"older than the symbol's newest tick by more than {config.signals.allowed_lateness_seconds} s"
                    )
                ),
            }
        )
        rejects = parsed.where(F.col("reject_reason").isNotNull()).unionByName(
            late_or_conflicting.select(*parsed.columns)
        )
        append_once(valid_ticks(accepted.select(*parsed.columns)), self.paths["ticks"], TICKS, self.app_id, batch_id)
        append_once(quarantine_rows(rejects), self.paths["ticks_quarantine"], TICKS_QUARANTINE, self.app_id, batch_id)

        counts = {row["outcome"]: row["count"] for row in classified.groupBy("outcome").count().collect()}
        reasons = {row["reject_reason"]: row["count"] for row in rejects.groupBy("reject_reason").count().collect()}
        outcome.ticks_written = counts.get(ACCEPT, 0)
        outcome.duplicates = counts.get(DUPLICATE, 0)
        outcome.quarantined_by_reason = dict(sorted(reasons.items()))
        if outcome.ticks_written:
            lag = accepted.agg(F.max(F.unix_millis("ingest_time") - F.unix_millis("event_time"))).first()[0]
            outcome.max_event_time_lag_ms = int(lag) if lag is not None else None
            self._update_signals(accepted, watermarks, batch_id, outcome)

    def _ticks_for_keys(self, candidates: DataFrame) -> DataFrame:
        """Stored ticks with the same (symbol, event_time) as a candidate, read from the dates concerned."""
        first_date, last_date = candidates.agg(F.min(F.to_date("event_time")), F.max(F.to_date("event_time"))).first()
        if first_date is None:
            return self._table("ticks").limit(0)
        keys = candidates.select("symbol", "event_time").distinct()
        return (
            self._table("ticks")
            .where(F.col("event_date").between(F.lit(first_date), F.lit(last_date)))
            .join(F.broadcast(keys), on=["symbol", "event_time"], how="inner")
        )

    def _context(self, starts: DataFrame, watermarks: DataFrame) -> DataFrame:
        """Every stored tick of the affected symbols from their context start on (bounded per symbol)."""
        bounds = (
            starts.join(watermarks, on="symbol", how="left")
            .select(
                "symbol",
                "recompute_from",
                "context_start_time",
                F.col("last_event_time").isNotNull().alias("seen_before"),
            )
            .collect()
        )
        # A known symbol without a context start has too little history to trim: read all of it.
        if any(row.seen_before and row.context_start_time is None for row in bounds):
            lower = None
        else:
            lower = min((row.context_start_time or row.recompute_from) for row in bounds)
        ticks = self._table("ticks")
        if lower is not None:
            ticks = ticks.where(F.col("event_date") >= F.lit(lower.date()))
        starts_at = self.spark.createDataFrame(
            [(row.symbol, row.context_start_time) for row in bounds],
            schema="symbol string, context_start_time timestamp",
        )
        return (
            ticks.join(F.broadcast(starts_at), on="symbol", how="inner")
            .where(F.col("context_start_time").isNull() | (F.col("event_time") >= F.col("context_start_time")))
            .select("symbol", "event_time", "close", "volume")
        )

    def _update_signals(self, accepted: DataFrame, watermarks: DataFrame, batch_id: int, outcome: BatchOutcome) -> None:
        config = self.config.signals
        starts = recompute_from(accepted).localCheckpoint(eager=True)
        context = self._context(starts, watermarks).localCheckpoint(eager=True)
        recomputed = recomputed_signals(context, starts, config.sma_short, config.sma_long)
        stored = (
            self._table("signals")
            .join(F.broadcast(starts), on="symbol", how="inner")
            .where(F.col("event_time") >= F.col("recompute_from"))
        )
        changes = signal_changes(recomputed, stored).localCheckpoint(eager=True)
        new_state = next_state(
            context, watermarks, batch_id, config.allowed_lateness_seconds, config.sma_long
        ).localCheckpoint(eager=True)
        upsert_signals(self.spark, self.paths["signals"], changes, batch_id)
        upsert_state(self.spark, self.paths["_signal_state"], new_state)
        totals = changes.agg(
            F.count(F.when(F.col("is_new"), 1)).alias("new"),
            F.count(F.when(~F.col("is_new"), 1)).alias("corrected"),
        ).first()
        outcome.signals_emitted, outcome.signals_corrected = int(totals["new"]), int(totals["corrected"])
        if self.config.kafka.publish_signals:
            self._publish(changes)

    def _publish(self, changes: DataFrame) -> None:
        """Each new or corrected signal to the signals topic (at least once: a retried batch re-sends)."""
        payload = F.to_json(
            F.struct(
                *[c for c in changes.columns if c != "is_new"],
                (~F.col("is_new")).alias("is_correction"),
            )
        )
        (
            changes.select(F.col("symbol").alias("key"), payload.alias("value"))
            .write.format("kafka")
            .options(**kafka_options(self.config))
            .option("topic", self.config.kafka.signals_topic)
            .save()
        )


def start_query(spark: SparkSession, config: AppConfig, once: bool) -> tuple[StreamingQuery, SignalBatchProcessor]:
    created = ensure_tables(spark, config)
    if created and config.stream.register_catalog:
        from jobs.aws.glue import sync_catalog

        sync_catalog(config)
    checkpoint = config.checkpoint_path()
    processor = SignalBatchProcessor(spark, config, checkpoint)
    writer = (
        read_records(spark, config)
        .writeStream.queryName(config.stream.checkpoint_name)
        .option("checkpointLocation", checkpoint)
        .foreachBatch(processor)
    )
    writer = (
        writer.trigger(availableNow=True) if once else writer.trigger(processingTime=config.stream.trigger_interval)
    )
    return writer.start(), processor


def run(spark: SparkSession, config: AppConfig, once: bool, timeout_seconds: float | None = None) -> RunTotals:
    """Run until the topic is drained (`once`), a stop signal, or the timeout; stop cleanly."""
    query, processor = start_query(spark, config, once)
    stop_requested = threading.Event()

    def request_stop(signum: int, _frame: Any) -> None:
        log.warning("received %s: finishing the running micro-batch", signal.Signals(signum).name)
        stop_requested.set()

    previous_handlers = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            previous_handlers[signum] = signal.signal(signum, request_stop)
    deadline = time.monotonic() + timeout_seconds if timeout_seconds else None
    try:
        while query.isActive and not stop_requested.is_set():
            if deadline and time.monotonic() > deadline:
                log.warning("timeout of %.0f s reached: stopping", timeout_seconds)
                break
            query.awaitTermination(1)
        _stop_between_batches(query)
        if query.exception():
            raise RuntimeError(f"streaming query failed: {query.exception()}")
    finally:
        if query.isActive:
            query.stop()
        for signum, handler in previous_handlers.items():
            signal.signal(signum, handler)
    return processor.totals


def _stop_between_batches(query: StreamingQuery, grace_seconds: float = 120.0) -> None:
    """Let a running micro-batch finish before stopping, so a stop is never a half-written batch."""
    deadline = time.monotonic() + grace_seconds
    while query.isActive and query.status.get("isTriggerActive") and time.monotonic() < deadline:
        time.sleep(0.2)
    if query.isActive:
        query.stop()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stream_signals",
        description=(
            "Read ticks from Kafka, write the Delta tables raw_ticks, ticks, ticks_quarantine, signals and "
            "pipeline_metrics, and keep the signals equal to a recomputation over all ticks (late ticks "
            "correct the rows after them). Stops cleanly on SIGTERM/Ctrl-C after the running micro-batch."
        ),
    )
    add_config_arguments(parser)
    parser.add_argument(
        "--once",
        action="store_true",
        help="process everything available in the topic, then stop (trigger availableNow)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="stop after this many seconds (default: run until stopped)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        config = config_from_args(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from jobs.pipeline.spark_session import build_spark

    spark = build_spark(config)
    try:
        totals = run(spark, config, once=args.once, timeout_seconds=args.timeout)
    finally:
        spark.stop()
    print(json.dumps({"event": "summary", **asdict(totals)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
