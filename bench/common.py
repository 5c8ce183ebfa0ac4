"""Shared pieces of the streaming benchmarks: a private Kafka broker, the simulator feed, the job and the
stateless baseline as subprocesses, Delta-log readers (when a row became visible), statistics, memory
sampling and the results file.

Every benchmark works in its own folder under `.local/bench/` with its own broker on free ports, and stops
every process it started. Nothing here runs at import time.

"End of the batch", the same for the job and the stateless stream: the timestamp of the first Delta commit
whose added files contain the row (the commit that made it visible to readers), taken from the table's
transaction log. The commit time is the modification time of the commit's JSON file in `_delta_log/`, which
is the timestamp Delta's own history reports for tables without in-commit timestamps. Both clocks (the Kafka
producer's CreateTime and the file system) are the same machine's clock.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psutil
import pyarrow.parquet as pq

from jobs.devstack.services import ServiceError, free_port, start_kafka, stop_process
from jobs.pipeline.config import (
    REPO_ROOT,
    AppConfig,
    ConfigError,
    load_config,
    resolve_local_path,
    trigger_interval_micros,
)

BENCH_ROOT = REPO_ROOT / ".local" / "bench"
RESULTS_FILE = REPO_ROOT / "bench" / "RESULTS.md"
STATELESS_TABLE = "stateless_ticks"


class BenchError(RuntimeError):
    """A benchmark that could not run to the end; the message says why (and where the logs are)."""


# --- configuration ----------------------------------------------------------------------------------------


def config_args(args: Any) -> list[str]:
    """--config/--set of a benchmark, forwarded to the processes it starts."""
    return ["--config", args.config, *(f"--set={item}" for item in args.overrides)]


@dataclass(frozen=True)
class RunLayout:
    """Where one side of one run keeps its tables, checkpoint and logs, and which topic it reads."""

    folder: Path
    topic: str
    bootstrap: str
    trigger: str
    extra: tuple[str, ...] = ()

    @property
    def storage_root(self) -> Path:
        return self.folder / "delta"

    @property
    def checkpoint_root(self) -> Path:
        return self.folder / "checkpoints"

    @property
    def logs(self) -> Path:
        return self.folder / "logs"

    def overrides(self) -> list[str]:
        return [
            f"storage.root={self.storage_root}",
            f"storage.checkpoint_root={self.checkpoint_root}",
            f"kafka.bootstrap_servers={self.bootstrap}",
            f"kafka.topic={self.topic}",
            f"stream.trigger_interval={self.trigger}",
            *self.extra,
        ]

    def config(self, base_args: list[str]) -> AppConfig:
        config_file = base_args[1]
        overrides = [item.removeprefix("--set=") for item in base_args[2:]] + self.overrides()
        return load_config(config_file, overrides)

    def table(self, name: str) -> Path:
        return self.storage_root / name


def trigger_seconds(trigger: str) -> float:
    """'5 seconds' / '500 milliseconds' / '1 minute' -> seconds, as the job's configuration reads them."""
    micros = trigger_interval_micros(trigger)
    if micros is None:
        raise ConfigError(f"stream.trigger_interval {trigger!r} is not a trigger interval")
    return micros / 1_000_000


# --- workspace and broker ---------------------------------------------------------------------------------


@contextlib.contextmanager
def workspace(name: str, keep: bool) -> Iterator[Path]:
    """`.local/bench/<name>-<utc stamp>/`, removed at the end unless `keep`."""
    folder = BENCH_ROOT / f"{name}-{datetime.now(UTC):%Y%m%dT%H%M%S}"
    folder.mkdir(parents=True, exist_ok=True)
    try:
        yield folder
    finally:
        if keep:
            print(f"kept {folder}", flush=True)
        else:
            shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def kafka_broker(folder: Path, config: AppConfig) -> Iterator[str]:
    """A private Kafka broker on free ports for the benchmark; stopped (process group) at the end."""
    print("starting a Kafka broker on free ports ...", flush=True)
    handle = start_kafka(
        free_port(),
        free_port(),
        folder / "services",
        resolve_local_path(config.services.kafka_jars_dir),
        config.services.start_timeout_seconds,
    )
    try:
        yield handle.address
    finally:
        stop_process(handle.pid)


def create_topic(config: AppConfig, bootstrap: str, topic: str) -> None:
    from simulator.producer import ProducerSettings, ensure_topic

    ensure_topic(ProducerSettings.from_config(config, bootstrap, topic))


# --- processes --------------------------------------------------------------------------------------------


