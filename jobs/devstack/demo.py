"""`make demo`: the whole pipeline on the embedded default, watched live, then its results.

    python -m jobs.demo [--config conf/local.yaml] [--duration 60] [--kafka-port 9092] [--set key=value ...]

1. Starts what it needs: the local Kafka broker (a running `make up` broker on the configured port is reused;
   a port taken by anything else makes the demo start its own broker on a free port), and moto when the
   profile's storage.root is on an S3 endpoint of this machine.
2. Runs the streaming job (`python -m jobs.stream_signals`) and then the simulator (`python -m simulator run`:
   120 symbols on an accelerated simulated clock, with a few duplicates, out-of-order, too-late and malformed
   records), both as subprocesses, for --duration seconds, showing ticks/s, batches and signals as the job
   commits them (read from the pipeline_metrics Delta table).
3. Lets the job drain the topic, stops it between two micro-batches, then prints the latest signal per
   symbol (the v_latest_signals view on the local SQL engine), the quarantine counts by reason next to what the
   simulator injected, and writes charts for the symbols with the most crossovers.

Everything lives under --data-dir (default .local/demo), which is emptied at the start: each run starts from
a clean slate on a fresh topic, so running it twice works and the counts always reconcile. Whatever the demo
started is stopped at the end, also on Ctrl-C or SIGTERM; if the demo itself was killed, the next run stops
what the previous one left behind.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jobs.pipeline.config import (
    DEFAULT_CONFIG,
    REPO_ROOT,
    AppConfig,
    ConfigError,
    is_remote,
    load_config,
    resolve_local_path,
)

DEFAULT_DATA_DIR = ".local/demo"
STATE_FILE = "demo-processes.json"
# What a demo folder holds; anything else in --data-dir means it is not one, and it is not emptied.
DEMO_ENTRIES = {
    "delta",
    "checkpoints",
    "logs",
    "charts",
    "services",
    STATE_FILE,
    "demo-summary.json",
    "simulator-summary.json",
    "latest_signals.csv",
}
LATEST_SQL = (
    "SELECT symbol, event_time, close, volume, sma_short, sma_long, prev_volume, signal, crossover "
    "FROM v_latest_signals ORDER BY symbol"
)
QUARANTINE_SQL = "SELECT reason, COUNT(*) AS records FROM ticks_quarantine GROUP BY reason ORDER BY reason"
SIGNAL_COLOURS = {"Buy": "green", "Sell": "red", "Hold": "dim"}


class DemoError(RuntimeError):
    """The demo cannot go on; the message says why and where the log is."""


class Interrupted(Exception):
    """Ctrl-C or SIGTERM: stop what was started, then exit 130."""


@dataclass
class Started:
    """A process the demo started (own process group), recorded so a later run can clean up after a kill."""

    name: str
    pid: int
    log_file: str
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False, compare=False)


@dataclass
class Progress:
    batches: int = 0
    records_read: int = 0
    ticks: int = 0
    quarantined: int = 0
    duplicates: int = 0
    signals_emitted: int = 0
    signals_corrected: int = 0
    last_batch_ms: int = 0
    produced: int = 0


# ---------------------------------------------------------------------------------------------- processes


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
        from jobs.devstack.services import stop_process

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
    import psutil

    from jobs.devstack.services import stop_process

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
    log_file.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(log_file, "ab") as log:
        # Own process group: Ctrl-C reaches the demo only, which then stops each child in order.
        return subprocess.Popen(
            command,
            cwd=REPO_ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env=env,
        )


def _log_tail(path: Path | str, lines: int = 25) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _port_answers(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _port_bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


# ---------------------------------------------------------------------------------------------- services


def ensure_kafka(config: AppConfig, port: int, services_dir: Path, processes: Processes, say: Any) -> str:
    """A broker address: the `make up` broker when it runs on `port`, else one the demo starts."""
    from jobs.devstack.services import free_port, start_kafka, status

    if port:
        running = status(config).get("kafka")
        if running and running[1] and running[0].port == port:
            say(f"kafka: using the broker of `make up` on localhost:{port} (pid {running[0].pid})")
            return f"localhost:{port}"
        if _port_answers(port):
            taken = port
            port = free_port()
            say(
                f"kafka: port {taken} is taken by something that `make up` did not start; "
                f"starting the demo's own broker on port {port} instead"
            )
        elif not _port_bindable(port):
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
    from jobs.devstack.services import start_moto

    endpoint = config.s3.endpoint
    if endpoint:
        parsed = urlparse(endpoint)
        if parsed.hostname in {"localhost", "127.0.0.1"} and parsed.port and not _port_answers(parsed.port):
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


# ---------------------------------------------------------------------------------------------- progress


class Monitor:
    """Polls pipeline_metrics (deltalake) and the topic's end offsets (Kafka)."""

    def __init__(self, config: AppConfig) -> None:
        self.config = config
        self.consumer: Any = None
        self.partitions: list[Any] = []
        self.history: list[tuple[float, int, int]] = []  # (time, records read, records sent)

    def tables_exist(self) -> bool:
        from jobs.lake.delta_log import open_delta_table

        return open_delta_table(self.config, "pipeline_metrics") is not None

    def produced(self) -> int:
        from kafka import KafkaConsumer, TopicPartition

        try:
            if self.consumer is None:
                self.consumer = KafkaConsumer(
                    bootstrap_servers=self.config.kafka.bootstrap_servers, request_timeout_ms=5000
                )
            if not self.partitions:
                ids = self.consumer.partitions_for_topic(self.config.kafka.topic) or set()
                self.partitions = [TopicPartition(self.config.kafka.topic, p) for p in sorted(ids)]
            return sum(self.consumer.end_offsets(self.partitions).values()) if self.partitions else 0
        except Exception:  # noqa: BLE001 - progress display only
            return 0

    def poll(self) -> Progress:
        from jobs.lake.delta_log import open_delta_table

        progress = Progress(produced=self.produced())
        table = open_delta_table(self.config, "pipeline_metrics")
        if table is not None:
            frame = table.to_pyarrow_table().to_pandas()
            if not frame.empty:
                progress.batches = len(frame)
                for name in ("records_read", "quarantined", "duplicates", "signals_emitted", "signals_corrected"):
                    setattr(progress, name, int(frame[name].sum()))
                progress.ticks = int(frame["ticks_written"].sum())
                progress.last_batch_ms = int(frame.sort_values("batch_id")["batch_duration_ms"].iloc[-1])
        self.history.append((time.monotonic(), progress.records_read, progress.produced))
        return progress

    def rates(self, window: float = 10.0) -> tuple[float, float]:
        """(sent, read) records per second over the last `window` seconds (batches land in bursts)."""
        if len(self.history) < 2:
            return 0.0, 0.0
        now, read, sent = self.history[-1]
        then, read_then, sent_then = ([h for h in self.history if now - h[0] >= window] or self.history[:1])[-1]
        if now <= then:
            return 0.0, 0.0
        return (sent - sent_then) / (now - then), (read - read_then) / (now - then)

    def close(self) -> None:
        if self.consumer is not None:
            self.consumer.close()


