"""The streaming job: Kafka ticks -> Delta raw_ticks, ticks, ticks_quarantine, signals, pipeline_metrics.

    spark-submit jobs/stream_signals.py --config conf/local.yaml [--set key=value ...] [--once]
    python -m jobs.stream_signals --config conf/local.yaml [--once]

The entry point: configuration, checks of the endpoints, the Kafka source, the query and a clean stop. Each
micro-batch runs in foreachBatch (jobs.pipeline.micro_batch): parse, classify, write ticks and quarantine,
recompute signals over a bounded context, upsert, state, metrics; every write idempotent under a retried batch.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
import time
from dataclasses import asdict

from pyspark.errors import StreamingQueryException
from pyspark.sql import SparkSession
from pyspark.sql.streaming import StreamingQuery

if __package__ in (None, ""):
    # Run as a script by spark-submit: make the project root importable (py-files do this on a cluster).
    import os

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# The imports below follow the sys.path set-up above (E402 by design).
from jobs.pipeline.config import (  # noqa: E402
    AppConfig,
    ConfigError,
    add_config_arguments,
    config_from_args,
    is_remote,
    resolve_local_path,
)
from jobs.pipeline.delta_io import ensure_tables  # noqa: E402
from jobs.pipeline.kafka_io import KafkaUnreachable, check_kafka, read_records  # noqa: E402
from jobs.pipeline.micro_batch import FaultHook, RunTotals, SignalBatchProcessor, StopRequested  # noqa: E402
from jobs.pipeline.state import SettingsChanged  # noqa: E402
from jobs.pipeline.stopping import stop_on_signals  # noqa: E402
from jobs.pipeline.tables import SIGNAL_STATE  # noqa: E402
from jobs.pipeline.warm_up import warm_up  # noqa: E402

log = logging.getLogger("stream_signals")


def prepare(spark: SparkSession, config: AppConfig, fault_hook: FaultHook | None = None) -> SignalBatchProcessor:
    """The tables (created when missing), the catalog, and the batch processor with its state, loaded before any
    query starts: changed window settings are refused here."""
    created = ensure_tables(spark, config)
    if created and config.stream.register_catalog:
        from jobs.aws.glue import sync_catalog

        sync_catalog(config)
    processor = SignalBatchProcessor(spark, config, config.checkpoint_path(), fault_hook=fault_hook)
    if SIGNAL_STATE.name in created:
        processor.start_without_state()
    _ = processor.states
    return processor


def start_query(spark: SparkSession, config: AppConfig, once: bool, processor: SignalBatchProcessor) -> StreamingQuery:
    writer = (
        read_records(spark, config)
        .writeStream.queryName(config.stream.checkpoint_name)
        .option("checkpointLocation", config.checkpoint_path())
        .foreachBatch(processor)
    )
    writer = (
        writer.trigger(availableNow=True) if once else writer.trigger(processingTime=config.stream.trigger_interval)
    )
    return writer.start()


def _announce_stop(name: str) -> None:
    log.warning("received %s: finishing the running micro-batch", name)


def run(
    spark: SparkSession,
    config: AppConfig,
    once: bool,
    timeout_seconds: float | None = None,
    fault_hook: FaultHook | None = None,
    stop: threading.Event | None = None,
) -> RunTotals:
    """Run until the topic is drained (`once`), a stop signal, `stop` set by another thread, or the timeout; the
    running micro-batch finishes first in every case. A stop that comes before the query starts starts none."""
    stop_requested = stop if stop is not None else threading.Event()
    with stop_on_signals(stop_requested, _announce_stop):
        processor = prepare(spark, config, fault_hook)
        try:
            if not once and config.stream.warm_up and not stop_requested.is_set():
                warm_up(spark, config)
            if stop_requested.is_set():
                log.warning("stopped before the query started: nothing read")
                return processor.totals
            query = start_query(spark, config, once, processor)
            deadline = time.monotonic() + timeout_seconds if timeout_seconds else None
            try:
                while query.isActive and not stop_requested.is_set():
                    if deadline and time.monotonic() > deadline:
                        log.warning("timeout of %.0f s reached: stopping", timeout_seconds)
                        break
                    try:
                        query.awaitTermination(1)
                    except StreamingQueryException as error:
                        raise QueryFailed(str(error)) from None
                _stop_between_batches(query, processor, config.stream.stop_grace_seconds)
                failure = query.exception()
                # A batch planned after the stop was refused inside foreachBatch: Spark reports that as its failure.
                if failure and StopRequested.__name__ not in str(failure):
                    raise QueryFailed(str(failure))
            finally:
                if query.isActive:
                    query.stop()
        finally:
            processor.close()
    return processor.totals


def _stop_between_batches(query: StreamingQuery, processor: SignalBatchProcessor, grace_seconds: float) -> None:
    """Stop with every started batch either committed whole or not begun, never half-written.

    The processor takes no batch after the request and lets the running one finish; `query.stop()` then
    interrupts the micro-batch thread while it is idle or holding the next, untouched batch.
    """
    if not query.isActive:
        return
    if processor.finish_running_batch(grace_seconds):
        # The batch's Python part is done; let Spark write its commit before the interrupt.
        deadline = time.monotonic() + 30
        while (
            query.isActive
            and query.status.get("isTriggerActive")
            and not processor.parked.is_set()
            and time.monotonic() < deadline
        ):
            time.sleep(0.05)
    else:
        log.warning(
            "the running micro-batch did not end within %.0f s: stopping it (it runs again on restart)", grace_seconds
        )
    query.stop()


class StorageUnreachable(RuntimeError):
    pass


class QueryFailed(RuntimeError):
    """The streaming query stopped on an error; the message holds Spark's whole report."""

    def __init__(self, detail: str) -> None:
        super().__init__(f"streaming query failed: {detail}")
        self.detail = detail

    def summary(self) -> str:
        """The first line that says what went wrong (Spark's report starts with the cause)."""
        lines = [line.strip() for line in self.detail.splitlines() if line.strip()]
        return lines[0][:400] if lines else "unknown error"


