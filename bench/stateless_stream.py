"""The stateless baseline of the streaming benchmarks: Kafka -> from_json -> Delta append, nothing else.

    python -m bench.stateless_stream [--config conf/local.yaml] [--set key=value ...] [--once] [--timeout S]

Built on the job's own Spark session (`jobs.pipeline.spark_session.build_spark(config)`), the same Kafka
source options (the job's `kafka_options`, kafka.topic, starting offsets, maxOffsetsPerTrigger)
and the same trigger (stream.trigger_interval, or availableNow with --once). Each v1 record is parsed with
from_json and appended with Delta's streaming sink to `storage.root/stateless_ticks`, checkpoint
`storage.checkpoint_root/stateless_ticks`. No validation, de-duplication, state or signals: the fixed cost
of a micro-batch that the job is compared with. Stops between two batches on SIGTERM/Ctrl-C.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from jobs.pipeline.config import AppConfig, ConfigError, add_config_arguments, config_from_args

TABLE = "stateless_ticks"
V1_SCHEMA = "v int, symbol string, ts string, close double, volume long"

log = logging.getLogger("stateless_stream")


def kafka_source_options(config: AppConfig) -> dict[str, str]:
    """The job's own Kafka client options (bootstrap servers, security, timeouts, kafka.options)."""
    for module_name in ("jobs.pipeline.kafka_io", "jobs.stream_signals"):
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        if hasattr(module, "kafka_options"):
            return dict(module.kafka_options(config))
    raise ConfigError("the job's kafka_options (jobs.pipeline.kafka_io or jobs.stream_signals) was not found")


def start(spark: Any, config: AppConfig, once: bool) -> Any:
    from pyspark.sql import functions as F

    reader = spark.readStream.format("kafka").options(**kafka_source_options(config))
    reader = reader.option("subscribe", config.kafka.topic).option("startingOffsets", config.kafka.starting_offsets)
    if config.kafka.max_offsets_per_trigger:
        reader = reader.option("maxOffsetsPerTrigger", config.kafka.max_offsets_per_trigger)
    message = F.from_json(F.col("value").cast("string"), V1_SCHEMA)
    rows = (
        reader.load()
        .select(message.alias("m"), "topic", "partition", "offset", F.col("timestamp").alias("kafka_timestamp"))
        .select(
            F.col("m.symbol").alias("symbol"),
            F.to_timestamp(F.col("m.ts")).alias("event_time"),
            F.col("m.close").alias("close"),
            F.col("m.volume").alias("volume"),
            "topic",
            "partition",
            "offset",
            "kafka_timestamp",
            F.current_timestamp().alias("ingest_time"),
        )
    )
    writer = (
        rows.writeStream.format("delta")
        .queryName(TABLE)
        .outputMode("append")
        .option("checkpointLocation", config.checkpoint_path(TABLE))
    )
    writer = (
        writer.trigger(availableNow=True) if once else writer.trigger(processingTime=config.stream.trigger_interval)
    )
    return writer.start(config.table_path(TABLE))


def batch_progress(query: Any) -> list[dict[str, Any]]:
    """Batch id, input rows and triggerExecution duration of the recent batches that read records."""
    return [
        {
            "batch_id": int(progress["batchId"]),
            "records_read": int(progress.get("numInputRows", 0)),
            "batch_duration_ms": int(progress.get("durationMs", {}).get("triggerExecution", 0)),
        }
        for progress in (json.loads(item.json) if hasattr(item, "json") else item for item in query.recentProgress)
        if int(progress.get("numInputRows", 0)) > 0
    ]


def run(spark: Any, config: AppConfig, once: bool, timeout: float | None, progress_json: Path | None) -> int:
    query = start(spark, config, once)
    stop = threading.Event()
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            previous[signum] = signal.signal(signum, lambda *_: stop.set())
    deadline = time.monotonic() + timeout if timeout else None
    try:
        while query.isActive and not stop.is_set() and not (deadline and time.monotonic() > deadline):
            query.awaitTermination(1)
        grace = time.monotonic() + 120
        while query.isActive and query.status.get("isTriggerActive") and time.monotonic() < grace:
            time.sleep(0.2)
        progress = batch_progress(query)
        if query.isActive:
            query.stop()
        if query.exception():
            raise RuntimeError(f"streaming query failed: {query.exception()}")
    finally:
        if query.isActive:
            query.stop()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if progress_json is not None:
        progress_json.parent.mkdir(parents=True, exist_ok=True)
        progress_json.write_text(json.dumps(progress))
    print(
        json.dumps(
            {"event": "summary", "batches": len(progress), "records_read": sum(p["records_read"] for p in progress)}
        )
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.stateless_stream", description=__doc__.split("\n\n")[0])
    add_config_arguments(parser)
    parser.add_argument("--once", action="store_true", help="process everything available, then stop (availableNow)")
    parser.add_argument("--timeout", type=float, metavar="SECONDS", help="stop after this many seconds")
    parser.add_argument(
        "--progress-json", type=Path, metavar="PATH", help="write each batch's input rows and duration here at the end"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        config = config_from_args(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from jobs.pipeline.spark_session import build_spark

    spark = build_spark(config)
    try:
        return run(spark, config, args.once, args.timeout, args.progress_json)
    finally:
        spark.stop()


if __name__ == "__main__":
    sys.exit(main())
