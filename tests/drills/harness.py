"""Harness of the fault drills of the streaming job on the real local stack: its own Kafka broker (killed and
started again on the same ports and log folder), moto behind a TCP relay that can be cut, and the job as
`python -m jobs.stream_signals` subprocesses; helpers to follow its batch log and to check the tables."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from chispa import assert_approx_df_equality
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from jobs.devstack.services import ServiceHandle, free_port, start_kafka, stop_process
from jobs.pipeline.config import AppConfig
from jobs.pipeline.transforms.signals import SIGNAL_COLUMNS, compute_signals

REPO_ROOT = Path(__file__).resolve().parents[2]
KAFKA_JARS = REPO_ROOT / ".jars" / "kafka-broker"
T0 = datetime(2026, 11, 24, 9, 0, 0, tzinfo=UTC)


def clean_ticks(first_step: int, steps: int, symbols: int = 10) -> list[tuple[str, str]]:
    """`steps` ticks of each of `symbols` symbols, 30 s apart, keyed by symbol."""
    records = []
    for step in range(first_step, first_step + steps):
        for index in range(symbols):
            symbol = f"SYM{index + 1:03d}"
            ts = (T0 + timedelta(seconds=30 * step)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
            body = {
                "v": 1,
                "symbol": symbol,
                "ts": ts,
                "close": round(50 + (step * 7 + index) % 13 + step / 100, 2),
                "volume": 100 + (step * 11 + index) % 17,
            }
            records.append((symbol, json.dumps(body)))
    return records


# --- a broker of the drill's own ----------------------------------------------------------------------------------


class Broker:
    """A Kafka broker on fixed ports and a fixed log folder, so it can be killed and started again as the same
    broker (same topics, same offsets)."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.port = free_port()
        self.controller_port = free_port()
        self.handle: ServiceHandle | None = None

    @property
    def address(self) -> str:
        return f"localhost:{self.port}"

    def start(self) -> None:
        deadline = time.monotonic() + 60
        while True:  # the killed broker's sockets may take a moment to be released
            try:
                self.handle = start_kafka(self.port, self.controller_port, self.state_dir, KAFKA_JARS, timeout=180)
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(2)

    def kill(self) -> None:
        """SIGKILL, as a crashed host or an OOM kill would: no clean shutdown."""
        assert self.handle is not None
        try:
            os.killpg(self.handle.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        stop_process(self.handle.pid, timeout=10)
        self.handle = None

    def stop(self) -> None:
        if self.handle is not None:
            stop_process(self.handle.pid)
            self.handle = None

    def create_topic(self, name: str, partitions: int = 3) -> str:
        from kafka.admin import KafkaAdminClient, NewTopic

        admin = KafkaAdminClient(bootstrap_servers=self.address)
        try:
            admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
        finally:
            admin.close()
        return name

    def produce(self, topic: str, records: list[tuple[str, str]]) -> None:
        from kafka import KafkaProducer

        producer = KafkaProducer(bootstrap_servers=self.address, acks="all", linger_ms=5)
        try:
            futures = [producer.send(topic, key=key.encode(), value=value.encode()) for key, value in records]
            producer.flush(timeout=60)
            for future in futures:
                future.get(timeout=30)
        finally:
            producer.close()

    def end_offsets(self, topic: str) -> int:
        """The number of records in `topic` (sum of its partitions' end offsets)."""
        from kafka import KafkaConsumer, TopicPartition

        consumer = KafkaConsumer(bootstrap_servers=self.address)
        try:
            partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
            return sum(consumer.end_offsets(partitions).values())
        finally:
            consumer.close()


# --- a relay in front of moto that can be cut ----------------------------------------------------------------------


class Relay:
    """A TCP relay 127.0.0.1:port -> 127.0.0.1:target. `cut()` closes the listener and resets every open
    connection (clients then see connection refused); `restore()` listens again on the same port."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._connections: set[socket.socket] = set()
        self._lock = threading.Lock()

    def restore(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        with self._lock:
            connections, self._connections = self._connections, set()
        for conn in connections:
            try:
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                conn.close()  # linger 0: an RST, as a vanished endpoint
            except OSError:
                pass

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=10)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._connections.update((client, upstream))
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for conn in (source, sink):
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            with self._lock:
                self._connections.discard(source)
                self._connections.discard(sink)


# --- the job as a process ------------------------------------------------------------------------------------------


@dataclass
class Job:
    """`python -m jobs.stream_signals` with the drill's settings; every run appends to one log file."""

    settings: list[str]
    log_file: Path
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0
    exits: list[int] = field(default_factory=list)

    def start(self, *extra: str) -> None:
        command = [sys.executable, "-m", "jobs.stream_signals", "--config", str(REPO_ROOT / "conf" / "local.yaml")]
        command += [f"--set={item}" for item in self.settings]
        command += list(extra)
        with open(self.log_file, "ab") as log:
            log.write(f"\n=== start {self.starts + 1} at {time.time():.3f}\n".encode())
            self.process = subprocess.Popen(
                command, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.starts += 1

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL of the job's process group (driver JVM included)."""
        assert self.process is not None
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.exits.append(self.process.wait(timeout=60))

    def stop(self, timeout: float = 300) -> int:
        """SIGTERM to the job's Python process (it finishes the running micro-batch and stops its Spark driver),
        then wait; the whole group is killed if it does not stop."""
        assert self.process is not None
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                stop_process(self.process.pid)
        code = self.process.wait(timeout=60)
        self.exits.append(code)
        return code

    def wait(self, timeout: float) -> int:
        assert self.process is not None
        code = self.process.wait(timeout=timeout)
        self.exits.append(code)
        return code

    def ensure_stopped(self) -> None:
        if self.process is not None and self.process.poll() is None:
            stop_process(self.process.pid)

    def text(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    def batches(self) -> dict[int, int]:
        """batch_id -> records_read, from every run's batch log lines (a batch run twice counts once)."""
        found: dict[int, int] = {}
        for line in self.text().splitlines():
            if '"event": "batch"' in line:
                entry = json.loads(line[line.index("{") :])
                found[int(entry["batch_id"])] = int(entry["records_read"])
        return found

    def records_done(self) -> int:
        return sum(self.batches().values())

    def wait_for_records(self, total: int, timeout: float, stop_when_exited: bool = True) -> float | None:
        """Seconds until the logged batches hold `total` records; None when the job exited first (or timeout)."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if self.records_done() >= total:
                return time.monotonic() - started
            if stop_when_exited and not self.alive():
                return None
            time.sleep(1)
        return None


def committed_batches(config: AppConfig) -> set[int]:
    folder = Path(config.checkpoint_path()) / "commits"
    return {int(p.name) for p in folder.glob("[0-9]*")} if folder.exists() else set()


def wait_until(condition: Callable[[], bool], timeout: float, what: str, job: Job | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if job is not None and not job.alive():
            raise AssertionError(f"the job exited while waiting for {what}:\n{job.text()[-3000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.5)


# --- checks ----------------------------------------------------------------------------------------------------------


def assert_exactly_once(spark: SparkSession, config: AppConfig, total_records: int) -> dict[str, int]:
    """Every table holds each record once, and signals equal compute_signals over ticks; returns the counts."""

    def table(name: str) -> DataFrame:
        return spark.read.format("delta").load(config.table_path(name))

    raw, ticks, quarantine = table("raw_ticks"), table("ticks"), table("ticks_quarantine")
    counts = {"raw_ticks": raw.count(), "ticks": ticks.count(), "ticks_quarantine": quarantine.count()}
    assert counts["raw_ticks"] == total_records, counts
    assert raw.select("topic", "partition", "offset").distinct().count() == total_records, "raw_ticks doubled"
    assert ticks.select("symbol", "event_time").distinct().count() == counts["ticks"], "a tick stored twice"
    assert ticks.select("partition", "offset").distinct().count() == counts["ticks"], "a record stored twice"
    quarantined = quarantine.select("partition", "offset")
    assert quarantined.distinct().count() == counts["ticks_quarantine"], "a record quarantined twice"
    assert ticks.select("partition", "offset").intersect(quarantined).count() == 0, "a record both kept and rejected"
    # Each record is a tick, a quarantine row, or an identical re-send of a stored tick (counted as a duplicate).
    metrics = table("pipeline_metrics")
    sums = metrics.agg(
        F.sum("records_read").alias("read"),
        F.sum("ticks_written").alias("written"),
        F.sum("quarantined").alias("quarantined"),
        F.sum("duplicates").alias("duplicates"),
        F.countDistinct("batch_id").alias("batches"),
        F.count("*").alias("rows"),
    ).first()
    assert sums is not None
    assert sums["batches"] == sums["rows"], "a batch's metrics were written twice"
    assert (sums["read"], sums["written"], sums["quarantined"]) == (
        total_records,
        counts["ticks"],
        counts["ticks_quarantine"],
    ), sums
    assert counts["ticks"] + counts["ticks_quarantine"] + sums["duplicates"] == total_records, (counts, sums)
    signals = table("signals")
    counts["signals"] = signals.count()
    counts["duplicates"] = int(sums["duplicates"])
    counts["batches"] = int(sums["batches"])
    assert counts["signals"] == counts["ticks"], counts
    expected = compute_signals(ticks, config.signals.sma_short, config.signals.sma_long)
    assert_approx_df_equality(
        signals.select(*SIGNAL_COLUMNS), expected, precision=1e-9, ignore_row_order=True, ignore_nullable=True
    )
    return counts


def stored_ticks(spark: SparkSession, config: AppConfig) -> list[tuple[str, str, float, int]]:
    ticks = spark.read.format("delta").load(config.table_path("ticks"))
    return sorted(
        (row.symbol, row.event_time.strftime("%Y-%m-%dT%H:%M:%S.000Z"), row.close, row.volume)
        for row in ticks.select("symbol", "event_time", "close", "volume").collect()
    )


def expected_ticks(records: list[tuple[str, str]]) -> list[tuple[str, str, float, int]]:
    return sorted((b["symbol"], b["ts"], b["close"], b["volume"]) for b in (json.loads(v) for _, v in records))