def progress_table(progress: Progress, rates: tuple[float, float], elapsed: float, phase: str) -> Any:
    """A narrow key/value panel: fits an 80-column terminal."""
    from rich.panel import Panel
    from rich.table import Table

    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column(justify="right")
    grid.add_column()
    grid.add_row("simulator -> Kafka", f"{progress.produced:,}", f"records sent ({rates[0]:,.0f}/s)")
    grid.add_row("stream job", f"{progress.records_read:,}", f"records read ({rates[1]:,.0f} ticks/s)")
    grid.add_row(
        "micro-batches",
        f"{progress.batches:,}",
        f"the last took {progress.last_batch_ms / 1000:.1f} s" if progress.batches else "",
    )
    grid.add_row("ticks", f"{progress.ticks:,}", "valid, de-duplicated")
    grid.add_row(
        "signals", f"{progress.signals_emitted:,}", f"emitted (+{progress.signals_corrected:,} corrected by late ticks)"
    )
    grid.add_row(
        "quarantined", f"{progress.quarantined:,}", f"rejected records; {progress.duplicates:,} duplicates dropped"
    )
    return Panel(grid, title=f"market signals demo: {phase}, {elapsed:.0f} s", title_align="left", expand=False)


def progress_line(progress: Progress, rates: tuple[float, float], elapsed: float, phase: str) -> str:
    return (
        f"[{elapsed:5.0f} s] {phase}: sent {progress.produced:,} ({rates[0]:,.0f}/s), read by the job "
        f"{progress.records_read:,} ({rates[1]:,.0f} ticks/s), batches {progress.batches}, ticks {progress.ticks:,}, "
        f"signals {progress.signals_emitted:,} (+{progress.signals_corrected:,} corrected), "
        f"quarantined {progress.quarantined:,}, duplicates {progress.duplicates:,}"
    )


