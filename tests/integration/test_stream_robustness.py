"""The streaming job fed what production feeds produce: poison and future timestamps, changed settings, records
that repeat stored ticks in later batches, micro-batches split anywhere, published corrections, compaction
running beside it, and endpoints that do not answer. Real broker, real Spark and Delta."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from chispa import assert_approx_df_equality, assert_df_equality
from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from jobs.pipeline.config import AppConfig
from jobs.pipeline.state import SettingsChanged
from jobs.pipeline.transforms.signals import SIGNAL_COLUMNS, compute_signals
from jobs.stream_signals import run

REPO_ROOT = __import__("pathlib").Path(__file__).resolve().parents[2]
# Crosses midnight of Asia/Kolkata (18:30 UTC) and of UTC.
T0 = datetime(2026, 11, 23, 18, 0, tzinfo=UTC)
WINDOWS = ["signals.sma_short=2", "signals.sma_long=4"]


def tick(symbol: str, minute: float, close: float | None = None, volume: int | None = None) -> tuple[str, str]:
    ts = (T0 + timedelta(minutes=minute)).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    body = {
        "v": 1,
        "symbol": symbol,
        "ts": ts,
        "close": close if close is not None else round(50 + (minute * 37) % 11 + minute * 0.05, 2),
        "volume": volume if volume is not None else int(900 + (minute * 53) % 31),
    }
    return symbol, json.dumps(body)


def raw(symbol: str, ts: str) -> tuple[str, str]:
    return symbol, json.dumps({"v": 1, "symbol": symbol, "ts": ts, "close": 10.0, "volume": 1})


def table(spark: SparkSession, config: AppConfig, name: str) -> DataFrame:
    return spark.read.format("delta").load(config.table_path(name))


def assert_signals_equal_recomputation(spark: SparkSession, config: AppConfig) -> None:
    ticks = table(spark, config, "ticks")
    expected = compute_signals(ticks, config.signals.sma_short, config.signals.sma_long)
    actual = table(spark, config, "signals").select(*SIGNAL_COLUMNS)
    assert_approx_df_equality(actual, expected, precision=1e-9, ignore_row_order=True, ignore_nullable=True)


def reasons(spark: SparkSession, config: AppConfig) -> Counter[str]:
    return Counter(row.reason for row in table(spark, config, "ticks_quarantine").select("reason").collect())


def test_poison_and_future_timestamps_are_quarantined_and_never_stop_the_stream(
    spark, make_config, kafka_broker, kafka_topic, produce
) -> None:
    topic = kafka_topic(partitions=1)
    config = make_config(f"kafka.bootstrap_servers={kafka_broker.address}", f"kafka.topic={topic}", *WINDOWS)
    produce(topic, [tick("AAA", m) for m in range(10)])
    produce(
        topic,
        [
            raw("AAA", "9999-12-31T23:30:00-01:00"),  # year 10000 in UTC
            raw("AAA", "0000-06-01T00:00:00Z"),
            raw("AAA", "2126-11-24T09:15:00Z"),  # a century ahead of its Kafka timestamp
        ],
    )
    produce(topic, [tick("AAA", m) for m in range(10, 15)])
    run(spark, config, once=True)
    produce(topic, [raw("AAA", "10000-01-01T00:00:00Z")] + [tick("AAA", m) for m in range(15, 20)])
    run(spark, config, once=True)

    assert reasons(spark, config) == Counter({"bad_timestamp": 3, "future_timestamp": 1})
    # The future tick did not move AAA's newest time: every later real tick was accepted.
    assert table(spark, config, "ticks").count() == 20
    assert table(spark, config, "ticks_quarantine").where(F.col("event_time").isNotNull()).count() == 1
    assert_signals_equal_recomputation(spark, config)


def test_results_do_not_depend_on_the_driver_time_zone(
    spark, make_config, kafka_broker, kafka_topic, produce, tmp_path
) -> None:
    """The job in a driver whose local zone is not UTC (and not a whole number of hours from it), over ticks crossing
    midnight of both zones, in several batches with a short lateness so contexts start after those midnights: equal
    to a recomputation. (One zone: every local-time mistake shifts some of these ticks across a midnight.) The job
    starts as users start it: a subprocess through its default start check, on PLAINTEXT without kafka.options (a
    topic look-up once passed an option kafka-python rejects, and every such start failed)."""
    zone = "Asia/Kolkata"
    topic = kafka_topic(partitions=1)
    overrides = [
        f"storage.root={tmp_path / 'delta'}",
        f"storage.checkpoint_root={tmp_path / 'checkpoints'}",
        f"kafka.bootstrap_servers={kafka_broker.address}",
        f"kafka.topic={topic}",
        "kafka.max_offsets_per_trigger=46",
        "signals.allowed_lateness_seconds=300",
        *WINDOWS,
    ]
    minutes = range(0, 900, 10)  # 18:00 UTC to 08:50 UTC next day, in 4 batches of 230 minutes
    records = [tick(symbol, m) for m in minutes for symbol in ("AAA", "BBB")]
    records.insert(96, tick("AAA", 467))  # after minute 470 arrived: 3 minutes late, within the 5 allowed
    produce(topic, records)
    command = [sys.executable, "-m", "jobs.stream_signals", "--config", str(REPO_ROOT / "conf" / "local.yaml")]
    for item in overrides:
        command += ["--set", item]
    env = {**os.environ, "TZ": zone}
    result = subprocess.run([*command, "--once"], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    config = make_config(*overrides)
    assert table(spark, config, "pipeline_metrics").count() == 4
    assert table(spark, config, "ticks").count() == len(records)
    assert reasons(spark, config) == Counter()
    assert_signals_equal_recomputation(spark, config)
    dates = {row.event_date.isoformat() for row in table(spark, config, "signals").select("event_date").collect()}
    assert dates == {"2026-11-23", "2026-11-24"}


def test_changed_windows_are_refused_and_a_changed_lateness_is_rebuilt(
    spark, make_config, kafka_broker, kafka_topic, produce
) -> None:
    topic = kafka_topic(partitions=1)
    base = [f"kafka.bootstrap_servers={kafka_broker.address}", f"kafka.topic={topic}", *WINDOWS]
    short = make_config(*base, "signals.allowed_lateness_seconds=120")
    produce(topic, [tick("AAA", m) for m in range(30)])
    run(spark, short, once=True)

    with pytest.raises(SettingsChanged, match="signals.sma_short/signals.sma_long changed"):
        run(spark, make_config(*base, "signals.allowed_lateness_seconds=120", "signals.sma_long=5"), once=True)

    # Lateness 2 -> 10 minutes: a tick 8 minutes late is now accepted, and its recomputation needs a context that
    # starts earlier than the state built for 2 minutes said.
    longer = make_config(*base, "signals.allowed_lateness_seconds=600")
    produce(topic, [tick("AAA", 21.5), tick("AAA", 30)])
    run(spark, longer, once=True)
    assert reasons(spark, longer) == Counter()
    assert_signals_equal_recomputation(spark, longer)

    # And back to 2 minutes: the same kind of tick is too late again, the rest stays exact.
    produce(topic, [tick("AAA", 22.5), tick("AAA", 30.5), tick("AAA", 29.5)])
    run(spark, short, once=True)
    assert reasons(spark, short) == Counter({"too_late": 1})
    assert table(spark, short, "ticks").count() == 34
    assert_signals_equal_recomputation(spark, short)


def test_stored_ticks_repeated_in_a_later_batch(spark, make_config, kafka_broker, kafka_topic, produce) -> None:
    topic = kafka_topic(partitions=1)
    config = make_config(f"kafka.bootstrap_servers={kafka_broker.address}", f"kafka.topic={topic}", *WINDOWS)
    produce(topic, [tick("AAA", m) for m in range(10)])
    run(spark, config, once=True)
    produce(topic, [tick("AAA", 3), tick("AAA", 4, close=1.5), tick("AAA", 10)])
    run(spark, config, once=True)

    metrics = table(spark, config, "pipeline_metrics").orderBy("batch_id").collect()
    assert [(m.records_read, m.ticks_written, m.duplicates, m.quarantined) for m in metrics] == [
        (10, 10, 0, 0),
        (3, 1, 1, 1),
    ]
    quarantine = table(spark, config, "ticks_quarantine").collect()
    assert [(row.reason, row.offset, row.detail) for row in quarantine] == [
        (
            "conflicting_duplicate",
            11,
            f"same symbol and event_time as {topic}[0]@4 with a different close or volume",
        )
    ]
    assert table(spark, config, "ticks").count() == 11
    assert table(spark, config, "signals").where("revision > 0").count() == 0


def _faulty_feed() -> list[tuple[str, str]]:
    """Three symbols with duplicates, conflicting copies, late and too-late ticks, in a fixed order."""
    records: list[tuple[str, str]] = []
    for m in range(40):
        for symbol in ("AAA", "BBB", "CCC"):
            records.append(tick(symbol, m))
            if m % 7 == 3:
                records.append(tick(symbol, m))  # identical re-send
            if m % 11 == 5:
                records.append(tick(symbol, m - 2, close=7.77))  # conflicting copy
            if m % 9 == 8:
                records.append(tick(symbol, m - 1.5))  # late within the lateness
            if m % 13 == 12:
                records.append(tick(symbol, m - 30))  # too late
    return records


def test_the_outcome_does_not_depend_on_where_micro_batches_split(
    spark, make_config, kafka_broker, kafka_topic, produce, tmp_path
) -> None:
    """Records keyed by symbol on three partitions: per-symbol order is the partition's, so any split of the
    same feed into micro-batches gives the same ticks, quarantine and signals (revisions may differ: a late tick
    in the same batch as the ticks after it corrects nothing)."""
    topic = kafka_topic(partitions=3)
    produce(topic, _faulty_feed())
    outcomes = []
    for per_trigger in (None, 43, 86):  # 171 records: one micro-batch, about four, about two
        overrides = [
            f"storage.root={tmp_path / f'split-{per_trigger}'}",
            f"storage.checkpoint_root={tmp_path / f'checkpoints-{per_trigger}'}",
            f"kafka.bootstrap_servers={kafka_broker.address}",
            f"kafka.topic={topic}",
            "signals.allowed_lateness_seconds=600",
            *WINDOWS,
        ]
        if per_trigger:
            overrides.append(f"kafka.max_offsets_per_trigger={per_trigger}")
        config = make_config(*overrides)
        run(spark, config, once=True)
        outcomes.append(config)
    batches = [table(spark, config, "pipeline_metrics").count() for config in outcomes]
    assert batches[0] < batches[2] < batches[1]
    first = outcomes[0]
    for other in outcomes[1:]:
        assert_df_equality(
            table(spark, other, "ticks").drop("ingest_time"),
            table(spark, first, "ticks").drop("ingest_time"),
            ignore_row_order=True,
        )
        assert_df_equality(
            table(spark, other, "ticks_quarantine").drop("ingest_time", "ingest_date"),
            table(spark, first, "ticks_quarantine").drop("ingest_time", "ingest_date"),
            ignore_row_order=True,
        )
        assert_approx_df_equality(
            table(spark, other, "signals").select(*SIGNAL_COLUMNS),
            table(spark, first, "signals").select(*SIGNAL_COLUMNS),
            precision=1e-12,
            ignore_row_order=True,
        )
    # too late: minutes -18, -5 and 8 of each symbol (8, resent identical at minute 38, is stored already, but
    # lateness is judged first)
    assert reasons(spark, first) == Counter({"conflicting_duplicate": 12, "too_late": 9})
    assert_signals_equal_recomputation(spark, first)


def _consume(bootstrap: str, topic: str) -> list[dict]:
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", consumer_timeout_ms=5000)
    try:
        return [json.loads(message.value) for message in consumer]
    finally:
        consumer.close()


def test_published_signals_are_every_emission_and_correction_exactly(
    spark, make_config, kafka_broker, kafka_topic, produce
) -> None:
    topic, signals_topic = kafka_topic(partitions=1), kafka_topic(partitions=1)
    config = make_config(
        f"kafka.bootstrap_servers={kafka_broker.address}",
        f"kafka.topic={topic}",
        f"kafka.signals_topic={signals_topic}",
        "kafka.publish_signals=true",
        *WINDOWS,
    )
    produce(topic, [tick("AAA", m) for m in range(12)] + [tick("BBB", m) for m in range(5)])
    run(spark, config, once=True)
    produce(topic, [tick("AAA", 5.5), tick("AAA", 12)])
    run(spark, config, once=True)
    produce(topic, [tick("AAA", 6.5), tick("BBB", 5)])
    run(spark, config, once=True)

    published = Counter(
        (m["symbol"], m["event_time"], m["revision"], m["is_correction"])
        for m in _consume(kafka_broker.address, signals_topic)
    )
    stored = table(spark, config, "signals").select(
        "symbol", F.date_format("event_time", "yyyy-MM-dd'T'HH:mm:ss.SSSXXX").alias("event_time"), "revision"
    )
    # Each row was published once per revision it went through: 0 (first emission), then each correction.
    expected = Counter(
        (row.symbol, row.event_time, revision, revision > 0)
        for row in stored.collect()
        for revision in range(row.revision + 1)
    )
    assert {key[:3] for key in published} == {key[:3] for key in expected}
    assert published == expected
    assert sum(1 for key in published if key[3]) > 0


@pytest.mark.parametrize("crash_after", ["published", "signals_merged"])
def test_a_crash_between_the_commits_publishes_again_and_counts_right(
    spark, make_config, kafka_broker, kafka_topic, produce, crash_after
) -> None:
    """stock-signals is at least once: a crash after publishing, or after the signals commits, re-sends on the
    retry (nothing is lost), and the retried batch's metrics row counts the corrections it made."""
    topic, signals_topic = kafka_topic(partitions=1), kafka_topic(partitions=1)
    config = make_config(
        f"kafka.bootstrap_servers={kafka_broker.address}",
        f"kafka.topic={topic}",
        f"kafka.signals_topic={signals_topic}",
        "kafka.publish_signals=true",
        *WINDOWS,
    )
    produce(topic, [tick("AAA", m) for m in range(12)])
    run(spark, config, once=True)
    produce(topic, [tick("AAA", 5.5), tick("AAA", 12)])

    def crash(step: str) -> None:
        if step == crash_after:
            raise RuntimeError(f"injected crash after {step}")

    with pytest.raises(RuntimeError, match="injected crash"):
        run(spark, config, once=True, fault_hook=crash)
    run(spark, config, once=True)

    published = Counter(
        (m["symbol"], m["event_time"], m["revision"]) for m in _consume(kafka_broker.address, signals_topic)
    )
    stored = table(spark, config, "signals").select(
        "symbol", F.date_format("event_time", "yyyy-MM-dd'T'HH:mm:ss.SSSXXX").alias("event_time"), "revision"
    )
    expected = {(row.symbol, row.event_time, r) for row in stored.collect() for r in range(row.revision + 1)}
    assert set(published) == expected  # every emission and correction at least once, nothing else
    assert sum(published.values()) > len(expected)  # the retry re-sent what the crashed attempt had sent
    last = table(spark, config, "pipeline_metrics").orderBy(F.desc("batch_id")).first()
    assert last is not None
    assert last.signals_corrected == table(spark, config, "signals").where("revision >= 1").count() > 0
    assert table(spark, config, "pipeline_metrics").count() == 2


