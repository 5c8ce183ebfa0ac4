"""Drill: the Kafka broker is killed mid-stream and started again about a minute later (same ports, same log
folder). The job rides the outage out, keeps running and catches up: nothing lost or doubled, signals equal a
recomputation. DRILL_OUTAGE_SECONDS sets the outage (default 60)."""

from __future__ import annotations

import os
import time

import pytest

from tests.drills.harness import (
    Broker,
    Job,
    assert_exactly_once,
    clean_ticks,
    committed_batches,
    expected_ticks,
    stored_ticks,
    wait_until,
)

# A minute-long outage makes this a long drill: `make drill`, not `make test`.
pytestmark = [pytest.mark.integration, pytest.mark.drill, pytest.mark.timeout(1800)]
OUTAGE_SECONDS = float(os.environ.get("DRILL_OUTAGE_SECONDS", "60"))


def test_the_job_rides_out_a_killed_broker_and_catches_up_exactly(spark, make_config, broker: Broker, tmp_path) -> None:
    topic = broker.create_topic("drill-ticks")
    settings = [
        f"kafka.bootstrap_servers={broker.address}",
        f"kafka.topic={topic}",
        "kafka.max_offsets_per_trigger=100",
        "stream.trigger_interval=1 second",
        "spark.driver_memory=1g",
    ]
    config = make_config(*settings)
    job = Job(
        [f"storage.root={config.storage.root}", f"storage.checkpoint_root={config.storage.checkpoint_root}", *settings],
        tmp_path / "job.log",
    )
    before, during, after = clean_ticks(0, 30), clean_ticks(30, 30), clean_ticks(60, 30)
    broker.produce(topic, before)
    job.start()
    try:
        wait_until(lambda: len(committed_batches(config)) >= 2, 600, "two committed micro-batches", job)
        broker.produce(topic, during)  # the job is still behind when the broker dies
        read_when_killed = job.records_done()
        broker.kill()
        down_at = time.monotonic()
        time.sleep(OUTAGE_SECONDS)
        assert job.alive(), f"the job stopped during the outage:\n{job.text()[-3000:]}"
        broker.start()
        outage = time.monotonic() - down_at
        broker.produce(topic, after)
        total = len(before) + len(during) + len(after)
        assert broker.end_offsets(topic) == total, "the restarted broker lost records"
        caught_up = job.wait_for_records(total, timeout=900)
        assert caught_up is not None, f"the job did not catch up (exits {job.exits}):\n{job.text()[-3000:]}"
        assert job.alive()
        assert job.stop() == 0, job.text()[-3000:]
    finally:
        job.ensure_stopped()

    assert read_when_killed < total
    assert stored_ticks(spark, config) == expected_ticks(before + during + after)
    counts = assert_exactly_once(spark, config, total)
    assert counts["ticks_quarantine"] == 0
    print(
        f"\nbroker drill: outage {outage:.1f} s, caught up {caught_up:.1f} s after the broker was back, "
        f"{total} records ({read_when_killed} read before the kill), one job run, counts {counts}"
    )
