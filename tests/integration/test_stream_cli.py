"""The streaming job's promises as a command: clean stop on SIGTERM, --timeout, per-batch log lines,
`kafka.starting_offsets`, Kafka client settings reaching the source and the sink, `stream.register_catalog`.

The command runs as a subprocess against the session's real broker (`python -m jobs.stream_signals`), like an
operator runs it; the settings tests run the job in-process on the session's SparkSession.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psutil
import pytest
from pyspark.sql import SparkSession

from jobs.aws.clients import aws_client
from jobs.pipeline.tables import ALL_TABLES, PUBLIC_TABLES
from jobs.stream_signals import prepare, run, start_query
from tests.support import appended_at, batch_ids, json_ticks

REPO_ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 11, 24, 9, 0, 0, tzinfo=UTC)
pytestmark = pytest.mark.timeout(1200)


def _job_command(config, *extra: str) -> list[str]:
    batch_limit = config.kafka.max_offsets_per_trigger
    return [
        sys.executable,
        "-m",
        "jobs.stream_signals",
        "--config",
        str(REPO_ROOT / "conf" / "local.yaml"),
        f"--set=storage.root={config.storage.root}",
        f"--set=storage.checkpoint_root={config.storage.checkpoint_root}",
        f"--set=kafka.bootstrap_servers={config.kafka.bootstrap_servers}",
        f"--set=kafka.topic={config.kafka.topic}",
        *([f"--set=kafka.max_offsets_per_trigger={batch_limit}"] if batch_limit else []),
        "--set=stream.trigger_interval=1 second",
        "--set=spark.driver_memory=1g",
        "--set=spark.shuffle_partitions=2",
        *extra,
    ]


def _in_flight(checkpoint: Path, raw_ticks: Path) -> int | None:
    """The id of a micro-batch the job is writing: started (offsets/N), not committed (no commits/N), and its raw
    records appended. (Offsets alone do not say the job took the batch: one planned when the stop comes is left,
    unwritten, to the next run.)"""
    started, committed = batch_ids(checkpoint / "offsets"), batch_ids(checkpoint / "commits")
    running = started - committed
    if not running or not committed:
        return None
    newest = max(running)
    return newest if newest in appended_at(raw_ticks) else None


def _batch_lines(text: str) -> list[dict]:
    """The job's per-batch JSON log lines (`"event": "batch"`)."""
    lines = []
    for line in text.splitlines():
        start = line.find('{"event": "batch"')
        if start >= 0:
            lines.append(json.loads(line[start:]))
    return lines


def _summary_line(stdout: str) -> dict:
    summaries = [json.loads(line) for line in stdout.splitlines() if line.startswith('{"event": "summary"')]
    assert len(summaries) == 1, stdout[-2000:]
    return summaries[0]


def _metrics(spark: SparkSession, config) -> dict[int, dict]:
    rows = spark.read.format("delta").load(config.table_path("pipeline_metrics")).collect()
    return {row.batch_id: row.asDict() for row in rows}


def _kill_group(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)


def _start_job(config, tmp_path: Path, *extra: str) -> tuple[subprocess.Popen, Path, Path]:
    """`python -m jobs.stream_signals` in its own process group; its stdout and stderr files."""
    stdout_file, stderr_file = tmp_path / "job.out", tmp_path / "job.err"
    with open(stdout_file, "wb") as out, open(stderr_file, "wb") as err:
        job = subprocess.Popen(
            _job_command(config, *extra), cwd=REPO_ROOT, stdout=out, stderr=err, start_new_session=True
        )
    return job, stdout_file, stderr_file