def test_compaction_beside_the_running_stream(spark, make_config, kafka_broker, kafka_topic, produce) -> None:
    """jobs.maintenance optimize, repeated while the job merges corrections: the job retries a conflicting
    commit and stays up; the tables stay exact."""
    from jobs.maintenance import optimize

    topic = kafka_topic(partitions=1)
    config = make_config(
        f"kafka.bootstrap_servers={kafka_broker.address}",
        f"kafka.topic={topic}",
        "stream.trigger_interval=1 second",
        *WINDOWS,
    )
    failures: list[BaseException] = []
    stop = threading.Event()

    def stream() -> None:
        try:
            run(spark, config, once=False, timeout_seconds=180, stop=stop)
        except BaseException as error:  # reported by the test thread
            failures.append(error)

    job = threading.Thread(target=stream)
    job.start()
    try:
        deadline = time.monotonic() + 60
        wave = 0
        while time.monotonic() < deadline and wave < 8:
            produce(topic, [tick("AAA", wave * 10 + m) for m in range(10)] + [tick("AAA", wave * 10 + 4.5)])
            optimize(spark, config, ["signals", "ticks", "_signal_state"])
            wave += 1
        # Then until the job has caught up (or failed); the last waves' batches may still be running.
        caught_up = time.monotonic() + 120
        while not failures and job.is_alive() and time.monotonic() < caught_up:
            if DeltaTable.isDeltaTable(spark, config.table_path("ticks")):
                if table(spark, config, "ticks").count() == wave * 11:
                    break
            time.sleep(1)
    finally:
        stop.set()
        job.join(timeout=180)
    assert not job.is_alive()
    assert not failures, failures
    assert table(spark, config, "ticks").count() == wave * 11
    assert_signals_equal_recomputation(spark, config)


