"""Exactly-once across a hard kill: SIGKILL the job mid-stream, restart on the same checkpoint."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from chispa import assert_approx_df_equality
from pyspark.sql import functions as F

from jobs.pipeline.transforms.signals import SIGNAL_COLUMNS, compute_signals
from jobs.stream_signals import run
from tests.support import appended_at, batch_ids, delta_commits, json_ticks

REPO_ROOT = Path(__file__).resolve().parents[2]
# A job start, a kill, a restart: a few minutes on an idle 2-core machine, far more on a busy one.
pytestmark = pytest.mark.timeout(1800)


def _last_commit_at(table: Path) -> int:
    stamps = [
        action["commitInfo"]["timestamp"]
        for actions in delta_commits(table)
        for action in actions
        if "commitInfo" in action
    ]
    return max(stamps, default=0)


def _half_written_batch(checkpoint: Path, ticks: Path, signals: Path) -> int | None:
    """A batch that started (offsets/N), appended its ticks and merged its signals, and has not committed.

    Killing there leaves a batch whose signals are stored but which Spark will run again after the restart.
    """
    committed = batch_ids(checkpoint / "commits")
    if not committed:
        return None
    appended = appended_at(ticks)
    for batch in sorted(batch_ids(checkpoint / "offsets") - committed):
        if batch in appended and _last_commit_at(signals) > appended[batch]:
            return batch
    return None


def test_sigkill_mid_stream_then_restart_loses_and_duplicates_nothing(
    spark, make_config, kafka_broker, kafka_topic, produce, tmp_path
) -> None:
    topic = kafka_topic()
    overrides = [
        f"kafka.bootstrap_servers={kafka_broker.address}",
        f"kafka.topic={topic}",
        "kafka.max_offsets_per_trigger=50",
        "stream.trigger_interval=1 second",
    ]
    config = make_config(*overrides)
    sent = json_ticks(0, 40)
    produce(topic, sent)
    command = [
        sys.executable,
        "-m",
        "jobs.stream_signals",
        "--config",
        str(REPO_ROOT / "conf" / "local.yaml"),
        f"--set=storage.root={config.storage.root}",
        f"--set=storage.checkpoint_root={config.storage.checkpoint_root}",
        *[f"--set={item}" for item in overrides],
        "--set=spark.driver_memory=1g",
    ]
    log_file = tmp_path / "job.log"
    checkpoint = Path(config.checkpoint_path())
    ticks_table = Path(config.table_path("ticks"))
    signals_table = Path(config.table_path("signals"))
    with open(log_file, "wb") as log:
        job = subprocess.Popen(command, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    killed_in = None
    try:
        deadline = time.monotonic() + 600
        # Kill once a micro-batch has committed and a later one is half written: its ticks appended and its
        # signals merged, its state and metrics not yet, and Spark has not recorded it as committed.
        while killed_in is None and time.monotonic() < deadline and job.poll() is None:
            killed_in = _half_written_batch(checkpoint, ticks_table, signals_table)
            if killed_in is None:
                time.sleep(0.05)
        assert job.poll() is None, log_file.read_text()[-3000:]
        assert killed_in is not None, "no half-written micro-batch seen before the deadline"
    finally:
        os.killpg(job.pid, signal.SIGKILL)
        job.wait(timeout=30)
    # The kill landed inside the batch: started, its ticks appended, never committed, and the job had not
    # logged it as done.
    assert killed_in in batch_ids(checkpoint / "offsets")
    assert killed_in not in batch_ids(checkpoint / "commits")
    assert killed_in in appended_at(ticks_table)
    logged = [
        json.loads(line[line.index("{") :]) for line in log_file.read_text().splitlines() if '"event": "batch"' in line
    ]
    assert killed_in not in {entry["batch_id"] for entry in logged}
    assert max(batch_ids(checkpoint / "offsets")) * 50 < len(sent), "the topic was drained before the kill"

    more = json_ticks(40, 20)
    produce(topic, more)
    # The restart replays the half-written batch's planned offsets, then takes larger batches (fewer to run).
    restart = make_config(*overrides[:2], "kafka.max_offsets_per_trigger=250")
    run(spark, restart, once=True, timeout_seconds=900)

    expected_ticks = sorted(
        (body["symbol"], body["ts"], body["close"], body["volume"]) for body in (json.loads(v) for _, v in sent + more)
    )
    ticks = spark.read.format("delta").load(config.table_path("ticks"))
    stored = sorted(
        (row.symbol, row.event_time.strftime("%Y-%m-%dT%H:%M:%S.000Z"), row.close, row.volume)
        for row in ticks.select("symbol", "event_time", "close", "volume").collect()
    )
    assert stored == expected_ticks  # every record once, with the values that were produced
    raw = spark.read.format("delta").load(config.table_path("raw_ticks"))
    assert raw.count() == 600
    assert raw.select("partition", "offset").distinct().count() == 600
    quarantine = spark.read.format("delta").load(config.table_path("ticks_quarantine"))
    assert quarantine.count() == 0, quarantine.select("reason", "detail").limit(5).collect()
    signals = spark.read.format("delta").load(config.table_path("signals"))
    assert signals.count() == 600
    # No late ticks were sent: the retried batch's signals, already stored, must not look like corrections.
    assert [row["revision"] for row in signals.groupBy("revision").count().collect()] == [0]
    expected = compute_signals(ticks)
    assert_approx_df_equality(
        signals.select(*SIGNAL_COLUMNS), expected, precision=1e-9, ignore_row_order=True, ignore_nullable=True
    )
    metrics = spark.read.format("delta").load(config.table_path("pipeline_metrics"))
    totals = metrics.agg(
        F.sum("records_read"),
        F.sum("ticks_written"),
        F.sum("quarantined"),
        F.sum("duplicates"),
        F.sum("signals_corrected"),
        F.countDistinct("batch_id"),
        F.count("*"),
    ).first()
    assert tuple(totals[:5]) == (600, 600, 0, 0, 0)
    assert totals[5] == totals[6], "a batch's metrics were written twice"