def test_sigterm_lets_the_running_batch_commit_then_prints_the_summary(
    spark, make_config, kafka_broker, kafka_topic, produce, tmp_path
) -> None:
    topic = kafka_topic()
    config = make_config(
        f"kafka.bootstrap_servers={kafka_broker.address}", f"kafka.topic={topic}", "kafka.max_offsets_per_trigger=60"
    )
    records = json_ticks(0, 60)  # 600 records: 10 micro-batches of at most 60
    produce(topic, records)
    checkpoint = Path(config.checkpoint_path())
    job, stdout_file, stderr_file = _start_job(config, tmp_path)
    try:
        deadline = time.monotonic() + 600
        running = None
        while running is None and time.monotonic() < deadline and job.poll() is None:
            running = _in_flight(checkpoint, Path(config.table_path("raw_ticks")))
            time.sleep(0.05)
        assert running is not None, f"no micro-batch seen running:\n{stderr_file.read_text()[-3000:]}"
        # SIGTERM to the Python process only (the README's advice), while batch `running` is in progress.
        job.send_signal(signal.SIGTERM)
        job.wait(timeout=600)
    finally:
        _kill_group(job)
    stderr = stderr_file.read_text()
    assert job.returncode == 0, stderr[-3000:]
    assert "received SIGTERM: finishing the running micro-batch" in stderr
    assert sorted(path.name for path in Path(config.storage.root).iterdir()) == sorted(spec.name for spec in ALL_TABLES)
    # The batch that was running at the signal committed, and nothing was left half done: at most the batch
    # planned next is in the offset log without a commit, and nothing of it is in any table (checked below).
    started, committed = batch_ids(checkpoint / "offsets"), batch_ids(checkpoint / "commits")
    assert running in committed
    assert sorted(committed) == list(range(len(committed)))
    assert set(started) - set(committed) <= {max(committed) + 1}
    assert "terminated with error" not in stderr and "Traceback" not in stderr
    assert max(committed) < 9, "the job read the whole topic instead of stopping"

    metrics = _metrics(spark, config)
    lines = _batch_lines(stderr)
    assert sorted(line["batch_id"] for line in lines) == sorted(metrics) == sorted(committed)
    for line in lines:
        row = metrics[line["batch_id"]]
        for key in ("records_read", "ticks_written", "quarantined", "duplicates", "signals_emitted"):
            assert line[key] == row[key], (line["batch_id"], key)
        assert line["records_read"] == 60 and line["quarantined_by_reason"] == {}
    summary = _summary_line(stdout_file.read_text())
    assert summary["batches"] == len(metrics)
    assert summary["records_read"] == summary["ticks_written"] == 60 * len(metrics)
    assert summary["quarantined"] == summary["duplicates"] == 0
    assert summary["signals_emitted"] == sum(row["signals_emitted"] for row in metrics.values())
    ticks = spark.read.format("delta").load(config.table_path("ticks"))
    assert ticks.count() == 60 * len(metrics)


def test_sigterm_while_spark_starts_reads_nothing_and_prints_the_summary(
    make_config, kafka_broker, kafka_topic, produce, tmp_path
) -> None:
    """A stop during start-up (the Spark JVM starting, tables being created, the warm-up): the job starts no query
    and ends as cleanly as between two batches, rather than dying on the signal's default action."""
    topic = kafka_topic()
    config = make_config(f"kafka.bootstrap_servers={kafka_broker.address}", f"kafka.topic={topic}")
    produce(topic, json_ticks(0, 5, symbols=3))
    job, stdout_file, stderr_file = _start_job(config, tmp_path)
    try:
        deadline = time.monotonic() + 300
        # The job's Spark JVM (its child) exists once main() is building the session.
        while not psutil.Process(job.pid).children() and time.monotonic() < deadline and job.poll() is None:
            time.sleep(0.02)
        assert job.poll() is None, stderr_file.read_text()[-3000:]
        job.send_signal(signal.SIGTERM)
        job.wait(timeout=600)
    finally:
        _kill_group(job)
    stderr = stderr_file.read_text()
    assert job.returncode == 0, stderr[-3000:]
    assert "received SIGTERM" in stderr and "Traceback" not in stderr
    assert _summary_line(stdout_file.read_text())["batches"] == 0
    # No micro-batch was planned: the next start reads the topic from the beginning.
    assert batch_ids(Path(config.checkpoint_path()) / "offsets") == set()


def test_timeout_stops_the_job_on_its_own(make_config, kafka_broker, kafka_topic, tmp_path) -> None:
    config = make_config(f"kafka.bootstrap_servers={kafka_broker.address}", f"kafka.topic={kafka_topic()}")
    job, stdout_file, stderr_file = _start_job(config, tmp_path, "--timeout", "5")
    try:
        # Start-up takes a while on a busy machine; a job that ignores --timeout never ends.
        job.wait(timeout=600)
    except subprocess.TimeoutExpired:
        pytest.fail("the job was still running 600 s after it started with --timeout 5")
    finally:
        _kill_group(job)
    stderr = stderr_file.read_text()
    assert job.returncode == 0, stderr[-3000:]
    assert "timeout of 5 s reached: stopping" in stderr
    assert _summary_line(stdout_file.read_text()) == {
        "event": "summary",
        "batches": 0,
        "records_read": 0,
        "ticks_written": 0,
        "quarantined": 0,
        "duplicates": 0,
        "signals_emitted": 0,
        "signals_corrected": 0,
    }


