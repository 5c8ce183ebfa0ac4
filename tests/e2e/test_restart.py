"""Exactly-once across a hard kill: SIGKILL the job mid-stream, restart on the same checkpoint."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from chispa import assert_approx_df_equality
from pyspark.sql import functions as F

from jobs.pipeline.transforms.signals import SIGNAL_COLUMNS, compute_signals
from jobs.stream_signals import run

REPO_ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 11, 24, 9, 0, 0, tzinfo=UTC)


def _ticks(first_step: int, steps: int, symbols: int = 10) -> list[tuple[str, str]]:
    records = []
    for step in range(first_step, first_step + steps):
        for index in range(symbols):
            symbol = f"SYM{index + 1:03d}"
            ts = (T0 + timedelta(seconds=30 * step)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
            body = {
                "v": 1,
                "symbol": symbol,
                "ts": ts,
                "close": 50 + (step * 7 + index) % 13 + step / 100,
                "volume": 100 + (step * 11 + index) % 17,
            }
            records.append((symbol, json.dumps(body)))
    return records


def _commits(table: Path) -> int:
    return len(list((table / "_delta_log").glob("*.json"))) if table.exists() else 0


def test_sigkill_mid_stream_then_restart_loses_and_duplicates_nothing(
    spark, make_config, kafka_broker, kafka_topic, produce, tmp_path
) -> None:
    topic = kafka_topic()
    overrides = [
        f"kafka.bootstrap_servers={kafka_broker.address}",
        f"kafka.topic={topic}",
        "kafka.max_offsets_per_trigger=100",
        "stream.trigger_interval=1 second",
    ]
    config = make_config(*overrides)
    produce(topic, _ticks(0, 30))
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
    with open(log_file, "wb") as log:
        job = subprocess.Popen(command, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        ticks_table = Path(config.table_path("ticks"))
        deadline = time.monotonic() + 240
        # Kill once a few micro-batches have committed, while more remain to be read.
        while _commits(ticks_table) < 3 and time.monotonic() < deadline and job.poll() is None:
            time.sleep(0.2)
        assert job.poll() is None, log_file.read_text()[-3000:]
        assert _commits(ticks_table) >= 3, "the job committed too few batches before the deadline"
    finally:
        os.killpg(job.pid, signal.SIGKILL)
        job.wait(timeout=30)

    produce(topic, _ticks(30, 20))
    run(spark, config, once=True, timeout_seconds=900)

    ticks = spark.read.format("delta").load(config.table_path("ticks"))
    raw = spark.read.format("delta").load(config.table_path("raw_ticks"))
    assert ticks.count() == 500
    assert ticks.select("symbol", "event_time").distinct().count() == 500
    assert raw.count() == 500
    assert raw.select("partition", "offset").distinct().count() == 500
    signals = spark.read.format("delta").load(config.table_path("signals"))
    assert signals.count() == 500
    expected = compute_signals(ticks)
    assert_approx_df_equality(
        signals.select(*SIGNAL_COLUMNS), expected, precision=1e-9, ignore_row_order=True, ignore_nullable=True
    )
    metrics = spark.read.format("delta").load(config.table_path("pipeline_metrics"))
    totals = metrics.agg(
        F.sum("records_read"), F.sum("ticks_written"), F.countDistinct("batch_id"), F.count("*")
    ).first()
    assert totals[0] == 500 and totals[1] == 500
    assert totals[2] == totals[3], "a batch's metrics were written twice"
