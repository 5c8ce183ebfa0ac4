"""The job starts through its default start check (broker and topic looked up on PLAINTEXT) and drains the topic.

Regression: the topic look-up once passed a KafkaConsumer option the pinned kafka-python 3.0.12 rejects, and every
PLAINTEXT start stopped with "does not answer the Kafka protocol"."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.drills.harness import REPO_ROOT, Broker, clean_ticks

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]


def test_the_job_starts_on_plaintext_without_kafka_options(broker: Broker, tmp_path) -> None:
    topic = broker.create_topic("drill-start")
    broker.produce(topic, clean_ticks(0, 2))
    command = [
        sys.executable,
        "-m",
        "jobs.stream_signals",
        "--config",
        str(REPO_ROOT / "conf" / "local.yaml"),
        f"--set=storage.root={tmp_path / 'delta'}",
        f"--set=storage.checkpoint_root={tmp_path / 'checkpoints'}",
        f"--set=kafka.bootstrap_servers={broker.address}",
        f"--set=kafka.topic={topic}",
        "--set=spark.driver_memory=1g",
        "--once",
    ]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert '"records_read": 20' in result.stdout, result.stdout[-2000:]
