"""Benchmark: drain a topic of simulator ticks with `--once`, the job against the stateless stream.

    python -m bench.bench_drain [--ticks 200000] [--quick]

Starts its own Kafka broker on free ports, fills one topic with --ticks simulator ticks (120 symbols, seed 1,
as fast as possible; not timed), then drains it twice, one after the other, each with its own tables and
checkpoint: `python -m jobs.stream_signals --once` and `python -m bench.stateless_stream --once`
(Kafka -> from_json -> Delta append on the job's Spark session settings). Each time is the wall time of the
whole process, Spark start included, and each side must have written every tick. Also reports the
first-batch cost of the job's fresh run (pipeline_metrics batch 0 duration; with --once and no
kafka.max_offsets_per_trigger the whole topic is that one batch). Target: stateless_time / job_time >= 0.6.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from bench.common import (
    HANDLED_ERRORS,
    STATELESS_TABLE,
    BenchError,
    Child,
    RunLayout,
    add_common_arguments,
    config_args,
    create_topic,
    delta_row_count,
    feed,
    job_batches,
    kafka_broker,
    ratio,
    record_results,
    running,
    simulator_command,
    start_job,
    start_stateless,
    stop_on_signals,
    verdict,
    workspace,
)
from jobs.pipeline.config import load_config
from simulator.producer import ProducerError

TARGET_RATIO = 0.6
TOPIC = "bench-drain"


def timed_drain(child: Child, table: Path, expected: int, timeout: float) -> float:
    """Seconds from the process start to its exit; it must have written `expected` rows to `table`."""
    with running(child):
        code = child.wait(timeout)
        elapsed = time.monotonic() - child.started
    if code != 0:
        raise BenchError(f"{child.name} exited with code {code}; see {child.log_file}:\n{child.tail()}")
    written = delta_row_count(table)
    if written != expected:
        raise BenchError(f"{child.name} wrote {written:,} rows to {table.name}, expected {expected:,}")
    return elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.bench_drain",
        description=__doc__.split("\n\n")[0],
        epilog="Figures are printed and appended to bench/RESULTS.md. Run on a quiet machine.",
    )
    add_common_arguments(parser)
    parser.add_argument("--ticks", type=int, default=200_000, help="ticks in the topic (default 200000)")
    parser.add_argument("--symbols", type=int, default=120, help="symbols of the feed (default 120)")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds allowed per drain (default 3600)")
    args = parser.parse_args(argv)
    stop_on_signals()
    if args.quick:
        args.ticks = 5_000
    try:
        base_args = config_args(args)
        config = load_config(args.config, args.overrides)
        with workspace("drain", args.keep) as folder, kafka_broker(folder, config) as bootstrap:
            job = RunLayout(folder / "job", TOPIC, bootstrap, config.stream.trigger_interval)
            base = RunLayout(folder / "stateless", TOPIC, bootstrap, config.stream.trigger_interval)
            create_topic(config, bootstrap, TOPIC)
            print(f"broker {bootstrap}; filling {TOPIC} with {args.ticks:,} ticks ...", flush=True)
            summary = feed(
                simulator_command(
                    bootstrap,
                    TOPIC,
                    base_args,
                    symbols=args.symbols,
                    count=args.ticks,
                    speed="max",
                    summary=folder / "simulator.json",
                ),
                folder / "simulator.log",
                timeout=args.timeout,
            )
            if summary["sent"] != args.ticks:
                raise BenchError(f"the simulator sent {summary['sent']:,} of {args.ticks:,} ticks")
            print("draining with the job (--once) ...", flush=True)
            job_seconds = timed_drain(
                start_job(job, base_args, once=True), job.table("raw_ticks"), args.ticks, args.timeout
            )
            print(f"  job: {job_seconds:.1f} s; draining with the stateless stream (--once) ...", flush=True)
            base_seconds = timed_drain(
                start_stateless(base, base_args, once=True), base.table(STATELESS_TABLE), args.ticks, args.timeout
            )
            batches = job_batches(job)
    except (*HANDLED_ERRORS, ProducerError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1

    drain_ratio = ratio(base_seconds, job_seconds)
    first = batches.iloc[0] if len(batches) else None
    figures = [
        f"drain {args.ticks:,} ticks with --once, Spark start included; job batches {len(batches)}",
        f"drain time (s)             job {job_seconds:.1f}  stateless {base_seconds:.1f}  "
        f"ratio stateless/job {drain_ratio:.2f}  [target >= {TARGET_RATIO}: "
        f"{verdict(drain_ratio, TARGET_RATIO, at_most=False)}]",
        f"drain rate (ticks/s)       job {args.ticks / job_seconds:,.0f}  stateless {args.ticks / base_seconds:,.0f}  "
        f"ratio job/stateless {ratio(base_seconds, job_seconds):.2f}",
    ]
    if first is not None:
        figures.append(
            f"first-batch cost (fresh)   job batch {int(first['batch_id'])}: {int(first['batch_duration_ms']):,} ms "
            f"for {int(first['records_read']):,} records (pipeline_metrics.batch_duration_ms)"
        )
    record_results("bench-drain", argv if argv is not None else sys.argv[1:], figures, args.quick, not args.no_record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