def _run_job(*overrides: str, timeout: float = 120) -> tuple[int, str, float]:
    command = [
        sys.executable,
        "-m",
        "jobs.stream_signals",
        "--config",
        str(REPO_ROOT / "conf" / "local.yaml"),
        "--once",
    ]
    for item in overrides:
        command += ["--set", item]
    started = time.monotonic()
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout)
    return result.returncode, result.stderr, time.monotonic() - started


def test_an_unreachable_broker_stops_the_job_quickly_with_one_clear_line(tmp_path) -> None:
    code, stderr, seconds = _run_job(
        "kafka.bootstrap_servers=127.0.0.1:1",
        "kafka.connect_timeout_seconds=3",
        f"storage.root={tmp_path / 'delta'}",
        f"storage.checkpoint_root={tmp_path / 'checkpoints'}",
    )
    assert code == 1
    assert seconds < 30
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert "127.0.0.1:1" in lines[0] and "kafka.bootstrap_servers" in lines[0] and lines[0].startswith("error:")


def test_a_missing_topic_or_bucket_stops_the_job_with_one_clear_line(kafka_broker, moto_server, tmp_path) -> None:
    code, stderr, _ = _run_job(
        f"kafka.bootstrap_servers={kafka_broker.address}",
        "kafka.topic=no-such-topic",
        f"storage.root={tmp_path / 'delta'}",
    )
    assert code == 1 and stderr.strip().count("\n") == 0
    assert "'no-such-topic' (kafka.topic) does not exist" in stderr

    from kafka.admin import KafkaAdminClient, NewTopic

    admin = KafkaAdminClient(bootstrap_servers=kafka_broker.address)
    try:
        admin.create_topics([NewTopic("bucket-check", num_partitions=1, replication_factor=1)])
    finally:
        admin.close()
    code, stderr, _ = _run_job(
        f"kafka.bootstrap_servers={kafka_broker.address}",
        "kafka.topic=bucket-check",
        "storage.root=s3a://no-such-bucket/lake",
        f"s3.endpoint=http://127.0.0.1:{moto_server.port}",
        "s3.path_style_access=true",
        "s3.use_test_credentials=true",
    )
    assert code == 1 and stderr.strip().count("\n") == 0
    assert "bucket 'no-such-bucket' of storage.root is not reachable" in stderr and "(s3.endpoint)" in stderr