# ---------------------------------------------------------------------------------------------- the run


@dataclass
class Plan:
    config: AppConfig
    config_path: Path
    overrides: list[str]
    data_dir: Path
    duration: float
    symbols: int
    ticks_per_symbol: int
    seed: int
    drain_seconds: float
    chart_count: int

    @property
    def speed(self) -> float:
        # Simulated seconds per wall second so the bounded feed takes `duration` wall seconds.
        return self.ticks_per_symbol * self.config.simulator.interval_seconds / self.duration


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
    from jobs.devstack.services import stop_process

    assert job.process is not None
    if job.process.poll() is None:
        job.process.send_signal(signal.SIGTERM)
        try:
            job.process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
    stop_process(job.pid, timeout=20)


def _check_alive(item: Started, what: str) -> None:
    assert item.process is not None
    code = item.process.poll()
    if code is not None and code != 0:
        raise DemoError(f"{what} exited with code {code}; see {item.log_file}:\n{_log_tail(item.log_file)}")


def run_pipeline(plan: Plan, processes: Processes, console: Any) -> dict[str, Any]:
    """Stream job + simulator until the fed records are all read (or the drain time is up)."""
    from rich.live import Live

    monitor = Monitor(plan.config)
    started = time.monotonic()
    job = start_stream_job(plan, processes)
    console.print(f"stream job: starting Spark (pid {job.pid}, log {job.log_file})")
    deadline = started + plan.config.services.start_timeout_seconds + 60
    while not monitor.tables_exist():
        _check_alive(job, "the streaming job")
        if job.process is not None and job.process.poll() is not None:
            raise DemoError(f"the streaming job stopped before creating its tables; see {job.log_file}")
        if time.monotonic() > deadline:
            raise DemoError(
                f"the streaming job did not create its tables in time; see {job.log_file}:\n{_log_tail(job.log_file)}"
            )
        time.sleep(0.5)
    console.print(f"stream job: tables ready under {plan.config.storage.root} after {time.monotonic() - started:.0f} s")
    simulator, summary_path = start_simulator(plan, processes)
    console.print(
        f"simulator: {plan.symbols} symbols x {plan.ticks_per_symbol} ticks at {plan.speed:g}x "
        f"simulated speed for ~{plan.duration:.0f} s, seed {plan.seed} (log {simulator.log_file})"
    )

    feed_started = time.monotonic()
    summary: dict[str, Any] | None = None
    drain_deadline: float | None = None
    last_line = 0.0
    interactive = console.is_terminal
    live = Live(console=console, refresh_per_second=2, transient=False) if interactive else None
    if live is not None:
        live.start()
    progress = Progress()
    try:
        while True:
            progress = monitor.poll()
            elapsed = time.monotonic() - feed_started
            _check_alive(job, "the streaming job")
            assert job.process is not None
            if job.process.poll() is not None:
                raise DemoError(f"the streaming job stopped early; see {job.log_file}:\n{_log_tail(job.log_file)}")
            if summary is None and simulator.process is not None and simulator.process.poll() is not None:
                _check_alive(simulator, "the simulator")
                summary = json.loads(summary_path.read_text())
                drain_deadline = time.monotonic() + plan.drain_seconds
            phase = "feeding" if summary is None else "draining"
            rate = monitor.rates()
            if live is not None:
                live.update(progress_table(progress, rate, elapsed, phase))
            elif time.monotonic() - last_line >= 5:
                print(progress_line(progress, rate, elapsed, phase), flush=True)
                last_line = time.monotonic()
            if summary is not None and progress.records_read >= summary["sent"]:
                break
            if drain_deadline is not None and time.monotonic() > drain_deadline:
                console.print(
                    f"[yellow]the job read {progress.records_read:,} of {summary['sent']:,} records "
                    f"within the {plan.drain_seconds:.0f} s drain time; stopping it anyway[/]"
                )
                break
            time.sleep(2)
    finally:
        if live is not None:
            live.stop()
    console.print("stream job: stopping after its current micro-batch")
    stop_stream_job(job, grace=plan.drain_seconds + 60)
    # The batch running at the stop commits after the last poll: count it too.
    progress = monitor.poll()
    monitor.close()
    if not interactive:
        print(progress_line(progress, monitor.rates(), time.monotonic() - feed_started, "stopped"), flush=True)
    else:
        console.print(progress_table(progress, monitor.rates(), time.monotonic() - feed_started, "stopped"))
    return {
        "simulator": summary or {},
        "progress": asdict(progress),
        "feed_seconds": round(time.monotonic() - feed_started, 1),
    }


