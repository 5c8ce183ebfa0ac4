"""Kafka edges of the streaming job: the source, the signals sink, and a reachability check at start."""

from __future__ import annotations

import socket
import time

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from jobs.pipeline.config import AppConfig


class KafkaUnreachable(RuntimeError):
    """The brokers or the topic cannot be reached: the message names the endpoint and the setting to fix."""


def kafka_options(config: AppConfig) -> dict[str, str]:
    """Client settings shared by the Kafka source and the signals sink."""
    options = {
        "kafka.bootstrap.servers": config.kafka.bootstrap_servers,
        "kafka.security.protocol": config.kafka.security_protocol,
        "kafka.request.timeout.ms": str(config.kafka.request_timeout_ms),
    }
    if config.kafka.sasl_mechanism:
        options["kafka.sasl.mechanism"] = config.kafka.sasl_mechanism
    options.update({f"kafka.{key}": value for key, value in config.kafka.options.items()})
    return options


def read_records(spark: SparkSession, config: AppConfig) -> DataFrame:
    """The Kafka topic as a stream of records in the shape jobs.pipeline.transforms.parse expects."""
    reader = spark.readStream.format("kafka").options(**kafka_options(config))
    reader = reader.option("subscribe", config.kafka.topic).option("startingOffsets", config.kafka.starting_offsets)
    if config.kafka.max_offsets_per_trigger:
        reader = reader.option("maxOffsetsPerTrigger", config.kafka.max_offsets_per_trigger)
    return reader.load().select(
        F.col("key").cast("string").alias("kafka_key"),
        F.col("value").cast("string").alias("value"),
        "topic",
        "partition",
        "offset",
        F.col("timestamp").alias("kafka_timestamp"),
        F.current_timestamp().alias("ingest_time"),
    )


def publish_signals(changes: DataFrame, config: AppConfig) -> None:
    """New and corrected signal rows (SIGNAL_COLUMNS, revision, is_new) to the signals topic, keyed by symbol."""
    payload = F.to_json(
        F.struct(
            *[c for c in changes.columns if c != "is_new"],
            (~F.col("is_new")).alias("is_correction"),
        )
    )
    (
        changes.select(F.col("symbol").alias("key"), payload.alias("value"))
        .write.format("kafka")
        .options(**kafka_options(config))
        .option("topic", config.kafka.signals_topic)
        .save()
    )


def _endpoints(bootstrap_servers: str) -> list[tuple[str, int]]:
    endpoints = []
    for item in bootstrap_servers.split(","):
        host, _, port = item.strip().rpartition(":")
        if not host or not port.isdigit():
            raise KafkaUnreachable(f"kafka.bootstrap_servers: {item.strip()!r} is not host:port")
        endpoints.append((host.strip("[]"), int(port)))
    return endpoints


def check_kafka(config: AppConfig) -> None:
    """Fail fast, in one line, when no broker answers or the topic is missing (instead of Spark's retries).

    Any protocol: one bootstrap server must accept a TCP connection within kafka.connect_timeout_seconds. On
    PLAINTEXT the topic's existence is checked too (other protocols need credentials the check does not hold).
    """
    timeout = config.kafka.connect_timeout_seconds
    deadline = time.monotonic() + timeout
    endpoints = _endpoints(config.kafka.bootstrap_servers)
    last_error: OSError | None = None
    while True:
        for host, port in endpoints:
            try:
                with socket.create_connection((host, port), timeout=min(5.0, timeout)):
                    break
            except OSError as error:
                last_error = error
        else:
            if time.monotonic() < deadline:
                time.sleep(0.5)
                continue
            raise KafkaUnreachable(
                f"no Kafka broker answers at {config.kafka.bootstrap_servers} (kafka.bootstrap_servers) within "
                f"{timeout:g} s (kafka.connect_timeout_seconds): {last_error}"
            )
        break
    if config.kafka.security_protocol == "PLAINTEXT" and not config.kafka.options:
        _check_topic(config, max(1.0, deadline - time.monotonic()))


def _check_topic(config: AppConfig, timeout: float) -> None:
    from kafka.admin import KafkaAdminClient
    from kafka.errors import KafkaError

    try:
        admin = KafkaAdminClient(
            bootstrap_servers=config.kafka.bootstrap_servers, request_timeout_ms=int(max(timeout, 1.0) * 1000)
        )
    except KafkaError as error:
        raise KafkaUnreachable(
            f"the Kafka broker at {config.kafka.bootstrap_servers} (kafka.bootstrap_servers) does not answer "
            f"the Kafka protocol: {error}"
        ) from None
    try:
        topics = set(admin.list_topics())
    finally:
        admin.close()
    if config.kafka.topic not in topics:
        raise KafkaUnreachable(
            f"topic {config.kafka.topic!r} (kafka.topic) does not exist on {config.kafka.bootstrap_servers}; "
            "create it (the simulator and `make demo` do) or fix the setting"
        )
