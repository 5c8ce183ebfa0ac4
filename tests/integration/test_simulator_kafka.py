"""The simulator against a real Kafka broker: replay round trips, faults, determinism, signals, bad brokers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from pathlib import Path
from zoneinfo import ZoneInfo

from kafka import KafkaConsumer, TopicPartition
from kafka.admin import KafkaAdminClient

from jobs.devstack.services import ServiceHandle, free_port
from simulator.cli import execute, main, parse_args
from simulator.engine import MemorySink
from simulator.messages import decode
from simulator.replay import read_csv

REPO_ROOT = Path(__file__).resolve().parents[2]
KOLKATA = ZoneInfo("Asia/Kolkata")


def unique_topic(name: str) -> str:
    return f"sim-{name}-{uuid.uuid4().hex[:8]}"


def consume(broker: ServiceHandle, topic: str, expected: int, timeout: float = 60.0) -> list:
    """Every record of the topic (waits for `expected` of them), ordered by partition and offset."""
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=broker.address,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=1000,
    )
    records = []
    deadline = time.monotonic() + timeout
    try:
        while len(records) < expected and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=1000, max_records=50_000).values():
                records.extend(batch)
        # Anything beyond `expected` would be a bug: give it a moment to show up.
        for batch in consumer.poll(timeout_ms=500).values():
            records.extend(batch)
    finally:
        consumer.close()
    return sorted(records, key=lambda r: (r.partition, r.offset))


def wait_for_records(broker: ServiceHandle, topic: str, count: int, timeout: float) -> bool:
    """Poll the topic's end offsets until it holds at least `count` records or `timeout` seconds pass."""
    consumer = KafkaConsumer(bootstrap_servers=broker.address, request_timeout_ms=5000)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            partitions = consumer.partitions_for_topic(topic) or set()
            if partitions:
                ends = consumer.end_offsets([TopicPartition(topic, partition) for partition in partitions])
                if sum(ends.values()) >= count:
                    return True
            time.sleep(0.2)
        return False
    finally:
        consumer.close()


def per_symbol(ticks: list[tuple[str, int, float, int]]) -> dict[str, list[tuple[str, int, float, int]]]:
    grouped: dict[str, list] = defaultdict(list)
    for tick in ticks:
        grouped[tick[0]].append(tick)
    return dict(grouped)


def replay_round_trip(broker: ServiceHandle, csv_path: Path, topic: str, *extra: str) -> None:
    assert (
        main(
            [
                "replay",
                "--csv",
                str(csv_path),
                "--bootstrap-servers",
                broker.address,
                "--topic",
                topic,
                "--quiet",
                *extra,
            ]
        )
        == 0
    )
    expected = read_csv(csv_path, KOLKATA).ticks
    records = consume(broker, topic, len(expected))
    assert len(records) == len(expected)
    got = []
    for record in records:
        tick = decode(record.value, KOLKATA)
        assert record.key == tick.symbol.encode()
        got.append((tick.symbol, tick.ts_ms, tick.close, tick.volume))
    want = list(
        zip(expected.symbols, expected.ts_ms.tolist(), expected.close.tolist(), expected.volume.tolist(), strict=True)
    )
    # Kafka orders per partition (= per symbol, the key); each symbol's ticks arrive in time order.
    assert per_symbol(got) == per_symbol(want)
    partitions = defaultdict(set)
    for record in records:
        partitions[record.key].add(record.partition)
    assert all(len(parts) == 1 for parts in partitions.values())


def test_replay_round_trip_legacy_csv(kafka_broker: ServiceHandle, tmp_path: Path) -> None:
    rows = ["Date-Time,symbol,Close,Volume,sma_9,sma_21,signal"]
    for minute in reversed(range(60)):  # newest first, like the Athena output
        for symbol, base in (("AAPL1", 500.0), ("MSFT2", 90.25), ("X.Y-Z", 0.01)):
            rows.append(f"2025-07-19 22:{minute:02d}:06,{symbol},{base + minute / 100:.2f},{minute * 7},,,Hold")
    path = tmp_path / "legacy.csv"
    path.write_text("\n".join(rows) + "\n")
    replay_round_trip(kafka_broker, path, unique_topic("legacy"))
    replay_round_trip(kafka_broker, path, unique_topic("legacy-as-v1"), "--format", "v1")


def test_replay_round_trip_v1_csv_paced(kafka_broker: ServiceHandle, tmp_path: Path) -> None:
    path = tmp_path / "v1.csv"
    path.write_text(
        "symbol,ts,close,volume\n"
        + "".join(
            f"SYM{i % 3:03d},2026-11-24T09:15:{i // 3:02d}.{i % 3 * 100:03d}Z,{100 + i * 0.01:.2f},{i}\n"
            for i in range(90)
        )
    )
    topic = unique_topic("v1")
    started_ms = time.time() * 1000
    replay_round_trip(kafka_broker, path, topic, "--speed", "20")  # 29.2 s of ticks at 20x
    # Paced, judged by the records' producer timestamps: the last slice (ticks are sent in slices of 0.1 s of
    # wall time, 2 s simulated here) leaves no sooner than 27.2 s / 20 after the start, and the records are
    # spread out (unpaced, all 90 leave within a few milliseconds). A loaded machine can only make both larger.
    stamps = [record.timestamp for record in consume(kafka_broker, topic, 90)]
    assert len(stamps) == 90
    assert max(stamps) - started_ms >= 1300
    assert max(stamps) - min(stamps) >= 1000


