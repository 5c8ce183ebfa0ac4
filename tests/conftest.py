"""Shared fixtures: one SparkSession per session (no services), and the services integration tests ask for.

Unit tests use `spark` alone and start nothing else. Integration tests get a real Kafka broker (`kafka_broker`)
and a moto server (`moto_server`, through `base_config` / `make_config`), each started once per session on a free
port, only when a test asks for it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from pyspark.sql import SparkSession

from jobs.devstack.services import ServiceHandle, free_port, start_kafka, start_moto, stop_process
from jobs.pipeline.config import AppConfig, load_config, with_overrides
from jobs.pipeline.spark_session import build_spark

WARM_UP_ENV = "MARKET_SIGNALS_STREAM__WARM_UP"

REPO_ROOT = Path(__file__).resolve().parent.parent
REFERENCE_CSV = REPO_ROOT.parent / "shared" / "reference" / "athena_signal_output.csv"


# Fixtures that start a service (or need one): never in a unit test.
SERVICE_FIXTURES = frozenset({"kafka_broker", "moto_server", "base_config", "make_config", "kafka_topic", "produce"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark tests by folder (tests/unit -> unit, ...); refuse a unit test that would start a service."""
    offenders = []
    for item in items:
        parts = Path(str(item.fspath)).parts
        for marker in ("unit", "integration", "e2e"):
            if marker in parts:
                item.add_marker(getattr(pytest.mark, marker))
        used = SERVICE_FIXTURES & set(getattr(item, "fixturenames", ()))
        if "unit" in parts and used:
            offenders.append(f"{item.nodeid} uses {sorted(used)}")
    if offenders:
        raise pytest.UsageError("unit tests need no services; move these to tests/integration: " + "; ".join(offenders))


@pytest.fixture(scope="session", autouse=True)
def _no_warm_up() -> Iterator[None]:
    """Continuous runs of the job skip the warm-up (~20-30 s each on 2 cores), in this process and in every job it
    starts; tests/unit/test_warm_up.py runs it."""
    previous = os.environ.get(WARM_UP_ENV)
    os.environ[WARM_UP_ENV] = "false"
    yield
    if previous is None:
        os.environ.pop(WARM_UP_ENV, None)
    else:
        os.environ[WARM_UP_ENV] = previous


@pytest.fixture(scope="session")
def services_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("services")


@pytest.fixture(scope="session")
def kafka_broker(services_dir: Path) -> Iterator[ServiceHandle]:
    handle = start_kafka(free_port(), free_port(), services_dir, REPO_ROOT / ".jars" / "kafka-broker", timeout=90)
    try:
        yield handle
    finally:
        stop_process(handle.pid)


@pytest.fixture(scope="session")
def moto_port() -> int:
    """The port moto listens on once an integration test starts it; reserved up front so that the one
    SparkSession can point S3A at it without starting moto for unit tests."""
    return free_port()


@pytest.fixture(scope="session")
def moto_server(services_dir: Path, moto_port: int) -> Iterator[ServiceHandle]:
    handle = start_moto(moto_port, services_dir)
    try:
        yield handle
    finally:
        stop_process(handle.pid)


@pytest.fixture(scope="session")
def local_config(tmp_path_factory: pytest.TempPathFactory, moto_port: int) -> AppConfig:
    """The local profile pointed at session-private folders; S3 points at `moto_port`, where nothing runs until
    an integration test asks for `moto_server`. Starts no service."""
    root = tmp_path_factory.mktemp("lake")
    return load_config(
        REPO_ROOT / "conf" / "local.yaml",
        [
            f"storage.root={root / 'delta'}",
            f"storage.checkpoint_root={root / 'checkpoints'}",
            f"s3.endpoint=http://127.0.0.1:{moto_port}",
            "s3.path_style_access=true",
            "s3.use_test_credentials=true",
            "spark.shuffle_partitions=2",
            "spark.driver_memory=3g",
        ],
        environ={},
    )


@pytest.fixture(scope="session")
def base_config(local_config: AppConfig, moto_server: ServiceHandle) -> AppConfig:
    """`local_config` with its moto server running (S3, Glue, Athena).

    Kafka is not part of it so that tests without a broker do not start one; see `make_config`.
    """
    assert local_config.s3.endpoint == f"http://127.0.0.1:{moto_server.port}"
    return local_config


@pytest.fixture(scope="session")
def spark(local_config: AppConfig) -> Iterator[SparkSession]:
    """One SparkSession for the whole session (Delta, the resolved jars, S3A towards `moto_port`)."""
    session = build_spark(local_config)
    try:
        yield session
    finally:
        session.stop()


@pytest.fixture
def make_config(base_config: AppConfig, tmp_path: Path):
    """A per-test config: private storage and checkpoint folders, plus any overrides."""

    def factory(*overrides: str) -> AppConfig:
        return with_overrides(
            base_config,
            [f"storage.root={tmp_path / 'delta'}", f"storage.checkpoint_root={tmp_path / 'checkpoints'}", *overrides],
        )

    return factory


@pytest.fixture(scope="session")
def reference_csv() -> Path:
    if not REFERENCE_CSV.is_file():
        pytest.skip(f"reference Athena output not present at {REFERENCE_CSV} (lives outside the repo)")
    return REFERENCE_CSV


@pytest.fixture
def kafka_topic(kafka_broker: ServiceHandle, request: pytest.FixtureRequest):
    """A factory of fresh topics on the session broker, named after the test."""
    from kafka.admin import KafkaAdminClient, NewTopic

    created: list[str] = []

    def factory(partitions: int = 3) -> str:
        name = f"{request.node.name[:80]}-{len(created)}".replace("[", "-").replace("]", "")
        admin = KafkaAdminClient(bootstrap_servers=kafka_broker.address)
        try:
            admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
        finally:
            admin.close()
        created.append(name)
        return name

    return factory


@pytest.fixture
def produce(kafka_broker: ServiceHandle):
    """Send (key, value) pairs to a topic and wait for every acknowledgement."""
    from kafka import KafkaProducer

    def send(topic: str, records: list[tuple[str | None, str | bytes]]) -> None:
        producer = KafkaProducer(bootstrap_servers=kafka_broker.address, acks="all", linger_ms=5)
        try:
            futures = [
                producer.send(
                    topic,
                    key=key.encode() if key is not None else None,
                    value=value.encode() if isinstance(value, str) else value,
                )
                for key, value in records
            ]
            producer.flush(timeout=60)
            for future in futures:
                future.get(timeout=30)
        finally:
            producer.close()

    return send