# ---------------------------------------------------------------------------------------------- results


def _fmt(value: Any, digits: int = 4) -> str:
    import pandas as pd

    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return "NULL"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, pd.Timestamp):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return str(value)


def latest_signals_table(frame: Any, short: int, long: int) -> Any:
    from rich import box
    from rich.table import Table

    table = Table(
        title=f"Latest signal per symbol (v_latest_signals, {len(frame)} symbols)",
        title_justify="left",
        box=box.SIMPLE_HEAD,
    )
    for column, justify in (
        ("symbol", "left"),
        ("event_time (UTC)", "left"),
        ("close", "right"),
        (f"sma_{short}", "right"),
        (f"sma_{long}", "right"),
        ("volume", "right"),
        ("signal", "left"),
        ("crossover", "left"),
    ):
        table.add_column(column, justify=justify, no_wrap=True)
    for row in frame.itertuples(index=False):
        colour = SIGNAL_COLOURS.get(row.signal, "")
        table.add_row(
            row.symbol,
            _fmt(row.event_time),
            _fmt(row.close, 2),
            _fmt(row.sma_short),
            _fmt(row.sma_long),
            _fmt(row.volume),
            f"[{colour}]{row.signal}[/]" if colour else row.signal,
            "" if row.crossover is None or row.crossover != row.crossover else row.crossover,
        )
    return table


def quarantine_table(
    observed: dict[str, int], expected: dict[str, int], progress: dict[str, Any], expected_totals: dict[str, Any]
) -> tuple[Any, bool]:
    from rich import box
    from rich.table import Table

    table = Table(title="Quarantine by reason vs injected", title_justify="left", box=box.SIMPLE_HEAD)
    table.add_column("reason")
    table.add_column("quarantined", justify="right")
    table.add_column("injected", justify="right")
    table.add_column("", justify="center")
    reconciled = True
    for reason in sorted(set(observed) | {k for k, v in expected.items() if v}):
        got, want = observed.get(reason, 0), expected.get(reason)
        ok = want is None or got == want
        reconciled &= ok
        table.add_row(reason, f"{got:,}", "-" if want is None else f"{want:,}", "ok" if ok else "[red]differs[/]")
    table.add_section()
    for label, got, want in (
        ("total quarantined", sum(observed.values()), expected_totals.get("quarantined")),
        ("duplicates (dropped)", progress.get("duplicates", 0), expected_totals.get("duplicates")),
        ("ticks accepted", progress.get("ticks", 0), expected_totals.get("ticks")),
    ):
        ok = want is None or got == want
        reconciled &= ok
        table.add_row(label, f"{got:,}", "-" if want is None else f"{want:,}", "ok" if ok else "[red]differs[/]")
    return table, reconciled


def chart_symbols(config: AppConfig, count: int) -> list[str]:
    """The symbols with the most crossovers (then the most Buy/Sell signals): the liveliest charts."""
    from jobs.lake.query import run_query

    frame = run_query(
        config,
        (
            "SELECT symbol, "
            "COUNT(crossover) AS crossovers, "
            "SUM(CASE WHEN signal <> 'Hold' THEN 1 ELSE 0 END) AS actions "
            "FROM signals GROUP BY symbol ORDER BY crossovers DESC, actions DESC, symbol LIMIT " + str(int(count))
        ),
    )
    return list(frame["symbol"])


