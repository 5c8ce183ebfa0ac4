"""Warm-up of a continuous run: two synthetic micro-batches through the whole job against scratch tables.

A fresh driver's first batches are slow (code generation for ~170 plan stages, JIT, Delta's first commits): about
three times a warm batch on 2 cores, while ticks wait in Kafka. Before the query starts, the job runs the same
`SignalBatchProcessor` on two small synthetic batches (in-order ticks, a re-send, a reject; then a late tick, so
the stored-tick lookup, the context read and the corrections MERGE run too) against tables under
`storage.root/_warm_up/<id>`, then removes them. The job's own tables, checkpoint and topics are never touched:
publishing and catalog registration are off for the scratch run.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from datetime import UTC, datetime, timedelta

from pyspark.sql import DataFrame, SparkSession

from jobs.pipeline.config import AppConfig, with_overrides
from jobs.pipeline.delta_io import ensure_tables
from jobs.pipeline.micro_batch import SignalBatchProcessor
from jobs.pipeline.tables import KAFKA_RECORD_SCHEMA

log = logging.getLogger("stream_signals")

SCRATCH_FOLDER = "_warm_up"
_SYMBOLS = ("WARMUP.A", "WARMUP.B")


def scratch_config(config: AppConfig, run_id: str) -> AppConfig:
    """The job's configuration pointed at scratch tables, with every outside effect off."""
    root = f"{config.table_path(SCRATCH_FOLDER)}/{run_id}"
    return with_overrides(
        config,
        [
            f"storage.root={root}",
            "kafka.publish_signals=false",
            "stream.register_catalog=false",
            "stream.compact_every_batches=0",
        ],
    )


def synthetic_batches(spark: SparkSession, sma_long: int, now: datetime) -> list[DataFrame]:
    """Two batches of Kafka-shaped records: enough ticks for full windows, a re-send, a reject, a late tick."""
    start = now - timedelta(hours=1)

    def tick(symbol: str, second: float, close: float) -> str:
        ts = (start + timedelta(seconds=second)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        return json.dumps({"v": 1, "symbol": symbol, "ts": ts, "close": close, "volume": 100 + int(second) % 7})

    first = [tick(symbol, 10.0 * i, 100 + i % 5) for symbol in _SYMBOLS for i in range(sma_long + 2)]
    first += [first[0], "not json"]
    last = 10.0 * (sma_long + 2)
    second = [tick(symbol, last + 10.0 * i, 101.0) for symbol in _SYMBOLS for i in range(3)]
    second.append(tick(_SYMBOLS[0], 15.0, 99.5))  # late, inside the lateness: corrects stored signals

    def records(values: list[str], first_offset: int) -> DataFrame:
        rows = [(value[:8], value, "warm-up", 0, first_offset + i, now, now) for i, value in enumerate(values)]
        return spark.createDataFrame(rows, KAFKA_RECORD_SCHEMA)

    return [records(first, 0), records(second, len(first))]


def warm_up(spark: SparkSession, config: AppConfig) -> float:
    """Run the synthetic batches through the job against scratch tables, remove them; returns the seconds taken."""
    started = time.monotonic()
    run_id = uuid.uuid4().hex
    scratch = scratch_config(config, run_id)
    # Its batches are not the job's: their log lines stay out of the job's per-batch log.
    quiet = logging.getLogger("stream_signals.warm_up")
    quiet.setLevel(logging.WARNING)
    processor = SignalBatchProcessor(spark, scratch, checkpoint="unused", app_id=f"warm-up-{run_id}", batch_log=quiet)
    try:
        ensure_tables(spark, scratch)
        for batch_id, batch in enumerate(synthetic_batches(spark, config.signals.sma_long, datetime.now(UTC))):
            processor(batch, batch_id)
    finally:
        processor.close()
        _remove(spark, scratch.table_path(""), config.table_path(SCRATCH_FOLDER))
    seconds = time.monotonic() - started
    log.info(json.dumps({"event": "warm_up", "seconds": round(seconds, 1)}))
    return seconds


def _remove(spark: SparkSession, location: str, parent: str) -> None:
    """Delete the scratch folder through Hadoop's file system (a local path or s3a://, as the tables were
    written), and its parent when no other run's scratch is in it."""
    context = spark.sparkContext
    assert context._jvm is not None and context._jsc is not None, "no JVM behind the Spark context"
    hadoop_path = context._jvm.org.apache.hadoop.fs.Path
    scratch, folder = hadoop_path(location.rstrip("/")), hadoop_path(parent.rstrip("/"))
    fs = scratch.getFileSystem(context._jsc.hadoopConfiguration())
    fs.delete(scratch, True)
    if fs.exists(folder) and not fs.listStatus(folder):
        fs.delete(folder, False)
