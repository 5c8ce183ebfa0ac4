"""Drill (make drill): SIGKILLs of the job at random moments over a long stream with faults (duplicates,
out-of-order, too-late and malformed records from the simulator), each followed by a restart on the same
checkpoint. Afterwards every table holds each record once, signals equal compute_signals over ticks, and ticks,
quarantine and signals equal those of one uninterrupted run over the same topic.

Sizes: DRILL_TICKS clean ticks (default 200000), DRILL_KILLS kills (default 20), DRILL_BATCHES micro-batches
over the stream (default 40), DRILL_SEED (default 7); e.g. DRILL_TICKS=3000 DRILL_KILLS=3 DRILL_BATCHES=10 for a
smoke run."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from pyspark.sql import DataFrame

from jobs.pipeline.config import AppConfig
from jobs.stream_signals import run
from tests.drills.harness import REPO_ROOT, Broker, Job, assert_exactly_once

TICKS = int(os.environ.get("DRILL_TICKS", "200000"))
KILLS = int(os.environ.get("DRILL_KILLS", "20"))
SEED = int(os.environ.get("DRILL_SEED", "7"))
# About DRILL_BATCHES (default 40) micro-batches over the stream, so the kills land in many different batches.
BATCH_RECORDS = max(50, min(5000, TICKS // int(os.environ.get("DRILL_BATCHES", "40"))))

pytestmark = [pytest.mark.drill, pytest.mark.timeout(4 * 3600)]


def _batch_files(folder: Path) -> set[int]:
    return {int(p.name) for p in folder.glob("[0-9]*")} if folder.exists() else set()


def _same_rows(left: DataFrame, right: DataFrame, what: str) -> None:
    missing, extra = right.exceptAll(left), left.exceptAll(right)
    assert (missing.count(), extra.count()) == (0, 0), (
        f"{what}: rows missing {missing.limit(5).collect()}, rows extra {extra.limit(5).collect()}"
    )


def test_sigkills_at_random_moments_over_a_faulty_stream(spark, make_config, broker: Broker, tmp_path) -> None:
    rng = random.Random(SEED)
    topic = broker.create_topic("drill-ticks")
    settings = [
        f"kafka.bootstrap_servers={broker.address}",
        f"kafka.topic={topic}",
        f"kafka.max_offsets_per_trigger={BATCH_RECORDS}",
        "stream.trigger_interval=1 second",
        "spark.driver_memory=1g",
    ]
    config = make_config(*settings)
    checkpoint = Path(config.checkpoint_path())
    job = Job(
        [f"storage.root={config.storage.root}", f"storage.checkpoint_root={config.storage.checkpoint_root}", *settings],
        tmp_path / "job.log",
    )
    summary_file = tmp_path / "simulator.json"
    feed = [
        sys.executable,
        "-m",
        "simulator",
        "run",
        f"--bootstrap-servers={broker.address}",
        f"--topic={topic}",
        f"--count={TICKS}",
        "--speed=max",
        f"--seed={SEED}",
        "--quiet",
        f"--summary-json={summary_file}",
        "--duplicates=0.01",
        "--out-of-order=0.02",
        "--too-late=0.002",
        "--malformed=0.002",
    ]
    started = time.monotonic()
    simulator = subprocess.Popen(feed, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    kills_mid_batch = 0
    try:
        for _ in range(KILLS):
            job.start()
            seen = _batch_files(checkpoint / "offsets")
            if rng.random() < 0.2:
                time.sleep(rng.uniform(1, 30))  # anywhere, start-up included
            else:
                # Inside the run's first or second micro-batch, at a random point of it.
                deadline = time.monotonic() + 180
                while _batch_files(checkpoint / "offsets") == seen and time.monotonic() < deadline and job.alive():
                    time.sleep(0.1)
                time.sleep(rng.uniform(0, 8))
            assert job.alive(), f"the job exited by itself:\n{job.text()[-3000:]}"
            job.kill()
            offsets, commits = _batch_files(checkpoint / "offsets"), _batch_files(checkpoint / "commits")
            kills_mid_batch += bool(offsets - commits)
        assert simulator.wait(timeout=1800) == 0, simulator.stderr.read().decode()[-2000:] if simulator.stderr else ""
        total = broker.end_offsets(topic)
        read_before_final = job.records_done()
        job.start("--once")
        assert job.wait(timeout=3600) == 0, job.text()[-3000:]
    finally:
        job.ensure_stopped()
        if simulator.poll() is None:
            simulator.kill()
            simulator.wait(timeout=30)
    elapsed = time.monotonic() - started
    produced = json.loads(summary_file.read_text())

    counts = assert_exactly_once(spark, config, total)
    reasons = Counter(
        row.reason
        for row in spark.read.format("delta").load(config.table_path("ticks_quarantine")).select("reason").collect()
    )
    # Exactly what the simulator says it sent: its clean ticks, its identical re-sends, its rejects by reason.
    expected = produced["expected"]
    assert (counts["ticks"], counts["duplicates"]) == (expected["ticks"], expected["duplicates"]), (counts, expected)
    assert reasons == Counter({k: n for k, n in expected["quarantined_by_reason"].items() if n}), reasons
    assert counts["duplicates"] > 0 and reasons["too_late"] > 0 and len(reasons) > 2, (counts, reasons)

    # One uninterrupted run over the same topic stores the same ticks, quarantine and signals.
    reference = make_config(
        *settings,
        f"storage.root={tmp_path / 'reference'}",
        f"storage.checkpoint_root={tmp_path / 'reference-cp'}",
        "kafka.max_offsets_per_trigger=1000000",  # other splits into micro-batches, same outcome
    )
    run(spark, reference, once=True, timeout_seconds=3600)

    def table(cfg: AppConfig, name: str, *columns: str) -> DataFrame:
        return spark.read.format("delta").load(cfg.table_path(name)).select(*columns)

    tick_columns = ("symbol", "event_time", "close", "volume", "topic", "partition", "offset")
    _same_rows(table(config, "ticks", *tick_columns), table(reference, "ticks", *tick_columns), "ticks")
    quarantine_columns = ("reason", "topic", "partition", "offset")
    _same_rows(
        table(config, "ticks_quarantine", *quarantine_columns),
        table(reference, "ticks_quarantine", *quarantine_columns),
        "ticks_quarantine",
    )
    # Averages were checked against a recomputation above (within 1e-9); the labels must match exactly.
    signal_columns = ("symbol", "event_time", "close", "volume", "prev_volume", "signal", "crossover")
    _same_rows(table(config, "signals", *signal_columns), table(reference, "signals", *signal_columns), "signals")
    print(
        f"\nSIGKILL drill: {KILLS} kills ({kills_mid_batch} inside a started, uncommitted micro-batch), "
        f"{job.starts} job starts, {total} records ({TICKS} clean ticks; simulator summary {produced}), "
        f"{read_before_final} records logged before the final run, {elapsed:.0f} s until drained; "
        f"counts {counts}; quarantine {dict(reasons)}"
    )