def show_results(plan: Plan, run: dict[str, Any], console: Any) -> dict[str, Any]:
    from jobs.lake.query import run_query
    from jobs.lake.report import write_charts

    config = plan.config
    latest = run_query(config, LATEST_SQL)
    latest_csv = plan.data_dir / "latest_signals.csv"
    # Full precision next to the rounded table: data, not presentation.
    latest.to_csv(latest_csv, index=False, date_format="%Y-%m-%dT%H:%M:%S.%fZ", float_format="%.17g")
    console.print()
    console.print(latest_signals_table(latest, config.signals.sma_short, config.signals.sma_long))
    counts = latest["signal"].value_counts().to_dict()
    console.print(
        f"latest signals: Buy {counts.get('Buy', 0)}, Sell {counts.get('Sell', 0)}, "
        f"Hold {counts.get('Hold', 0)}  (full precision: {latest_csv})"
    )

    quarantine = run_query(config, QUARANTINE_SQL)
    observed = {str(row.reason): int(row.records) for row in quarantine.itertuples(index=False)}
    expected_block = run["simulator"].get("expected", {})
    table, reconciled = quarantine_table(
        observed, expected_block.get("quarantined_by_reason", {}), run["progress"], expected_block
    )
    console.print()
    console.print(table)
    read, sent = run["progress"].get("records_read", 0), run["simulator"].get("sent")
    if reconciled:
        console.print("counts reconcile: records read = ticks + quarantined + duplicates, as injected")
    elif sent is not None and read < sent:
        console.print(
            f"[yellow]partial counts: the job had read {read:,} of the {sent:,} records sent when it "
            "was stopped (raise --drain on a busy machine)[/]"
        )
    else:
        console.print("[yellow]counts differ from the simulator's summary (see the table)[/]")

    symbols = chart_symbols(config, plan.chart_count)
    charts = write_charts(config, symbols, plan.data_dir / "charts") if symbols else []
    console.print()
    console.print(f"charts ({', '.join(symbols)}):")
    for path in charts:
        console.print(f"  {path}", soft_wrap=True)
    return {
        "latest_signals_csv": str(latest_csv),
        "latest_signals_rows": len(latest),
        "quarantine": observed,
        "reconciled": reconciled,
        "chart_symbols": symbols,
        "charts": [str(path) for path in charts],
    }


# ---------------------------------------------------------------------------------------------- entry point


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m jobs.demo",
        description=(
            "Run the pipeline end to end on this machine: Kafka broker, simulator (120 symbols, accelerated "
            "clock, a few duplicate/late/malformed ticks), the streaming job, live progress; then the latest "
            "signal per symbol, quarantine counts and charts. Stops everything it started, also on Ctrl-C."
        ),
        epilog="example: python -m jobs.demo --duration 30 --kafka-port 0",
    )
    parser.add_argument(
        "--config", default=str(DEFAULT_CONFIG), help="configuration profile (YAML); default: conf/local.yaml"
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override one configuration key (repeatable); storage and Kafka are the demo's own",
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="how long the simulator feeds ticks (default 60; start-up, draining and charts add about 40 s)",
    )
    parser.add_argument(
        "--data-dir",
        default=DEFAULT_DATA_DIR,
        metavar="DIR",
        help=f"the demo's folder: tables, checkpoints, logs, charts; emptied at start (default {DEFAULT_DATA_DIR})",
    )
    parser.add_argument(
        "--kafka-port",
        type=int,
        default=None,
        metavar="PORT",
        help="broker port (default services.kafka_port; 0: the demo's own broker on a free port)",
    )
    parser.add_argument("--symbols", type=int, default=120, help="number of symbols (default 120: SYM001..SYM120)")
    parser.add_argument(
        "--ticks-per-symbol",
        type=int,
        default=60,
        metavar="N",
        help="clean ticks per symbol (default 60; the signals need 21 for the long average)",
    )
    parser.add_argument("--seed", type=int, default=42, help="simulator seed (default 42: the same market each run)")
    parser.add_argument(
        "--drain",
        type=float,
        default=90.0,
        metavar="SECONDS",
        help="at most this long for the job to catch up after the feed ends (default 90)",
    )
    parser.add_argument("--charts", type=int, default=3, metavar="N", help="symbols to chart (default 3)")
    return parser


