"""The Kafka edge: topic creation and a producer that counts every delivery outcome, with bounded waits."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from kafka import KafkaProducer
from kafka.admin import KafkaAdminClient
from kafka.errors import KafkaError, KafkaTimeoutError, TopicAlreadyExistsError

from jobs.pipeline.config import AppConfig

MAX_ERROR_SAMPLES = 5


class ProducerError(RuntimeError):
    """Kafka cannot be used (unreachable broker, topic cannot be created, ...); the message says why."""


@dataclass(frozen=True)
class ProducerSettings:
    bootstrap_servers: str
    topic: str
    partitions: int = 3
    replication_factor: int = 1
    linger_ms: int = 5
    batch_size: int = 16384
    compression_type: str | None = None
    delivery_timeout_ms: int = 30000
    connect_timeout_seconds: float = 10.0
    request_timeout_ms: int = 15000
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None

    @classmethod
    def from_config(
        cls, config: AppConfig, bootstrap_servers: str | None = None, topic: str | None = None
    ) -> ProducerSettings:
        kafka, sim = config.kafka, config.simulator
        return cls(
            bootstrap_servers=bootstrap_servers or kafka.bootstrap_servers,
            topic=topic or kafka.topic,
            partitions=kafka.topic_partitions,
            replication_factor=kafka.replication_factor,
            linger_ms=sim.linger_ms,
            batch_size=sim.batch_size,
            compression_type=sim.compression_type,
            delivery_timeout_ms=sim.delivery_timeout_ms,
            connect_timeout_seconds=sim.connect_timeout_seconds,
            request_timeout_ms=kafka.request_timeout_ms,
            security_protocol=kafka.security_protocol,
            sasl_mechanism=kafka.sasl_mechanism,
        )

    @property
    def connect_timeout_ms(self) -> int:
        return max(1000, int(self.connect_timeout_seconds * 1000))

    def client_options(self) -> dict[str, object]:
        options: dict[str, object] = {
            "bootstrap_servers": self.bootstrap_servers.split(","),
            "bootstrap_timeout_ms": self.connect_timeout_ms,
            "security_protocol": self.security_protocol,
        }
        if self.sasl_mechanism:
            options["sasl_mechanism"] = self.sasl_mechanism
        return options

    def producer_options(self) -> dict[str, object]:
        # Kafka requires delivery.timeout >= linger + request timeout.
        request_timeout = max(1000, min(self.request_timeout_ms, self.delivery_timeout_ms - self.linger_ms))
        return {
            **self.client_options(),
            # Idempotence is the client's default; left unset so it is switched off, not fatal, on brokers < 0.11.
            "acks": "all",
            "linger_ms": self.linger_ms,
            "batch_size": self.batch_size,
            "compression_type": self.compression_type,
            "delivery_timeout_ms": self.delivery_timeout_ms,
            "request_timeout_ms": request_timeout,
            # A send blocks at most this long for metadata, so a vanished broker cannot hang the run.
            "max_block_ms": self.connect_timeout_ms,
        }


def _unreachable(settings: ProducerSettings, exc: Exception) -> ProducerError:
    return ProducerError(
        f"cannot reach Kafka at {settings.bootstrap_servers} within {settings.connect_timeout_seconds:g} s "
        f"({type(exc).__name__}: {exc}); is the broker running (`make up`)? "
        "Set --bootstrap-servers or kafka.bootstrap_servers"
    )


def ensure_topic(settings: ProducerSettings) -> bool:
    """Create the topic when absent. Returns True if it was created."""
    try:
        admin = KafkaAdminClient(**settings.client_options(), request_timeout_ms=settings.connect_timeout_ms)
    except (KafkaError, OSError, ValueError) as exc:
        raise _unreachable(settings, exc) from None
    try:
        if settings.topic in admin.list_topics():
            return False
        admin.create_topics(
            {
                settings.topic: {
                    "num_partitions": settings.partitions,
                    "replication_factor": settings.replication_factor,
                }
            },
            timeout_ms=settings.connect_timeout_ms,
            wait_for_metadata=True,
        )
        return True
    except TopicAlreadyExistsError:
        return False
    except KafkaTimeoutError as exc:
        raise _unreachable(settings, exc) from None
    except KafkaError as exc:
        raise ProducerError(
            f"cannot create topic {settings.topic!r} ({settings.partitions} partitions, "
            f"replication {settings.replication_factor}): {type(exc).__name__}: {exc}"
        ) from None
    finally:
        admin.close()


class TickProducer:
    """Sends (key, value) records; keeps exact sent / failed / pending counts from the delivery futures."""

    def __init__(self, settings: ProducerSettings) -> None:
        self.settings = settings
        try:
            self._producer = KafkaProducer(**settings.producer_options())
        except (KafkaError, OSError) as exc:
            raise _unreachable(settings, exc) from None
        except ValueError as exc:
            raise ProducerError(f"invalid producer settings: {exc}") from None
        self.idempotent = bool(self._producer.config.get("enable_idempotence"))
        self.attempted = 0
        self.sent = 0
        self.failed = 0
        self.errors: list[str] = []
        self._pending: deque = deque()

    def send_many(self, records: Sequence[tuple[bytes, bytes]]) -> None:
        send, topic, pending = self._producer.send, self.settings.topic, self._pending.append
        for index, (key, value) in enumerate(records):
            try:
                pending(send(topic, value=value, key=key))
            except KafkaTimeoutError as exc:
                self.attempted += index + 1
                self.failed += 1
                raise ProducerError(
                    f"Kafka stopped accepting records ({exc}); "
                    f"is the broker at {self.settings.bootstrap_servers} still up?"
                ) from None
            except KafkaError as exc:
                self._record_error(exc)
                self.failed += 1
        self.attempted += len(records)
        self._collect()

    def _record_error(self, exc: BaseException | None) -> None:
        if len(self.errors) < MAX_ERROR_SAMPLES:
            self.errors.append(f"{type(exc).__name__}: {exc}")

    def _collect(self) -> None:
        """Count the finished futures at the front (they complete roughly in send order)."""
        pending = self._pending
        while pending and pending[0].is_done:
            future = pending.popleft()
            if future.exception is None:
                self.sent += 1
            else:
                self.failed += 1
                self._record_error(future.exception)

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    def flush(self) -> None:
        """Wait for every record's outcome, at most the delivery timeout (plus a margin) in total."""
        timeout = self.settings.delivery_timeout_ms / 1000 + 5
        try:
            self._producer.flush(timeout=timeout)
        except KafkaTimeoutError:
            self._record_error(KafkaTimeoutError(f"no delivery report within {timeout:g} s"))
        for future in self._pending:
            if future.is_done and future.exception is None:
                self.sent += 1
            else:
                self.failed += 1
                if future.is_done:
                    self._record_error(future.exception)
        self._pending.clear()

    def close(self) -> None:
        self._producer.close(timeout=5)
