"""The packaged job on a real multi-JVM Spark cluster: a standalone master and two one-core workers started from the
pinned pyspark's own launcher classes, the job submitted as `make package` builds it (--py-files zip, entry script,
--jars) from a folder outside the checkout, with the cluster virtualenv's Python (only requirements-cluster.txt).

A seeded simulator stream with faults goes through the cluster in two micro-batches (`--once`); the tables must
equal local mode's for the same stream, and Spark's event log must show tasks on both workers. The drill variant
(`make test-cluster`) first runs the job continuously, SIGKILLs it after its first batch, and restarts it on the
same checkpoint with `--once`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from jobs.aws.package import (
    ENTRY_MODULE,
    build_package,
    cluster_requirements,
    import_closure,
    read_lock,
    read_requirements,
)
from jobs.devstack.services import ServiceHandle, stop_process
from jobs.devstack.spark_cluster import (
    ClusterInfo,
    alive_workers,
    cluster_job_overrides,
    start_cluster,
    submit_command,
    submit_environment,
    tasks_per_worker,
)
from jobs.stream_signals import run

REPO_ROOT = Path(__file__).resolve().parents[2]
CLUSTER_PYTHON = REPO_ROOT / ".venv-cluster" / "bin" / "python"
BUCKET = "cluster-lake"
FAULTS = ["--duplicates", "0.03", "--out-of-order", "0.05", "--too-late", "0.02", "--malformed", "0.03"]
SIGNAL_LABELS = ["symbol", "event_time", "close", "volume", "prev_volume", "signal", "crossover"]
QUARANTINE_KEYS = ["reason", "detail", "kafka_key", "value", "partition", "offset", "symbol", "event_time"]

# Minutes on a quiet 2-core machine; generous for a loaded one (every run starts three JVMs). The one-run check is
# part of `make test`; `make test-cluster` runs it with the SIGKILL drill.
pytestmark = [pytest.mark.timeout(3600), pytest.mark.cluster]


@pytest.fixture(scope="module")
def cluster(services_dir: Path) -> Iterator[ClusterInfo]:
    venv = CLUSTER_PYTHON.parent.parent
    _, imported = import_closure(REPO_ROOT, ENTRY_MODULE)
    wanted = cluster_requirements(imported, read_lock(REPO_ROOT / "requirements.lock"))
    installed = venv / "requirements-cluster.txt"
    if not CLUSTER_PYTHON.is_file() or not installed.is_file() or read_requirements(installed) != wanted:
        pytest.fail(f"the cluster virtualenv {venv} is missing or stale: run `make cluster-venv` (part of setup)")
    handles, info = start_cluster(services_dir / "spark", workers=2, worker_cores=1, worker_memory="1536m")
    try:
        assert len(alive_workers(info)) == 2
        yield info
    finally:
        for handle in handles.values():
            stop_process(handle.pid)


def _simulate(broker: ServiceHandle, topic: str, seed: int, start: str, count: int, summary: Path) -> dict:
    command = [
        sys.executable,
        "-m",
        "simulator",
        "run",
        "--bootstrap-servers",
        broker.address,
        "--topic",
        topic,
        "--seed",
        str(seed),
        "--start",
        start,
        "--symbols",
        "8",
        "--count",
        str(count),
        "--speed",
        "max",
        "--quiet",
        "--summary-json",
        str(summary),
        *FAULTS,
    ]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(summary.read_text())


def _summary(output: str) -> dict:
    lines = [line for line in output.splitlines() if line.startswith('{"event": "summary"')]
    assert lines, output[-4000:]
    return json.loads(lines[-1])


def _batches(log: Path) -> list[dict]:
    found = []
    for line in log.read_text(errors="replace").splitlines():
        if '{"event": "batch"' in line:
            found.append(json.loads(line[line.index("{") :]))
    return found


def _batch_ms(spark, metrics: str) -> list[int]:
    rows = spark.read.format("delta").load(metrics).orderBy("batch_id").select("batch_duration_ms").collect()
    return [int(row[0]) for row in rows]


def _table(spark, location: str, columns: list[str]) -> pd.DataFrame:
    frame = spark.read.format("delta").load(location).select(*columns).toPandas()
    return frame.sort_values(columns[:2] if "symbol" in columns[:1] else columns).reset_index(drop=True)


@pytest.mark.parametrize(
    "killed_first",
    [
        pytest.param(False, id="once"),
        # Two more driver JVMs with their executors: minutes more, so `make test-cluster` only.
        pytest.param(True, id="sigkilled-then-restarted", marks=pytest.mark.drill),
    ],
)
def test_packaged_job_on_a_two_worker_cluster_equals_local_mode(
    killed_first: bool,
    cluster: ClusterInfo,
    kafka_broker: ServiceHandle,
    moto_server: ServiceHandle,
    kafka_topic,
    make_config,
    spark,
    tmp_path: Path,
) -> None:
    import boto3

    bucket = f"{BUCKET}-{'restarted' if killed_first else 'once'}"
    dist = tmp_path / "dist"
    build_package(dist, REPO_ROOT / "conf" / "aws.yaml")
    endpoint = f"http://127.0.0.1:{moto_server.port}"
    boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    ).create_bucket(Bucket=bucket)
    topic = kafka_topic(partitions=3)
    lake = f"s3a://{bucket}/cluster"
    jars = sorted((REPO_ROOT / ".jars" / "spark").glob("*.jar"))
    events = tmp_path / "event-log"
    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    job_args = [
        "--config",
        str(REPO_ROOT / "conf" / "local.yaml"),
        *cluster_job_overrides(),
        "--set",
        f"storage.root={lake}/delta",
        "--set",
        f"storage.checkpoint_root={lake}/checkpoints",
        "--set",
        f"s3.endpoint={endpoint}",
        "--set",
        "s3.path_style_access=true",
        "--set",
        "s3.use_test_credentials=true",
        "--set",
        f"kafka.bootstrap_servers={kafka_broker.address}",
        "--set",
        f"kafka.topic={topic}",
        "--set",
        "spark.shuffle_partitions=2",
    ]

    def command(*extra: str) -> list[str]:
        return submit_command(cluster, dist, jars, CLUSTER_PYTHON, [*job_args, *extra], event_log_dir=events)

    env = submit_environment(CLUSTER_PYTHON)
    first = _simulate(
        kafka_broker, topic, seed=11, start="2026-01-05T09:15:00", count=120, summary=tmp_path / "first.json"
    )
    second = _simulate(
        kafka_broker, topic, seed=12, start="2026-01-05T13:15:00", count=120, summary=tmp_path / "second.json"
    )
    total = first["sent"] + second["sent"]
    output = ""
    if killed_first:
        # A continuous run on the cluster, SIGKILLed (driver and its JVM) once it has committed its first batch.
        per_batch = ["--set", "kafka.max_offsets_per_trigger=100"]
        streaming = command(*per_batch, "--set", "stream.trigger_interval=1 second")
        log = tmp_path / "continuous.log"
        started = time.monotonic()
        with open(log, "wb") as out:
            process = subprocess.Popen(
                streaming, cwd=workdir, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        try:
            deadline = time.monotonic() + 900
            while not any(batch["records_read"] for batch in _batches(log)):
                assert process.poll() is None, log.read_text()[-6000:]
                assert time.monotonic() < deadline, "no batch within 900 s:\n" + log.read_text()[-4000:]
                time.sleep(0.5)
        finally:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
        print(f"\ncluster: killed run {time.monotonic() - started:.1f} s")
        output = log.read_text(errors="replace")
        assert sum(batch["records_read"] for batch in _batches(log)) < total, "killed after the end"
    else:
        # Two micro-batches: the second reads the state and stored ticks the first wrote, on the executors.
        per_batch = ["--set", f"kafka.max_offsets_per_trigger={-(-total // 2)}"]

    # Restarted on the same checkpoint (or started) with --once: it drains the topic, prints its summary and exits.
    started = time.monotonic()
    once = subprocess.run(
        command(*per_batch, "--once"), cwd=workdir, env=env, capture_output=True, text=True, timeout=900
    )
    once_seconds = time.monotonic() - started
    assert once.returncode == 0, (once.stdout + once.stderr)[-6000:]
    output += once.stdout + once.stderr
    assert "market_signals.zip/jobs/__init__.py" in output, "the code must come from the zip"
    read_now = _summary(once.stdout)["records_read"]
    # After a kill: the rest, or batch 0 again when the kill came before its checkpoint commit (its writes are not
    # repeated).
    assert 0 < read_now <= total if killed_first else read_now == total

    # Local mode over the same stream in one micro-batch: where batches split does not change these tables
    # (tests/integration/test_stream_robustness.py), only revisions, which are not compared.
    local = make_config(f"kafka.bootstrap_servers={kafka_broker.address}", f"kafka.topic={topic}")
    started = time.monotonic()
    assert run(spark, local, once=True).records_read == total
    local_seconds = time.monotonic() - started
    cluster_batches = _batch_ms(spark, f"{lake}/delta/pipeline_metrics")
    assert len(cluster_batches) >= 2, cluster_batches
    local_batches = _batch_ms(spark, f"{local.storage.root}/pipeline_metrics")
    print(f"\nsame stream ({total} records): batch durations (ms) cluster {cluster_batches}, local {local_batches}")
    print(
        f"cluster: --once run {once_seconds:.1f} s (JVMs, executors included); local run(once) in the test's "
        f"session {local_seconds:.1f} s"
    )

    cluster_root, local_root = f"{lake}/delta", local.storage.root
    assert spark.read.format("delta").load(f"{cluster_root}/raw_ticks").count() == total

    ticks_columns = ["symbol", "event_time", "close", "volume", "message_format", "partition", "offset"]
    pd.testing.assert_frame_equal(
        _table(spark, f"{cluster_root}/ticks", ticks_columns), _table(spark, f"{local_root}/ticks", ticks_columns)
    )
    columns = [*SIGNAL_LABELS, "sma_short", "sma_long"]
    on_cluster = _table(spark, f"{cluster_root}/signals", columns)
    in_local = _table(spark, f"{local_root}/signals", columns)
    assert len(on_cluster) > 0 and {"Buy", "Sell"} <= set(on_cluster["signal"])
    pd.testing.assert_frame_equal(on_cluster[SIGNAL_LABELS], in_local[SIGNAL_LABELS])  # labels exact
    pd.testing.assert_frame_equal(
        on_cluster[["sma_short", "sma_long"]],
        in_local[["sma_short", "sma_long"]],
        check_exact=False,
        rtol=1e-9,
        atol=1e-9,
    )
    quarantine_cluster = _table(spark, f"{cluster_root}/ticks_quarantine", QUARANTINE_KEYS).sort_values(
        ["partition", "offset"], ignore_index=True
    )
    quarantine_local = _table(spark, f"{local_root}/ticks_quarantine", QUARANTINE_KEYS).sort_values(
        ["partition", "offset"], ignore_index=True
    )
    assert len(quarantine_cluster) > 0
    pd.testing.assert_frame_equal(quarantine_cluster, quarantine_local)

    # The work was spread: the event logs of the cluster runs show finished tasks on both workers.
    per_worker = tasks_per_worker(events, cluster)
    assert set(per_worker) == {0, 1} and min(per_worker.values()) > 0, per_worker
    print(f"tasks per worker: {dict(per_worker)}")
