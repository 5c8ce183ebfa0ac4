"""Process control: what the demo starts (broker, moto, stream job, simulator), how it stops it, and cleanup.

Spawning, port checks, log tails and stopping process groups are the dev stack's (`jobs.devstack.services`).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from jobs.devstack.demo.plan import DEMO_ENTRIES, DemoError, Plan
from jobs.devstack.services import (
    free_port,
    log_tail,
    port_accepts,
    port_bind_error,
    spawn,
    start_kafka,
    start_moto,
    status,
    stop_process,
)
from jobs.pipeline.config import REPO_ROOT, AppConfig, resolve_local_path


@dataclass
class Started:
    """A process the demo started (own process group), recorded so a later run can clean up after a kill."""

    name: str
    pid: int
    log_file: str
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False, compare=False)


class Processes:
    """What this run started; written to <data-dir>/demo-processes.json as it changes."""

    def __init__(self, state_file: Path) -> None:
        self.state_file = state_file
        self.items: list[Started] = []

    def add(self, item: Started) -> Started:
        self.items.append(item)
        self._save()
        return item

    def _save(self) -> None:
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        self.state_file.write_text(
            json.dumps(
                [{"name": item.name, "pid": item.pid, "log_file": item.log_file} for item in self.items], indent=2
            )
        )

    def stop_all(self) -> list[str]:
        stopped = []
        # Reverse order: the job and the simulator before the broker they talk to.
        for item in reversed(self.items):
            # The broker has no Popen here (local_stack started it): stop_process checks the pid itself.
            if item.process is None or item.process.poll() is None:
                if item.name == "stream job":
                    stop_stream_job(item, grace=60)
                else:
                    stop_process(item.pid, timeout=30)
                stopped.append(item.name)
        self.items = []
        self.state_file.unlink(missing_ok=True)
        return stopped


def stop_leftovers(state_file: Path) -> list[str]:
    """Stop processes a previous, killed demo left behind (only those still running what it started)."""
    if not state_file.exists():
        return []
    try:
        entries = json.loads(state_file.read_text())
    except (OSError, ValueError):
        entries = []
    stopped = []
    markers = {
        "kafka": "kafka.Kafka",
        "moto": "moto.server",
        "stream job": "jobs.stream_signals",
        "simulator": "simulator",
    }
    for entry in entries:
        try:
            command = " ".join(psutil.Process(entry["pid"]).cmdline())
        except (psutil.Error, KeyError, TypeError):
            continue
        # A recycled pid runs something else: leave it alone.
        if markers.get(entry.get("name"), "\0") in command:
            stop_process(entry["pid"], timeout=20)
            stopped.append(f"{entry['name']} (pid {entry['pid']})")
    state_file.unlink(missing_ok=True)
    return stopped


def reset_data_dir(data_dir: Path) -> None:
    """Empty the demo folder (a fresh run every time); refuse a folder that holds anything else."""
    if data_dir.exists():
        foreign = sorted(entry.name for entry in data_dir.iterdir() if entry.name not in DEMO_ENTRIES)
        if foreign:
            raise DemoError(
                f"--data-dir {data_dir} holds files the demo did not write ({', '.join(foreign[:5])}); "
                "it is emptied at every run, so choose a new or empty folder"
            )
        shutil.rmtree(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)


def _spawn(command: list[str], log_file: Path) -> subprocess.Popen[bytes]:
    # Own process group: Ctrl-C reaches the demo only, which then stops each child in order.
    return spawn(command, log_file, env={**os.environ, "PYTHONUNBUFFERED": "1"}, cwd=REPO_ROOT)


def ensure_kafka(config: AppConfig, port: int, services_dir: Path, processes: Processes, say: Any) -> str:
    """A broker address: the `make up` broker when it runs on `port`, else one the demo starts."""
    if port:
        running = status(config).get("kafka")
        if running and running[1] and running[0].port == port:
            say(f"kafka: using the broker of `make up` on localhost:{port} (pid {running[0].pid})")
            return f"localhost:{port}"
        if port_accepts(port):
            taken = port
            port = free_port()
            say(
                f"kafka: port {taken} is taken by something that `make up` did not start; "
                f"starting the demo's own broker on port {port} instead"
            )
        elif port_bind_error(port) is not None:
            # Nothing listens, but the port cannot be bound yet (connections of a stopped broker in TIME_WAIT).
            taken = port
            port = free_port()
            say(f"kafka: port {taken} is not free yet (a broker stopped moments ago?); using port {port}")
    port = port or free_port()
    say(f"kafka: starting a broker on localhost:{port} (log {services_dir / f'kafka-{port}' / 'kafka.log'})")
    handle = start_kafka(
        port,
        free_port(),
        services_dir,
        resolve_local_path(config.services.kafka_jars_dir),
        config.services.start_timeout_seconds,
    )
    processes.add(Started("kafka", handle.pid, handle.log_file))
    return handle.address


def ensure_s3(config: AppConfig, services_dir: Path, processes: Processes, say: Any) -> None:
    """For an S3 storage root: moto on the configured local endpoint if nothing answers there; the bucket."""
    from urllib.parse import urlparse

    from jobs.aws.clients import aws_client, split_s3_uri

    endpoint = config.s3.endpoint
    if endpoint:
        parsed = urlparse(endpoint)
        if parsed.hostname in {"localhost", "127.0.0.1"} and parsed.port and not port_accepts(parsed.port):
            say(f"moto: starting S3/Glue emulation on {endpoint}")
            handle = start_moto(parsed.port, services_dir, config.services.start_timeout_seconds)
            processes.add(Started("moto", handle.pid, handle.log_file))
    s3 = aws_client(config, "s3")
    for location in {config.storage.root, config.storage.checkpoint_root}:
        bucket, prefix = split_s3_uri(location)
        try:
            s3.head_bucket(Bucket=bucket)
        except Exception:  # noqa: BLE001 - absent or not ours: try to create, which names the real problem
            s3.create_bucket(Bucket=bucket)
        # A clean slate, like the local data folder.
        paginator = s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix.rstrip("/") + "/"):
            keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
            if keys:
                s3.delete_objects(Bucket=bucket, Delete={"Objects": keys})


def create_topic(config: AppConfig) -> None:
    from simulator.producer import ProducerSettings, ensure_topic

    ensure_topic(ProducerSettings.from_config(config))


def delete_topic(bootstrap: str, topic: str) -> None:
    """Best effort: a shared `make up` broker should not collect one topic per demo run."""
    try:
        from kafka import KafkaAdminClient

        admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
        try:
            admin.delete_topics([topic], timeout_ms=5000)
        finally:
            admin.close()
    except Exception:  # noqa: BLE001 - cleanup only
        pass


def _set_args(overrides: list[str]) -> list[str]:
    return [f"--set={item}" for item in overrides]


def start_stream_job(plan: Plan, processes: Processes) -> Started:
    log_file = plan.data_dir / "logs" / "stream_signals.log"
    # A safety net only: if the demo itself is killed, the job still ends on its own.
    timeout = plan.duration + plan.drain_seconds + 240
    command = [
        sys.executable,
        "-m",
        "jobs.stream_signals",
        "--config",
        str(plan.config_path),
        # A two-minute demo gains nothing from the warm-up (it pays off over a long run): start reading at once.
        "--set=stream.warm_up=false",
        *_set_args(plan.overrides),
        "--timeout",
        str(int(timeout)),
    ]
    return _add_spawned(processes, "stream job", command, log_file)


def _add_spawned(processes: Processes, name: str, command: list[str], log_file: Path) -> Started:
    process = _spawn(command, log_file)
    return processes.add(Started(name, process.pid, str(log_file), process))


def start_simulator(plan: Plan, processes: Processes) -> tuple[Started, Path]:
    summary = plan.data_dir / "simulator-summary.json"
    command = [
        sys.executable,
        "-m",
        "simulator",
        "run",
        "--config",
        str(plan.config_path),
        *_set_args(plan.overrides),
        "--symbols",
        str(plan.symbols),
        "--count",
        str(plan.symbols * plan.ticks_per_symbol),
        "--speed",
        f"{plan.speed:.6g}",
        "--seed",
        str(plan.seed),
        "--duplicates",
        "0.01",
        "--out-of-order",
        "0.02",
        "--too-late",
        "0.003",
        "--malformed",
        "0.005",
        "--quiet",
        "--summary-json",
        str(summary),
    ]
    return _add_spawned(processes, "simulator", command, plan.data_dir / "logs" / "simulator.log"), summary


def stop_stream_job(job: Started, grace: float) -> None:
    """SIGTERM to the job's Python process only: it lets the running micro-batch commit, then stops Spark.

    Signalling the whole process group would also stop the Spark JVM under the batch; the group is only
    killed when the job does not end within `grace` seconds.
    """
    assert job.process is not None
    if job.process.poll() is None:
        job.process.send_signal(signal.SIGTERM)
        try:
            job.process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
    stop_process(job.pid, timeout=20)


def check_alive(item: Started, what: str) -> None:
    assert item.process is not None
    code = item.process.poll()
    if code is not None and code != 0:
        raise DemoError(f"{what} exited with code {code}; see {item.log_file}:\n{log_tail(item.log_file, lines=25)}")