def test_starting_offsets_latest_skips_what_was_in_the_topic(spark, make_config, kafka_broker, kafka_topic, produce):
    topic = kafka_topic()
    config = make_config(
        f"kafka.bootstrap_servers={kafka_broker.address}", f"kafka.topic={topic}", "kafka.starting_offsets=latest"
    )
    produce(topic, json_ticks(0, 5, symbols=3, prefix="OLD"))
    query = start_query(spark, config, once=False, processor=prepare(spark, config))
    try:
        # The source resolves `latest` on its first trigger and records it in the checkpoint.
        initial = Path(config.checkpoint_path()) / "sources" / "0" / "0"
        deadline = time.monotonic() + 120
        while not initial.exists() and time.monotonic() < deadline and query.isActive:
            time.sleep(0.2)
        assert initial.exists(), "the Kafka source did not record its starting offsets"
        produce(topic, json_ticks(5, 4, symbols=3, prefix="NEW"))
        query.processAllAvailable()
    finally:
        query.stop()
    ticks = spark.read.format("delta").load(config.table_path("ticks"))
    assert sorted((row.symbol, row.event_time) for row in ticks.select("symbol", "event_time").collect()) == sorted(
        (f"NEW{index:03d}", (T0 + timedelta(seconds=30 * step)).replace(tzinfo=None))
        for step in range(5, 9)
        for index in (1, 2, 3)
    )
    raw = spark.read.format("delta").load(config.table_path("raw_ticks"))
    assert raw.count() == 12


def test_sasl_settings_reach_the_kafka_source(spark, make_config, kafka_broker, kafka_topic, produce) -> None:
    topic = kafka_topic()
    produce(topic, json_ticks(0, 1))
    jaas = 'org.apache.kafka.common.security.scram.ScramLoginModule required username="u" password="p";'
    config = make_config(
        f"kafka.bootstrap_servers={kafka_broker.address}",
        f"kafka.topic={topic}",
        "kafka.security_protocol=SASL_PLAINTEXT",
        "kafka.sasl_mechanism=SCRAM-SHA-512",
        f"kafka.options={json.dumps({'sasl.jaas.config': jaas})}",
    )
    # The session broker speaks PLAINTEXT only: a client that really uses SASL/SCRAM fails its handshake.
    with pytest.raises(Exception, match="SCRAM-SHA-512"):
        run(spark, config, once=True, timeout_seconds=600)
    assert spark.read.format("delta").load(config.table_path("ticks")).count() == 0


def test_kafka_options_reach_the_signals_sink(spark, make_config, kafka_broker, kafka_topic, produce) -> None:
    topic = kafka_topic()
    produce(topic, json_ticks(0, 2, symbols=2))
    config = make_config(
        f"kafka.bootstrap_servers={kafka_broker.address}",
        f"kafka.topic={topic}",
        "kafka.publish_signals=true",
        f"kafka.signals_topic={kafka_topic()}",
        # A producer-only setting: far smaller than one signal message, so the publishing producer must refuse.
        'kafka.options={"max.request.size": "64"}',
    )
    with pytest.raises(Exception, match="max.request.size"):
        run(spark, config, once=True, timeout_seconds=600)


def test_register_catalog_syncs_glue_when_the_job_creates_its_tables(spark, make_config, kafka_broker, kafka_topic):
    bucket = f"stream-catalog-{uuid.uuid4().hex[:10]}"
    database = f"db_{uuid.uuid4().hex[:8]}"
    overrides = [
        f"kafka.bootstrap_servers={kafka_broker.address}",
        f"kafka.topic={kafka_topic()}",
        f"storage.root=s3a://{bucket}/lake",
        f"storage.checkpoint_root=s3a://{bucket}/checkpoints",
        f"glue.database={database}",
    ]
    aws_client(make_config(), "s3").create_bucket(Bucket=bucket)
    glue = aws_client(make_config(*overrides), "glue")

    # Off: the job writes its tables and leaves the catalog alone.
    off = make_config(
        *overrides,
        "stream.register_catalog=false",
        f"storage.root=s3a://{bucket}/off",
        f"storage.checkpoint_root=s3a://{bucket}/off-checkpoints",
    )
    run(spark, off, once=True, timeout_seconds=600)
    with pytest.raises(glue.exceptions.EntityNotFoundException):
        glue.get_database(Name=database)

    config = make_config(*overrides, "stream.register_catalog=true")
    run(spark, config, once=True, timeout_seconds=600)
    tables = {table["Name"]: table for table in glue.get_tables(DatabaseName=database)["TableList"]}
    assert sorted(tables) == sorted(spec.name for spec in PUBLIC_TABLES)
    for spec in PUBLIC_TABLES:
        table = tables[spec.name]
        assert table["Parameters"]["table_type"] == "DELTA"
        assert table["StorageDescriptor"]["Location"] == f"s3://{bucket}/lake/{spec.name}"
        assert [key["Name"] for key in table.get("PartitionKeys", [])] == list(spec.partition_by)