def plan_from_args(args: argparse.Namespace) -> Plan:
    if args.duration <= 0 or args.drain < 0:
        raise ConfigError("--duration must be positive and --drain not negative")
    if not 1 <= args.symbols <= 999 or args.ticks_per_symbol < 1 or args.charts < 0:
        raise ConfigError("--symbols must be 1..999, --ticks-per-symbol at least 1, --charts not negative")
    data_dir = Path(args.data_dir)
    data_dir = data_dir.resolve() if args.data_dir != DEFAULT_DATA_DIR else resolve_local_path(DEFAULT_DATA_DIR)
    profile = load_config(args.config, args.overrides)
    if is_remote(profile.storage.root):
        storage = [
            f"storage.root={profile.storage.root}/demo",
            f"storage.checkpoint_root={profile.storage.checkpoint_root}/demo",
        ]
    else:
        storage = [f"storage.root={data_dir / 'delta'}", f"storage.checkpoint_root={data_dir / 'checkpoints'}"]
    # Demo defaults first, so the user's --set can change them; storage last, as it is the demo's own.
    overrides = [
        "stream.trigger_interval=2 seconds",
        "spark.driver_memory=2g",
        "stream.register_catalog=false",
        *args.overrides,
        *storage,
    ]
    return Plan(
        config=load_config(args.config, overrides),
        config_path=Path(args.config).resolve(),
        overrides=overrides,
        data_dir=data_dir,
        duration=args.duration,
        symbols=args.symbols,
        ticks_per_symbol=args.ticks_per_symbol,
        seed=args.seed,
        drain_seconds=args.drain,
        chart_count=args.charts,
    )


def _raise_interrupted(signum: int, _frame: Any) -> None:
    raise Interrupted(signal.Signals(signum).name)


def main(argv: list[str] | None = None) -> int:
    from rich.console import Console

    from jobs.devstack.services import ServiceError

    args = build_parser().parse_args(argv)
    # Outside a terminal (CI, tests, `| tee`) rich would wrap the tables at 80 columns.
    console = Console() if sys.stdout.isatty() else Console(width=140, soft_wrap=False)
    errors = Console(stderr=True, highlight=False)
    try:
        plan = plan_from_args(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    began = time.monotonic()
    state_file = plan.data_dir / STATE_FILE
    processes = Processes(state_file)
    bootstrap = ""
    previous = {sig: signal.signal(sig, _raise_interrupted) for sig in (signal.SIGINT, signal.SIGTERM)}
    code = 0
    try:
        leftovers = stop_leftovers(state_file)
        if leftovers:
            console.print(f"stopped what an interrupted earlier demo left running: {', '.join(leftovers)}")
        reset_data_dir(plan.data_dir)
        services_dir = plan.data_dir / "services"
        say = console.print
        port = plan.config.services.kafka_port if args.kafka_port is None else args.kafka_port
        bootstrap = ensure_kafka(plan.config, port, services_dir, processes, say)
        # A topic of its own per run: a reused broker may still hold the ticks of an earlier demo.
        topic = f"demo-ticks-{datetime.now(UTC):%Y%m%d%H%M%S}"
        extra = [f"kafka.bootstrap_servers={bootstrap}", f"kafka.topic={topic}"]
        plan.overrides += extra
        plan.config = load_config(args.config, plan.overrides)
        if is_remote(plan.config.storage.root):
            ensure_s3(plan.config, services_dir, processes, say)
        create_topic(plan.config)
        console.print(f"kafka: topic {topic} on {bootstrap}")

        run = run_pipeline(plan, processes, console)
        results = show_results(plan, run, console)
        summary = {
            "bootstrap_servers": bootstrap,
            "topic": topic,
            "storage_root": plan.config.storage.root,
            "data_dir": str(plan.data_dir),
            **run,
            **results,
            "wall_seconds": round(time.monotonic() - began, 1),
        }
        summary_file = plan.data_dir / "demo-summary.json"
        summary_file.write_text(json.dumps(summary, indent=2, default=str) + "\n")
        console.print(f"\nsummary: {summary_file}")
    except Interrupted as exc:
        console.print(f"\n[yellow]{exc}: stopping what the demo started[/]")
        code = 130
    except (DemoError, ServiceError, ConfigError) as exc:
        errors.print(f"[red]error:[/] {exc}")
        code = 1
    except Exception as exc:  # noqa: BLE001 - a demo should end with one line and the logs, not a traceback
        errors.print(f"[red]error:[/] {type(exc).__name__}: {exc}\nlogs: {plan.data_dir / 'logs'}")
        code = 1
    finally:
        # A second Ctrl-C while stopping would leave processes behind: ignore it until done.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            stopped = processes.stop_all()
            if bootstrap and "kafka" not in stopped:
                delete_topic(bootstrap, plan.config.kafka.topic)
            if stopped:
                console.print(f"stopped: {', '.join(stopped)}")
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    if code == 0:
        console.print(f"demo finished in {time.monotonic() - began:.0f} s")
    return code


if __name__ == "__main__":
    sys.exit(main())
