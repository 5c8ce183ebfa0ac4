"""Drill: S3 (the moto server) becomes unreachable while the job writes its batches, then comes back. Tables and
checkpoint live on S3, reached through a relay that is cut (connections reset, then refused) from the moment the
job has planned a micro-batch (its offsets written), for at least DRILL_S3_OUTAGE_SECONDS (default 45) and until
the job has stopped.

What the job does today: S3A gives up after its few retries (fs.s3a.attempts.maximum=3 against an emulator), the
micro-batch fails and the job stops with a non-zero code; restarted once S3 is back, it continues from its
checkpoint with nothing lost or doubled and signals equal to a recomputation. The stop is not yet one clear line:
see test_an_s3_outage_stops_the_job_with_one_clear_error_line."""

from __future__ import annotations

import os
import time
import uuid

import pytest

from jobs.aws.clients import aws_client
from jobs.pipeline.config import AppConfig
from tests.drills.harness import (
    Broker,
    Job,
    Relay,
    assert_exactly_once,
    clean_ticks,
    expected_ticks,
    stored_ticks,
    wait_until,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1800)]
OUTAGE_SECONDS = float(os.environ.get("DRILL_S3_OUTAGE_SECONDS", "45"))


def _checkpoint_objects(config: AppConfig, bucket: str, folder: str) -> list[str]:
    """The checkpoint's files in `folder` (offsets, commits), read from moto directly (not through the relay)."""
    prefix = config.checkpoint_path().split(f"{bucket}/", 1)[1] + f"/{folder}/"
    listing = aws_client(config, "s3").list_objects_v2(Bucket=bucket, Prefix=prefix)
    return [item["Key"] for item in listing.get("Contents", []) if item["Key"].rsplit("/", 1)[-1].isdigit()]


@pytest.mark.drill  # minutes of outage and catch-up: `make drill`, not `make test`
def test_s3_unreachable_during_a_batch_then_back(spark, make_config, moto_server, broker: Broker, tmp_path) -> None:
    topic = broker.create_topic("drill-ticks")
    bucket = f"drill-{uuid.uuid4().hex[:10]}"
    config = make_config(
        f"storage.root=s3a://{bucket}/delta",
        f"storage.checkpoint_root=s3a://{bucket}/checkpoints",
        f"kafka.bootstrap_servers={broker.address}",
        f"kafka.topic={topic}",
    )
    aws_client(config, "s3").create_bucket(Bucket=bucket)
    relay = Relay(moto_server.port)
    relay.restore()
    job = Job(
        [
            f"storage.root={config.storage.root}",
            f"storage.checkpoint_root={config.storage.checkpoint_root}",
            f"s3.endpoint=http://127.0.0.1:{relay.port}",
            "s3.path_style_access=true",
            "s3.use_test_credentials=true",
            f"kafka.bootstrap_servers={broker.address}",
            f"kafka.topic={topic}",
            "kafka.max_offsets_per_trigger=100",
            "stream.trigger_interval=1 second",
            "spark.driver_memory=1g",
        ],
        tmp_path / "job.log",
    )
    before, during, after = clean_ticks(0, 30), clean_ticks(30, 30), clean_ticks(60, 30)
    total = len(before) + len(during) + len(after)
    broker.produce(topic, before)
    job.start()
    try:
        wait_until(lambda: len(job.batches()) >= 2, 600, "two logged micro-batches", job)
        # Cut S3 inside a batch: once the job has written the next batch's offsets to its checkpoint (on S3).
        planned = len(_checkpoint_objects(config, bucket, "offsets"))
        broker.produce(topic, during)
        wait_until(lambda: len(_checkpoint_objects(config, bucket, "offsets")) > planned, 600, "a new batch", job)
        batches_before = len(job.batches())
        relay.cut()
        cut_at = time.monotonic()
        # Wait for the outage to hit a running batch, then keep S3 away for the rest of the outage.
        exited_after = None
        # At least the outage, and until the job has stopped (up to 180 s: a busy machine is slow to fail).
        while time.monotonic() - cut_at < OUTAGE_SECONDS or (job.alive() and time.monotonic() - cut_at < 180):
            if exited_after is None and not job.alive():
                exited_after = time.monotonic() - cut_at
            time.sleep(0.5)
        relay.restore()
        outage = time.monotonic() - cut_at
        if exited_after is None and not job.alive():
            exited_after = outage
        stopped = exited_after is not None
        broker.produce(topic, after)
        assert stopped, f"the job kept running through a {outage:.0f} s S3 outage (expected: it stops)"
        code = job.wait(timeout=60)
        assert code != 0, job.text()[-3000:]
        job.start()
        caught_up = job.wait_for_records(total, timeout=900)
        assert caught_up is not None, f"the job did not catch up (exits {job.exits}):\n{job.text()[-3000:]}"
        assert job.stop() == 0, job.text()[-3000:]
    finally:
        job.ensure_stopped()
        relay.cut()

    assert stored_ticks(spark, config) == expected_ticks(before + during + after)
    counts = assert_exactly_once(spark, config, total)
    assert counts["ticks_quarantine"] == 0
    assert exited_after is not None
    print(
        f"\nS3 drill: outage {outage:.1f} s ({batches_before} batches logged before the cut); the job stopped "
        f"{exited_after:.1f} s into the outage (exit {job.exits[0]}) and was restarted after it; caught up "
        f"{caught_up:.1f} s after its restart; {total} records, counts {counts}"
    )


def test_an_s3_outage_stops_the_job_with_one_clear_error_line(
    make_config, moto_server, broker: Broker, tmp_path
) -> None:
    topic = broker.create_topic("drill-ticks")
    bucket = f"drill-{uuid.uuid4().hex[:10]}"
    config = make_config(f"storage.root=s3a://{bucket}/delta")
    aws_client(config, "s3").create_bucket(Bucket=bucket)
    relay = Relay(moto_server.port)
    relay.restore()
    job = Job(
        [
            f"storage.root=s3a://{bucket}/delta",
            f"storage.checkpoint_root=s3a://{bucket}/checkpoints",
            f"s3.endpoint=http://127.0.0.1:{relay.port}",
            "s3.path_style_access=true",
            "s3.use_test_credentials=true",
            f"kafka.bootstrap_servers={broker.address}",
            f"kafka.topic={topic}",
            "stream.trigger_interval=1 second",
            "spark.driver_memory=1g",
        ],
        tmp_path / "job.log",
    )
    broker.produce(topic, clean_ticks(0, 5))
    job.start()
    try:
        wait_until(lambda: len(job.batches()) >= 1, 600, "a logged micro-batch", job)
        relay.cut()
        broker.produce(topic, clean_ticks(5, 5))
        code = job.wait(timeout=300)
    finally:
        job.ensure_stopped()
        relay.cut()
    lines = [line for line in job.text().splitlines() if line.strip()]
    assert code == 1
    assert lines[-1].startswith("error: ") and "S3 storage: storage.root=s3a://" in lines[-1], lines[-1]
    assert f"s3.endpoint=http://127.0.0.1:{relay.port}" in lines[-1], lines[-1]
    assert "Traceback (most recent call last)" not in job.text()