@dataclass
class Child:
    """A process the benchmark started (own process group), with its log file."""

    name: str
    process: subprocess.Popen[bytes]
    log_file: Path
    started: float = field(default_factory=time.monotonic)

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def check(self) -> None:
        if not self.alive() and self.process.returncode != 0:
            raise BenchError(
                f"{self.name} exited with code {self.process.returncode}; see {self.log_file}:\n{self.tail()}"
            )

    def wait(self, timeout: float) -> int:
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise BenchError(f"{self.name} did not finish within {timeout:.0f} s; see {self.log_file}") from None

    def stop(self, grace: float = 150.0) -> None:
        """SIGTERM the Python process only (it stops its query between two batches), then the group if needed."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                pass
        stop_process(self.pid, timeout=10)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=5)


def spawn(name: str, command: list[str], log_file: Path) -> Child:
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as log:
        process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=REPO_ROOT,
            start_new_session=True,
        )
    return Child(name, process, log_file)


@contextlib.contextmanager
def running(child: Child) -> Iterator[Child]:
    try:
        yield child
    finally:
        child.stop()


def start_job(layout: RunLayout, base_args: list[str], once: bool = False) -> Child:
    """`python -m jobs.stream_signals` on the layout's topic, tables and checkpoint."""
    command = [sys.executable, "-m", "jobs.stream_signals", *base_args, *(f"--set={o}" for o in layout.overrides())]
    if once:
        command.append("--once")
    return spawn("streaming job", command, layout.logs / "job.log")


def start_stateless(layout: RunLayout, base_args: list[str], once: bool = False) -> Child:
    """The stateless baseline (bench.stateless_stream) on the layout's topic, table and checkpoint."""
    command = [
        sys.executable,
        "-m",
        "bench.stateless_stream",
        *base_args,
        *(f"--set={o}" for o in layout.overrides()),
        "--progress-json",
        str(layout.logs / "stateless-progress.json"),
    ]
    if once:
        command.append("--once")
    return spawn("stateless stream", command, layout.logs / "stateless.log")


def wait_until_started(child: Child, checkpoint: Path, timeout: float) -> float:
    """Wait for the streaming query's checkpoint metadata (written when the query starts); seconds taken."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        child.check()
        if not child.alive():
            raise BenchError(f"{child.name} stopped before its query started; see {child.log_file}")
        if (checkpoint / "metadata").is_file():
            return time.monotonic() - child.started
        time.sleep(0.25)
    raise BenchError(f"{child.name}: query not started within {timeout:.0f} s; see {child.log_file}:\n{child.tail()}")


def simulator_command(
    bootstrap: str,
    topic: str,
    base_args: list[str],
    *,
    symbols: int = 120,
    rate: float | None = None,
    interval: float | None = None,
    count: int | None = None,
    duration: float | None = None,
    speed: str = "1",
    start: str | None = None,
    seed: int = 1,
    summary: Path | None = None,
) -> list[str]:
    command = [
        sys.executable,
        "-m",
        "simulator",
        "run",
        *base_args,
        "--bootstrap-servers",
        bootstrap,
        "--topic",
        topic,
        "--symbols",
        str(symbols),
        "--seed",
        str(seed),
        "--speed",
        speed,
        "--quiet",
    ]
    for option, value in (
        ("--rate", rate),
        ("--interval", interval),
        ("--count", count),
        ("--duration", duration),
        ("--start", start),
        ("--summary-json", summary),
    ):
        if value is not None:
            command += [option, str(value)]
    return command


def feed(command: list[str], log_file: Path, timeout: float) -> dict[str, Any]:
    """Run the simulator to the end; returns its JSON summary (requires --summary-json in `command`)."""
    child = spawn("simulator", command, log_file)
    try:
        code = child.wait(timeout)
    finally:
        child.stop(grace=5)
    if code != 0:
        raise BenchError(f"simulator exited with code {code}; see {log_file}:\n{child.tail()}")
    summary_path = Path(command[command.index("--summary-json") + 1])
    return json.loads(summary_path.read_text())


# --- Delta log readers (no Spark) -------------------------------------------------------------------------


@dataclass(frozen=True)
class Commit:
    version: int
    visible_ms: int  # mtime of the commit file
    operation: str
    added: tuple[str, ...]
    txn_version: int | None


def commits(table: Path) -> list[Commit]:
    """Every commit of a local Delta table still in its log, oldest first."""
    log_dir = table / "_delta_log"
    found = []
    for path in sorted(log_dir.glob("*.json")):
        if not path.stem.isdigit():
            continue
        operation, added, txn = "", [], None
        for line in path.read_text().splitlines():
            action = json.loads(line)
            if "commitInfo" in action:
                operation = action["commitInfo"].get("operation", "")
            elif "add" in action and action["add"].get("dataChange", True):
                added.append(action["add"]["path"])
            elif "txn" in action:
                txn = int(action["txn"]["version"])
        found.append(Commit(int(path.stem), int(path.stat().st_mtime_ns // 1_000_000), operation, tuple(added), txn))
    return found


def first_visible(table: Path, columns: Sequence[str], key: Sequence[str]) -> pd.DataFrame:
    """`columns` of every row, with `visible_ms`: the time of the first commit whose added files hold the row
    (rows identified by `key`). Files rewritten later (MERGE, compaction) do not move a row's first time."""
    frames = []
    for commit in commits(table):
        for relative in commit.added:
            frame = _utc(pq.read_table(table / _unquote(relative), columns=list(columns)).to_pandas())
            frame["visible_ms"] = commit.visible_ms
            frames.append(frame)
    if not frames:
        return pd.DataFrame(columns=[*columns, "visible_ms"])
    rows = pd.concat(frames, ignore_index=True)
    return rows.sort_values("visible_ms", kind="stable").drop_duplicates(list(key), keep="first")


