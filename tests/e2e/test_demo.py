"""`make demo` in a shortened run, driven as a command: what it prints and writes, checked against the Delta
tables read independently (deltalake + pandas), the processes it starts and stops, and its dev-stack behaviour
(a running `make up` broker is reused, a taken port gets a broker of its own, a killed demo's leftovers are
stopped by the next run)."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import psutil
import pytest
from deltalake import DeltaTable

from jobs.devstack.services import free_port
from jobs.lake.delta_log import read_delta_arrow
from jobs.lake.query import run_query
from jobs.pipeline.config import load_config
from tests.support import delta_commits

REPO_ROOT = Path(__file__).resolve().parents[2]
# Two demo runs and a broker: minutes on an idle 2-core machine, far more on a busy one.
pytestmark = pytest.mark.timeout(2700)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
KEY = ["symbol", "event_time"]
COMPARED = ["symbol", "event_time", "sma_short", "sma_long", "signal"]


def _assert_same_signals(actual: pd.DataFrame, expected: pd.DataFrame) -> None:
    """Equal on symbol, event_time, signal; averages equal within 1e-9 (both NULL counts as equal)."""
    actual = actual[COMPARED].sort_values(KEY).reset_index(drop=True)
    expected = expected[COMPARED].sort_values(KEY).reset_index(drop=True)
    assert len(actual) == len(expected)
    for frame in (actual, expected):
        # CSV, Arrow and DuckDB give different dtypes (object/string, ns/us): compare values.
        frame["event_time"] = pd.to_datetime(frame["event_time"], utc=True).astype("datetime64[ns, UTC]")
        frame["symbol"] = frame["symbol"].astype(str)
        frame["signal"] = frame["signal"].astype(str)
    for column in ("symbol", "event_time", "signal"):
        assert actual[column].tolist() == expected[column].tolist(), column
    for column in ("sma_short", "sma_long"):
        left, right = actual[column].astype("float64"), expected[column].astype("float64")
        assert (left.isna() == right.isna()).all(), column
        assert ((left - right).abs().fillna(0) <= 1e-9).all(), column


@dataclass
class DemoRuns:
    """Two demo runs on one data folder: the first (reusing a `make up` broker) SIGKILLed, the second complete."""

    result: subprocess.CompletedProcess[str]
    data_dir: Path
    first_stdout: str
    make_up_port: int
    make_up_pid: int
    taken_port: int
    leftovers: list[dict]  # the first run's state file at the kill
    leftover_processes: list[psutil.Process]  # ... and those processes with their descendants
    leftovers_running: list[int]  # of those, the pids still running once the second run started its broker
    started: dict[int, tuple[str, float]] = field(default_factory=dict)  # pid -> (name, create_time), 2nd run


def _demo_command(data_dir: Path, state_dir: Path, kafka_port: int, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "jobs.demo",
        "--config",
        str(REPO_ROOT / "conf" / "local.yaml"),
        "--kafka-port",
        str(kafka_port),
        "--data-dir",
        str(data_dir),
        "--set",
        "spark.driver_memory=1g",
        "--set",
        "spark.shuffle_partitions=2",
        "--set",
        f"services.state_dir={state_dir}",
        # Room for a slow Spark start on a busy machine (the demo waits this + 60 s for the job's tables).
        "--set",
        "services.start_timeout_seconds=300",
        # Several micro-batches, so some out-of-order ticks land in a later batch than the ticks after them and
        # correct stored signals (in one or two big batches they correct nothing).
        "--set",
        "kafka.max_offsets_per_trigger=1500",
        *extra,
    ]


def _local_stack(state_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [
        sys.executable,
        "-m",
        "jobs.local_stack",
        *args,
        "--config",
        str(REPO_ROOT / "conf" / "local.yaml"),
        "--set",
        f"services.state_dir={state_dir}",
    ]
    return subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)


def _state(path: Path) -> list[dict]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return []


def _with_descendants(pid: int) -> list[psutil.Process]:
    try:
        process = psutil.Process(pid)
        return [process, *process.children(recursive=True)]
    except psutil.Error:
        return []


def _running(process: psutil.Process) -> bool:
    """Still the same process (pid and start time) and not a zombie."""
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("demo")
    data_dir, state_dir = root / "data", root / "make-up"
    make_up_port = free_port()
    up = _local_stack(
        state_dir,
        "up",
        "--no-moto",
        "--kafka-port",
        str(make_up_port),
        "--set",
        f"services.kafka_controller_port={free_port()}",
    )
    assert up.returncode == 0, up.stderr[-3000:]
    make_up_pid = json.loads((state_dir / "services.json").read_text())["kafka"]["pid"]
    state_file = data_dir / "demo-processes.json"
    leftover_processes: list[psutil.Process] = []
    started: dict[int, tuple[str, float]] = {}
    try:
        # Run 1 reuses the `make up` broker and is killed (SIGKILL, no cleanup) once its stream job runs.
        first_log = root / "first.out"
        with open(first_log, "wb") as out:
            first = subprocess.Popen(
                # A long --drain: the job's own safety timeout (duration + drain + 240 s) must not end it first.
                _demo_command(data_dir, state_dir, make_up_port, "--drain", "900"),
                cwd=REPO_ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            deadline = time.monotonic() + 180
            # Until its stream job runs and has started its Spark JVM (a child process).
            while time.monotonic() < deadline and first.poll() is None:
                jobs = [entry["pid"] for entry in _state(state_file) if entry["name"] == "stream job"]
                if jobs and len(_with_descendants(jobs[0])) >= 2:
                    break
                time.sleep(0.1)
            leftovers = _state(state_file)
            assert first.poll() is None, first_log.read_text()[-3000:]
        finally:
            first.kill()
            first.wait(timeout=30)
        assert [entry["name"] for entry in leftovers] == ["stream job"], leftovers
        # Taken after the kill: spark-submit's own short-lived launcher JVM may have come and gone meanwhile.
        time.sleep(2)
        for entry in leftovers:
            leftover_processes += [process for process in _with_descendants(entry["pid"]) if _running(process)]
        assert len(leftover_processes) >= 2, "the killed run left no stream job with its Spark JVM behind"

        # Run 2, on the same folder, with its port held by something that is not a `make up` broker.
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
            holder.bind(("127.0.0.1", 0))
            holder.listen()
            taken_port = holder.getsockname()[1]
            out_file, err_file = root / "second.out", root / "second.err"
            with open(out_file, "w") as out, open(err_file, "w") as err:
                second = subprocess.Popen(
                    _demo_command(
                        data_dir,
                        state_dir,
                        taken_port,
                        "--duration",
                        "20",
                        "--ticks-per-symbol",
                        "30",
                        # At most this long to catch up; an idle machine needs seconds, a busy one minutes.
                        "--drain",
                        "1200",
                    ),
                    cwd=REPO_ROOT,
                    stdout=out,
                    stderr=err,
                    text=True,
                )
            deadline = time.monotonic() + 2400
            leftovers_running: list[int] | None = None
            old_pids = {entry["pid"] for entry in leftovers}
            try:
                # Record every process the demo starts (from its state file) with its descendants.
                while second.poll() is None and time.monotonic() < deadline:
                    entries = _state(state_file)
                    # Until the file lists this run's own processes, it is still the killed run's stale one.
                    if leftovers_running is None and any(entry["pid"] not in old_pids for entry in entries):
                        # The run has done its cleanup of the killed run and started its broker.
                        leftovers_running = [p.pid for p in leftover_processes if _running(p)]
                    for entry in entries:
                        if entry["pid"] in old_pids:
                            continue
                        for process in _with_descendants(entry["pid"]):
                            started.setdefault(process.pid, (entry["name"], process.create_time()))
                    time.sleep(0.2)
                second.wait(timeout=30)
            finally:
                if second.poll() is None:
                    second.terminate()  # the demo stops what it started on SIGTERM
                    try:
                        second.wait(timeout=120)
                    except subprocess.TimeoutExpired:
                        second.kill()
        result = subprocess.CompletedProcess(second.args, second.returncode, out_file.read_text(), err_file.read_text())
        assert result.returncode == 0, f"demo failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
        yield DemoRuns(
            result=result,
            data_dir=data_dir,
            first_stdout=first_log.read_text(),
            make_up_port=make_up_port,
            make_up_pid=make_up_pid,
            taken_port=taken_port,
            leftovers=leftovers,
            leftover_processes=leftover_processes,
            leftovers_running=leftovers_running if leftovers_running is not None else [-1],
            started=started,
        )
    finally:
        _local_stack(state_dir, "down")
        # Whatever is still running after the demo (a failure the tests report) is not left on the machine.
        for process in [*leftover_processes, *_recorded(started)]:
            if _running(process):
                process.kill()


def _recorded(started: dict[int, tuple[str, float]]) -> list[psutil.Process]:
    """The recorded processes that still run with the same pid and start time."""
    processes = []
    for pid, (_, created) in started.items():
        try:
            process = psutil.Process(pid)
        except psutil.Error:
            continue
        if process.create_time() == created:
            processes.append(process)
    return processes


def _summary(demo: DemoRuns) -> dict:
    return json.loads((demo.data_dir / "demo-summary.json").read_text())


def _config(data_dir: Path):
    return load_config(
        REPO_ROOT / "conf" / "local.yaml",
        [f"storage.root={data_dir / 'delta'}", f"storage.checkpoint_root={data_dir / 'checkpoints'}"],
        environ={},
    )


def _delta(data_dir: Path, table: str) -> pd.DataFrame:
    return read_delta_arrow(DeltaTable(str(data_dir / "delta" / table))).to_pandas()


def test_demo_prints_the_latest_signal_of_each_symbol_in_the_signals_table(demo) -> None:
    result, data_dir = demo.result, demo.data_dir
    summary = _summary(demo)
    out = result.stdout
    assert "Latest signal per symbol (v_latest_signals" in out
    for header in ("symbol", "event_time (UTC)", "close", "sma_9", "sma_21", "signal", "crossover"):
        assert header in out
    assert summary["progress"]["batches"] >= 1 and summary["progress"]["signals_emitted"] > 0
    assert "ticks/s" in out  # live progress lines

    printed = pd.read_csv(summary["latest_signals_csv"])
    assert len(printed) == summary["latest_signals_rows"] == 120
    # Independently: the newest row per symbol of the stream's `signals` table (deltalake + pandas).
    signals = _delta(data_dir, "signals")
    latest = signals.sort_values(KEY).groupby("symbol", sort=True).tail(1)
    _assert_same_signals(printed, latest)
    merged = printed.merge(latest, on="symbol", suffixes=("_printed", "_table"))
    assert (merged["close_printed"] - merged["close_table"]).abs().max() <= 1e-9
    assert merged["volume_printed"].tolist() == merged["volume_table"].tolist()
    assert merged["crossover_printed"].fillna("").tolist() == merged["crossover_table"].fillna("").tolist()
    printed_rows = [line.split() for line in out.splitlines() if line.strip().startswith("SYM")]
    assert [row[0] for row in printed_rows] == list(printed["symbol"])
    assert [row[-1] if row[-1] in {"Buy", "Sell", "Hold"} else row[-2] for row in printed_rows] == list(
        printed["signal"]
    )

    # The stream's signals table is the view over its ticks (the demo's late ticks included).
    config = _config(data_dir)
    assert len(signals) > 0
    _assert_same_signals(signals, run_query(config, "SELECT * FROM v_signals"))


QUARANTINE_ROW = re.compile(r"^\s*([a-z_]+)\s+([\d,]+)\s+([\d,]+|-)\s+(ok|differs)\s*$")
TOTAL_ROW = re.compile(r"^\s*(total quarantined|duplicates \(dropped\)|ticks accepted)\s+([\d,]+)\s+([\d,]+|-)\s+(\S+)")


def test_demo_reconciles_quarantine_counts_with_what_was_injected(demo) -> None:
    result, data_dir = demo.result, demo.data_dir
    summary = _summary(demo)
    out = result.stdout
    assert "Quarantine by reason vs injected" in out
    injected = summary["simulator"]["expected"]
    progress = summary["progress"]
    # The job caught up with everything the simulator sent (the demo waits for it, up to --drain).
    assert progress["records_read"] == summary["simulator"]["sent"] > 0
    assert progress["records_read"] == progress["ticks"] + progress["quarantined"] + progress["duplicates"]

    # The quarantine read independently from its Delta table.
    quarantine = _delta(data_dir, "ticks_quarantine")
    by_reason = {str(reason): int(count) for reason, count in quarantine["reason"].value_counts().items()}
    wanted = {reason: count for reason, count in injected["quarantined_by_reason"].items() if count}
    assert by_reason == wanted
    assert by_reason.get("too_late", 0) > 0 and by_reason.get("not_json", 0) > 0
    assert summary["quarantine"] == by_reason
    assert len(_delta(data_dir, "ticks")) == progress["ticks"] == injected["ticks"]
    assert progress["duplicates"] == injected["duplicates"] > 0

    # What the demo printed: one row per reason with the stored count, the injected count and "ok".
    section = out[out.index("Quarantine by reason vs injected") :]
    rows = {m.group(1): m.groups()[1:] for m in map(QUARANTINE_ROW.match, section.splitlines()) if m}
    assert {reason: int(got.replace(",", "")) for reason, (got, _, _) in rows.items()} == by_reason
    assert {reason: int(want.replace(",", "")) for reason, (_, want, _) in rows.items()} == wanted
    assert {verdict for _, _, verdict in rows.values()} == {"ok"}
    totals = {m.group(1): m.groups()[1:] for m in map(TOTAL_ROW.match, section.splitlines()) if m}
    assert totals == {
        "total quarantined": (f"{sum(by_reason.values()):,}", f"{injected['quarantined']:,}", "ok"),
        "duplicates (dropped)": (f"{progress['duplicates']:,}", f"{injected['duplicates']:,}", "ok"),
        "ticks accepted": (f"{progress['ticks']:,}", f"{injected['ticks']:,}", "ok"),
    }
    assert "counts reconcile: records read = ticks + quarantined + duplicates, as injected" in out


def test_demo_counts_the_signals_corrected_by_late_ticks(demo) -> None:
    summary = _summary(demo)
    signals = _delta(demo.data_dir, "signals")
    progress = summary["progress"]
    # Each correction is one revision step of one row: the counter is the sum of revisions in the table.
    # (How many there are depends on where micro-batches split: a late tick read in the same batch as the ticks
    # after it corrects nothing.)
    assert progress["signals_corrected"] == int(signals["revision"].sum()) > 0
    assert (signals["revision"] >= 1).sum() <= progress["signals_corrected"]
    assert progress["signals_emitted"] == len(signals)
    final = [line for line in demo.result.stdout.splitlines() if "] stopped: sent" in line]
    assert len(final) == 1
    assert f"signals {len(signals):,} (+{progress['signals_corrected']:,} corrected)" in final[0]


def test_demo_stops_every_process_it_started(demo) -> None:
    names = {name for name, _ in demo.started.values()}
    assert {"kafka", "stream job", "simulator"} <= names
    assert len(demo.started) > len(names), "the stream job's Spark JVM was not seen"
    alive = [f"pid {p.pid}: {' '.join(p.cmdline())[:120]}" for p in _recorded(demo.started) if _running(p)]
    assert alive == []
    assert "stopped: " in demo.result.stdout
    assert not (demo.data_dir / "demo-processes.json").exists()


def test_demo_reuses_a_running_make_up_broker_and_next_run_stops_a_killed_runs_leftovers(demo) -> None:
    assert (
        f"kafka: using the broker of `make up` on localhost:{demo.make_up_port} (pid {demo.make_up_pid})"
        in demo.first_stdout
    )
    (job,) = demo.leftovers
    assert f"stopped what an interrupted earlier demo left running: stream job (pid {job['pid']})" in demo.result.stdout
    assert len(demo.leftover_processes) >= 2  # the job and its Spark JVM
    assert demo.leftovers_running == []
    # What the demo did not start, it leaves running.
    assert _running(psutil.Process(demo.make_up_pid))


def test_demo_starts_its_own_broker_when_the_port_is_taken(demo) -> None:
    summary = _summary(demo)
    match = re.search(
        rf"kafka: port {demo.taken_port} is taken by something that `make up` did not start; "
        r"starting the demo's own broker on port (\d+) instead",
        demo.result.stdout,
    )
    assert match, demo.result.stdout[:3000]
    own_port = int(match.group(1))
    assert own_port != demo.taken_port
    assert summary["bootstrap_servers"] == f"localhost:{own_port}"
    assert "kafka" in {name for name, _ in demo.started.values()}


def test_demo_writes_png_and_html_charts(demo) -> None:
    result, data_dir = demo.result, demo.data_dir
    summary = _summary(demo)
    charts = [Path(path) for path in summary["charts"]]
    assert len(charts) == 2 * len(summary["chart_symbols"]) == 6
    for path in charts:
        assert path.parent == data_dir / "charts"
        assert str(path) in result.stdout
        if path.suffix == ".png":
            assert path.read_bytes()[:8] == PNG_MAGIC and path.stat().st_size > 10_000
        else:
            html = path.read_text()
            assert html.lstrip().lower().startswith("<!doctype html>") and html.rstrip().endswith("</html>")
            assert "Plotly.newPlot" in html
            assert not re.search(r"<script[^>]*\bsrc=", html)  # self-contained: plotly.js is inlined


def test_ctrl_c_stops_everything_the_demo_started(tmp_path: Path) -> None:
    """Ctrl-C in a terminal: SIGINT to the demo's foreground process group while its broker, stream job and
    simulator all run and the job has written a micro-batch. The demo stops each one (the job between two
    micro-batches) and exits 130. (A stop during the job's start-up: test_stream_cli.py.)"""
    data_dir = tmp_path / "data"
    state_file = data_dir / "demo-processes.json"
    metrics = data_dir / "delta" / "pipeline_metrics"
    # A free port with no `make up` broker on it: the demo starts its own.
    command = _demo_command(data_dir, tmp_path / "make-up", free_port(), "--duration", "300", "--drain", "60")
    out_file = tmp_path / "demo.out"
    started: dict[int, tuple[str, float]] = {}
    with open(out_file, "w") as log:
        demo = subprocess.Popen(
            command, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, text=True, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 600
        names: set[str] = set()
        while demo.poll() is None and time.monotonic() < deadline:
            entries = _state(state_file)
            for entry in entries:
                for process in _with_descendants(entry["pid"]):
                    started.setdefault(process.pid, (entry["name"], process.create_time()))
            names = {entry["name"] for entry in entries}
            # Everything runs: the broker, the job, the simulator sending, and a first batch committed.
            if names == {"kafka", "stream job", "simulator"} and len(delta_commits(metrics)) >= 2:
                break
            time.sleep(0.2)
        assert demo.poll() is None and names == {"kafka", "stream job", "simulator"}, out_file.read_text()[-3000:]
        os.killpg(demo.pid, signal.SIGINT)
        code = demo.wait(timeout=300)
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait(timeout=30)
        for process in _recorded(started):
            if _running(process):
                process.kill()
    out = out_file.read_text()
    assert code == 130, out[-3000:]
    assert "SIGINT: stopping what the demo started" in out
    assert [line for line in out.splitlines() if line.startswith("stopped: ")] == [
        "stopped: simulator, stream job, kafka"
    ]
    assert "Traceback" not in out
    alive = [f"pid {p.pid}: {' '.join(p.cmdline())[:120]}" for p in _recorded(started) if _running(p)]
    assert alive == []
    assert {name for name, _ in started.values()} == {"kafka", "stream job", "simulator"}
    assert not state_file.exists()
    # The job ended on its own SIGTERM path, not killed: every batch it ran committed, then it printed its summary.
    job_log = (data_dir / "logs" / "stream_signals.log").read_text()
    summaries = [json.loads(line) for line in job_log.splitlines() if line.startswith('{"event": "summary"')]
    assert len(summaries) == 1, job_log[-3000:]
    written = _delta(data_dir, "pipeline_metrics")
    assert summaries[0]["batches"] == len(written) >= 1
    assert summaries[0]["records_read"] == int(written["records_read"].sum())
