"""Benchmark: `simulator run` against a bare kafka-python loop sending pre-built payloads to the same broker.

    python -m bench.bench_simulator [--count 200000] [--repeat 3] [--bootstrap-servers host:port] [--quick]

Without --bootstrap-servers it starts its own broker (jobs.local_stack, free ports) and stops it at the end.
Both sides use the same producer settings (ProducerSettings: acks=all, idempotence, linger, batch size) and
fresh topics with the same partition count; each side's time runs from the first send to the end of the flush.
Prints messages/s of both (best of --repeat, alternating) and the ratio; the target is >= 0.8.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

from kafka import KafkaProducer

from jobs.devstack.services import ServiceError, free_port, start_kafka, stop_process
from jobs.pipeline.config import ConfigError, add_config_arguments, config_from_args, resolve_local_path
from simulator.cli import execute, parse_args
from simulator.engine import MemorySink
from simulator.producer import ProducerError, ProducerSettings, ensure_topic

TARGET_RATIO = 0.8


def simulator_args(count: int, bootstrap: str, topic: str, config_args: list[str]) -> list[str]:
    return [
        "run",
        "--count",
        str(count),
        "--seed",
        "1",
        "--speed",
        "max",
        "--quiet",
        "--bootstrap-servers",
        bootstrap,
        "--topic",
        topic,
        *config_args,
    ]


def prebuilt_payloads(count: int, config_args: list[str]) -> list[tuple[bytes, bytes]]:
    """The very records the simulator sends, built up front so the bare loop only sends."""
    args, config = parse_args(simulator_args(count, "unused:0", "unused", config_args))
    sink = MemorySink()
    execute(args, config, sink=sink)
    return sink.records


def bare_loop(settings: ProducerSettings, payloads: list[tuple[bytes, bytes]]) -> float:
    ensure_topic(settings)
    producer = KafkaProducer(**settings.producer_options())
    try:
        send, topic = producer.send, settings.topic
        started = time.perf_counter()
        for key, value in payloads:
            send(topic, value=value, key=key)
        producer.flush(timeout=settings.delivery_timeout_ms / 1000 + 5)
        return len(payloads) / (time.perf_counter() - started)
    finally:
        producer.close(timeout=5)


def simulator_run(count: int, bootstrap: str, topic: str, config_args: list[str]) -> float:
    args, config = parse_args(simulator_args(count, bootstrap, topic, config_args))
    result = execute(args, config)
    if result["failed"] or result["sent"] != count:
        raise ProducerError(f"simulator run delivered {result['sent']} of {count} ({result['failed']} failed)")
    return result["sent"] / result["elapsed_seconds"]


def measure(count: int, repeat: int, bootstrap: str, config_args: list[str]) -> tuple[float, float]:
    args, config = parse_args(simulator_args(count, bootstrap, "unused", config_args))
    payloads = prebuilt_payloads(count, config_args)
    bare_rates, sim_rates = [], []
    for round_index in range(repeat):
        suffix = f"{round_index}-{uuid.uuid4().hex[:8]}"
        settings = ProducerSettings.from_config(config, bootstrap, f"bench-bare-{suffix}")
        bare_rates.append(bare_loop(settings, payloads))
        sim_rates.append(simulator_run(count, bootstrap, f"bench-sim-{suffix}", config_args))
        print(
            f"  round {round_index + 1}: bare {bare_rates[-1]:,.0f} msg/s, simulator {sim_rates[-1]:,.0f} msg/s",
            flush=True,
        )
    return max(bare_rates), max(sim_rates)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_simulator", description=__doc__.split("\n\n")[0])
    add_config_arguments(parser)
    parser.add_argument("--count", type=int, default=200_000, help="messages per measurement (default 200000)")
    parser.add_argument("--repeat", type=int, default=3, help="alternating rounds; the best of each is kept")
    parser.add_argument("--bootstrap-servers", help="use this broker instead of starting one")
    parser.add_argument("--quick", action="store_true", help="smoke run: 20000 messages, one round")
    args = parser.parse_args(argv)
    if args.quick:
        args.count, args.repeat = 20_000, 1
    config_args = ["--config", args.config, *(f"--set={item}" for item in args.overrides)]
    handle = None
    state_dir: Path | None = None
    try:
        config = config_from_args(args)
        bootstrap = args.bootstrap_servers
        if bootstrap is None:
            state_dir = Path(tempfile.mkdtemp(prefix="bench-kafka-"))
            print(f"starting a Kafka broker (logs in {state_dir}) ...", flush=True)
            handle = start_kafka(
                free_port(),
                free_port(),
                state_dir,
                resolve_local_path(config.services.kafka_jars_dir),
                config.services.start_timeout_seconds,
            )
            bootstrap = handle.address
        print(
            f"broker {bootstrap}, {args.count:,} messages per run, {args.repeat} rounds, "
            f"linger_ms={config.simulator.linger_ms}, batch_size={config.simulator.batch_size}, "
            f"compression={config.simulator.compression_type}",
            flush=True,
        )
        bare, simulator = measure(args.count, args.repeat, bootstrap, config_args)
    except (ConfigError, ServiceError, ProducerError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        if handle is not None:
            stop_process(handle.pid)
        if state_dir is not None:
            shutil.rmtree(state_dir, ignore_errors=True)
    ratio = simulator / bare
    print(f"bare kafka-python loop : {bare:,.0f} msg/s")
    print(f"simulator run          : {simulator:,.0f} msg/s")
    print(f"ratio                  : {ratio:.2f} (target >= {TARGET_RATIO})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