def _unquote(path: str) -> str:
    from urllib.parse import unquote

    return unquote(path)


def read_delta(table: Path, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """The current snapshot of a local Delta table (delta-rs), or an empty frame when it does not exist."""
    from deltalake import DeltaTable

    if not DeltaTable.is_deltatable(str(table)):
        return pd.DataFrame(columns=list(columns or []))
    return _utc(DeltaTable(str(table)).to_pyarrow_table(columns=list(columns) if columns else None).to_pandas())


def _utc(frame: pd.DataFrame) -> pd.DataFrame:
    """Timestamps as UTC-aware nanoseconds, whatever the reader made of them (Parquet files may hold naive
    microseconds that are UTC instants)."""
    for name, dtype in frame.dtypes.items():
        if pd.api.types.is_datetime64_any_dtype(dtype):
            frame[name] = pd.to_datetime(frame[name], utc=True).astype("datetime64[ns, UTC]")
    return frame


def delta_row_count(table: Path) -> int:
    """Rows in the current snapshot, from the file statistics in the log (cheap, no data read)."""
    from deltalake import DeltaTable

    if not DeltaTable.is_deltatable(str(table)):
        return 0
    actions = DeltaTable(str(table)).get_add_actions(flatten=True)
    if not actions.num_rows:
        return 0
    return int(sum(int(count or 0) for count in actions.column("num_records").to_pylist()))


def wait_for_rows(table: Path, expected: int, timeout: float, child: Child) -> float:
    """Wait until `table` holds `expected` rows (the reader caught up); returns the seconds waited."""
    started = time.monotonic()
    deadline = started + timeout
    while time.monotonic() < deadline:
        child.check()
        if delta_row_count(table) >= expected:
            return time.monotonic() - started
        time.sleep(1.0)
    raise BenchError(
        f"{child.name}: {table.name} holds {delta_row_count(table):,} of {expected:,} rows after {timeout:.0f} s; "
        f"see {child.log_file}"
    )


def job_batches(layout: RunLayout) -> pd.DataFrame:
    """The job's pipeline_metrics rows (one per micro-batch with records), by batch id."""
    frame = read_delta(
        layout.table("pipeline_metrics"), ["batch_id", "batch_started_at", "records_read", "batch_duration_ms"]
    )
    return frame.sort_values("batch_id").reset_index(drop=True)


def job_latencies(layout: RunLayout) -> pd.DataFrame:
    """Per signal row: Kafka timestamp of its tick -> first commit of `signals` holding the row (ms)."""
    signals = first_visible(layout.table("signals"), ["symbol", "event_time"], ["symbol", "event_time"])
    ticks = read_delta(layout.table("ticks"), ["symbol", "event_time", "topic", "partition", "offset"])
    raw = read_delta(layout.table("raw_ticks"), ["topic", "partition", "offset", "kafka_timestamp"])
    joined = signals.merge(ticks, on=["symbol", "event_time"]).merge(raw, on=["topic", "partition", "offset"])
    joined["kafka_ms"] = epoch_ms(joined["kafka_timestamp"])
    joined["latency_ms"] = joined["visible_ms"] - joined["kafka_ms"]
    return joined[["kafka_ms", "visible_ms", "latency_ms"]]


def stateless_latencies(layout: RunLayout) -> pd.DataFrame:
    """Per record: Kafka timestamp -> first commit of the stateless table holding it (ms)."""
    rows = first_visible(
        layout.table(STATELESS_TABLE),
        ["topic", "partition", "offset", "kafka_timestamp"],
        ["topic", "partition", "offset"],
    )
    rows["kafka_ms"] = epoch_ms(rows["kafka_timestamp"])
    rows["latency_ms"] = rows["visible_ms"] - rows["kafka_ms"]
    return rows[["kafka_ms", "visible_ms", "latency_ms"]]


def epoch_ms(column: pd.Series) -> pd.Series:
    """Timestamps (naive = UTC) as epoch milliseconds."""
    values = pd.to_datetime(column, utc=True)
    return (values - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(milliseconds=1)


def stateless_batches(layout: RunLayout) -> pd.DataFrame:
    """Batch id, input rows and triggerExecution ms of the stateless stream (from its progress file)."""
    path = layout.logs / "stateless-progress.json"
    if not path.is_file():
        return pd.DataFrame(columns=["batch_id", "records_read", "batch_duration_ms"])
    return pd.DataFrame(json.loads(path.read_text()))


# --- statistics and memory --------------------------------------------------------------------------------


def percentile(values: Sequence[float] | pd.Series | np.ndarray, q: float) -> float:
    array = np.asarray(values, dtype=float)
    if array.size == 0:
        return float("nan")
    return float(np.percentile(array, q))


def ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else float("nan")


def verdict(value: float, limit: float, at_most: bool = True) -> str:
    if np.isnan(value):
        return "n/a"
    ok = value <= limit if at_most else value >= limit
    return "met" if ok else "NOT met"


def process_memory(pid: int) -> tuple[int, int]:
    """Resident bytes of the Python driver process and of its JVM child(ren) (psutil)."""
    try:
        parent = psutil.Process(pid)
        python_rss = parent.memory_info().rss
        jvm_rss = sum(
            child.memory_info().rss
            for child in parent.children(recursive=True)
            if "java" in (child.name() or "").lower()
        )
    except psutil.Error:
        return 0, 0
    return python_rss, jvm_rss


# --- results ----------------------------------------------------------------------------------------------


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory_gib = psutil.virtual_memory().total / 2**30
    return (
        f"{os.cpu_count()} CPUs (nproc), {memory_gib:.1f} GiB memory, {cpu}, {platform.system()} {platform.release()}"
    )


def git_commit() -> str:
    try:
        result = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    commit = result.stdout.strip() or "unknown"
    return f"{commit} (uncommitted changes)" if dirty.stdout.strip() else commit


def record_results(name: str, argv: Sequence[str], figures: list[str], quick: bool, record: bool = True) -> None:
    """Print the figures and append them to bench/RESULTS.md with the date, machine, commit and command."""
    for line in figures:
        print(line, flush=True)
    if not record:
        return
    command = " ".join(["python -m", f"bench.{name.replace('-', '_')}", *argv]).strip()
    note = " (--quick smoke run: tiny sizes, the figures are noise)" if quick else ""
    block = [
        f"## {name} — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC{note}",
        "",
        f"- machine: {machine()}",
        f"- commit: {git_commit()}",
        f"- command: `{command}`",
        "",
        "```",
        *figures,
        "```",
        "",
    ]
    if not RESULTS_FILE.exists():
        RESULTS_FILE.write_text("# Benchmark results\n\nAppended by `make bench*` (see bench/README.md).\n\n")
    with open(RESULTS_FILE, "a") as results:
        results.write("\n".join(block) + "\n")
    print(f"figures appended to {RESULTS_FILE.relative_to(REPO_ROOT)}", flush=True)


class Stopped(Exception):
    """SIGTERM/SIGINT received: unwind so every process and folder the benchmark started is cleaned up."""


def stop_on_signals() -> None:
    """Turn SIGTERM and SIGINT into `Stopped` in the main thread (a benchmark run in the background from a
    shell has SIGINT ignored; SIGTERM would otherwise end it without stopping the broker and the job)."""

    def raise_stopped(signum: int, _frame: Any) -> None:
        raise Stopped(f"stopped by {signal.Signals(signum).name}")

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, raise_stopped)


def add_common_arguments(parser: Any) -> None:
    from jobs.pipeline.config import add_config_arguments

    add_config_arguments(parser)
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny sizes and a few seconds of streaming")
    parser.add_argument("--keep", action="store_true", help="keep the working folder under .local/bench/")
    parser.add_argument(
        "--no-record", action="store_true", help="print the figures without appending them to bench/RESULTS.md"
    )


HANDLED_ERRORS = (BenchError, ConfigError, ServiceError, Stopped)