def test_replay_reference_athena_output(kafka_broker: ServiceHandle, reference_csv: Path) -> None:
    replay_round_trip(kafka_broker, reference_csv, unique_topic("reference"))


def test_run_sends_exactly_the_seeded_sequence_and_creates_the_topic(kafka_broker: ServiceHandle) -> None:
    topic = unique_topic("run")
    argv = [
        "run",
        "--count",
        "5000",
        "--seed",
        "99",
        "--speed",
        "max",
        "--quiet",
        "--bootstrap-servers",
        kafka_broker.address,
        "--topic",
        topic,
        "--set",
        "kafka.topic_partitions=4",
    ]
    args, config = parse_args(argv)
    summary = execute(args, config)
    assert (summary["sent"], summary["failed"], summary["ticks"]) == (5000, 0, 5000)
    assert summary["idempotent_producer"] is True and summary["topic"] == topic
    dry = MemorySink()
    args, config = parse_args(argv)
    execute(args, config, sink=dry)
    records = consume(kafka_broker, topic, 5000)
    assert sorted((r.key, r.value) for r in records) == sorted(dry.records)
    by_partition = defaultdict(list)
    for record in records:
        by_partition[record.partition].append((record.key, record.value))
    for partition_records in by_partition.values():  # order within a partition is the send order
        assert partition_records == [item for item in dry.records if item in set(partition_records)]
    admin = KafkaAdminClient(bootstrap_servers=kafka_broker.address)
    try:
        assert len(admin.describe_topics([topic])[0]["partitions"]) == 4
    finally:
        admin.close()


def test_fault_summary_reconciles_with_the_topic(kafka_broker: ServiceHandle, tmp_path: Path) -> None:
    topic = unique_topic("faults")
    out = tmp_path / "summary.json"
    assert (
        main(
            [
                "run",
                "--count",
                "3000",
                "--seed",
                "4",
                "--speed",
                "max",
                "--quiet",
                "--symbols",
                "20",
                "--duplicates",
                "0.05",
                "--conflicts",
                "0.05",
                "--out-of-order",
                "0.05",
                "--too-late",
                "0.05",
                "--malformed",
                "0.1",
                "--bootstrap-servers",
                kafka_broker.address,
                "--topic",
                topic,
                "--summary-json",
                str(out),
            ]
        )
        == 0
    )
    summary = json.loads(out.read_text())
    records = consume(kafka_broker, topic, summary["messages"])
    expected = summary["expected"]
    assert len(records) == summary["sent"] == expected["ticks"] + expected["duplicates"] + expected["quarantined"]
    valid = 0
    for record in records:
        if len(record.value) > 4096:  # stream.max_message_bytes: rejected before parsing
            continue
        try:
            decode(record.value, KOLKATA)
            valid += 1
        except ValueError:
            pass
    # Valid-looking records: clean ticks, duplicates, conflicts and too-late ticks (decided by the job's state).
    assert (
        valid
        == expected["ticks"] + expected["duplicates"] + summary["faults"]["conflicts"] + summary["faults"]["too_late"]
    )


def test_unreachable_broker_fails_fast_with_a_clear_error() -> None:
    port = free_port()  # nothing listens there
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "simulator",
            "run",
            "--count",
            "10",
            "--bootstrap-servers",
            f"localhost:{port}",
            "--set",
            "simulator.connect_timeout_seconds=2",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert f"cannot reach Kafka at localhost:{port} within 2 s" in result.stderr
    assert "Traceback" not in result.stderr


def test_sigterm_stops_an_unbounded_run_with_a_flushed_summary(kafka_broker: ServiceHandle, tmp_path: Path) -> None:
    topic = unique_topic("sigterm")
    out = tmp_path / "summary.json"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "simulator",
            "run",
            "--symbols",
            "10",
            "--interval",
            "1",
            "--speed",
            "60",
            "--seed",
            "1",
            "--bootstrap-servers",
            kafka_broker.address,
            "--topic",
            topic,
            "--summary-json",
            str(out),
        ],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        # Stop it once records are on the topic (bounded wait), not after a guessed sleep.
        assert wait_for_records(kafka_broker, topic, 200, timeout=60), "no records reached the topic in 60 s"
        assert process.poll() is None, process.stderr.read() if process.stderr else ""
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, stderr
    summary = json.loads(out.read_text())
    assert summary["stopped_by_signal"] is True and summary["failed"] == 0
    assert summary["sent"] == summary["ticks"] >= 200
    assert f"sent {summary['sent']:,}, failed 0" in stdout
    assert len(consume(kafka_broker, topic, summary["sent"])) == summary["sent"]