_STORAGE_MARKERS = ("s3a://", "S3AFileSystem", "software.amazon.awssdk", "com.amazonaws")
_KAFKA_MARKERS = ("org.apache.kafka", "kafka010")


def _endpoint_hint(detail: str, config: AppConfig) -> str:
    """Which endpoint Spark's report is about, with the setting to check (the report's first line may not say)."""
    if is_remote(config.storage.root) and any(marker in detail for marker in _STORAGE_MARKERS):
        endpoint = config.s3.endpoint or f"AWS S3 in {config.s3.region}"
        return f" [S3 storage: storage.root={config.storage.root}, s3.endpoint={endpoint}]"
    if any(marker in detail for marker in _KAFKA_MARKERS):
        return f" [Kafka: kafka.bootstrap_servers={config.kafka.bootstrap_servers}]"
    return ""


def _write_failure(detail: str) -> str:
    """Spark's whole report to a file under .local/logs (the one stderr line points there)."""
    folder = resolve_local_path(".local/logs")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"stream_signals-failure-{time.strftime('%Y%m%dT%H%M%S')}.log"
    path.write_text(detail)
    return str(path)


def check_endpoints(config: AppConfig) -> None:
    """Before Spark starts: the brokers and the topic answer, the bucket exists (one clear line otherwise)."""
    check_kafka(config)
    root = config.storage.root
    if root.startswith(("s3://", "s3a://")):
        from jobs.aws.clients import aws_client, split_s3_uri

        bucket, _ = split_s3_uri(root)
        endpoint = config.s3.endpoint or "the AWS default endpoint"
        try:
            aws_client(config, "s3").head_bucket(Bucket=bucket)
        except Exception as error:  # botocore raises many types: any failure means the job cannot write
            raise StorageUnreachable(
                f"bucket {bucket!r} of storage.root is not reachable at {endpoint} (s3.endpoint): "
                f"{type(error).__name__}: {error}"
            ) from None


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
    try:
        config = config_from_args(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()
    with stop_on_signals(stop, _announce_stop):
        return _checked_run(config, args.once, args.timeout, stop)


def _checked_run(config: AppConfig, once: bool, timeout: float | None, stop: threading.Event) -> int:
    # The client libraries' own chatter stays out of the one line a failed check prints.
    for noisy in ("kafka", "botocore", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.CRITICAL)
    try:
        check_endpoints(config)
    except (KafkaUnreachable, StorageUnreachable) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for noisy in ("kafka", "botocore", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.NOTSET)
    if stop.is_set():  # stopped while the endpoints were checked: nothing to start
        _print_summary(RunTotals())
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    # py4j reports its connections at INFO, the last one after the job's own final line: a failed query's one-line
    # error must stay the last thing a user reads.
    logging.getLogger("py4j").setLevel(logging.WARNING)
    from jobs.pipeline.spark_session import build_spark

    spark = build_spark(config)
    failure: tuple[int, str] | None = None
    # Again: creating the SparkContext replaced the SIGINT handler with PySpark's own (KeyboardInterrupt).
    with stop_on_signals(stop, _announce_stop):
        try:
            totals = run(spark, config, once=once, timeout_seconds=timeout, stop=stop)
        except SettingsChanged as exc:
            failure = (2, f"error: {exc}")
        except QueryFailed as exc:
            where = _write_failure(exc.detail)
            hint = _endpoint_hint(exc.detail, config)
            failure = (1, f"error: the streaming query stopped: {exc.summary()}{hint} (full report: {where})")
        finally:
            spark.stop()
    if failure is not None:
        # After Spark has stopped, so the error is the last line on stderr.
        print(failure[1], file=sys.stderr)
        return failure[0]
    _print_summary(totals)
    return 0


def _print_summary(totals: RunTotals) -> None:
    print(json.dumps({"event": "summary", **asdict(totals)}))


if __name__ == "__main__":
    sys.exit(main())
