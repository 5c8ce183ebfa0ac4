"""Benchmark: does a micro-batch cost more when the tables hold more history? (~10k vs ~10M ticks)

    python -m bench.bench_growth [--small 10000] [--large 10000000] [--batch 1200] [--warm-batches 5] [--quick]

Starts its own Kafka broker on free ports. For each history size, in its own folder:
1. `python -m bench.history_seed` writes the history with `jobs.pipeline.history.seed_history`: --symbols
   symbols (SYM001..) with size/symbols ticks each, 1 s apart, on the 0.01 price grid, every symbol's last
   tick at the same instant, so both sizes receive byte-identical new ticks;
2. the simulator puts (1 + --warm-batches) x --batch ticks of the same symbols on a fresh topic, continuing
   1 s after the history's end (seed 2, one tick per symbol and second);
3. the job runs continuously (trigger stream.trigger_interval) on a fresh checkpoint with
   kafka.max_offsets_per_trigger = --batch, so each micro-batch reads one --batch-tick batch: batch 0 is the
   first batch of a fresh run (new JVM), the next ones are warm batches of a running job.
Batch times are pipeline_metrics.batch_duration_ms. Target: large/small <= 1.2 for the first batch and for
the median warm batch.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd

from bench.common import (
    HANDLED_ERRORS,
    BenchError,
    RunLayout,
    add_common_arguments,
    config_args,
    create_topic,
    feed,
    job_batches,
    kafka_broker,
    percentile,
    ratio,
    record_results,
    running,
    simulator_command,
    spawn,
    start_job,
    stop_on_signals,
    verdict,
    wait_until_started,
    workspace,
)
from jobs.pipeline.config import load_config
from simulator.producer import ProducerError

TARGET_RATIO = 1.2
HISTORY_END = datetime(2026, 1, 5, 3, 45, tzinfo=UTC)  # 09:15 in Asia/Kolkata, a Monday


@dataclass
class GrowthRun:
    history: int
    seed_seconds: float
    batches: pd.DataFrame

    @property
    def first_ms(self) -> float:
        return float(self.batches.iloc[0]["batch_duration_ms"]) if len(self.batches) else float("nan")

    @property
    def warm(self) -> pd.Series:
        return self.batches.iloc[1:]["batch_duration_ms"]


def seed_history(layout: RunLayout, base_args: list[str], ticks: int, symbols: int, timeout: float) -> float:
    command = [
        sys.executable,
        "-m",
        "bench.history_seed",
        *base_args,
        *(f"--set={o}" for o in layout.overrides()),
        "--ticks",
        str(ticks),
        "--symbols",
        str(symbols),
        "--end",
        HISTORY_END.isoformat().replace("+00:00", "Z"),
    ]
    child = spawn("history seeding", command, layout.logs / "seed.log")
    try:
        code = child.wait(timeout)
    finally:
        child.stop(grace=10)
    if code != 0:
        raise BenchError(f"seeding {ticks:,} ticks failed (exit {code}); see {child.log_file}:\n{child.tail()}")
    for line in reversed(child.log_file.read_text().splitlines()):
        if line.startswith('{"event": "seeded"'):
            return float(json.loads(line)["seconds"])
    raise BenchError(f"seeding printed no result; see {child.log_file}")


def run_size(folder: Path, bootstrap: str, base_args: list[str], args: argparse.Namespace, history: int) -> GrowthRun:
    config = load_config(args.config, args.overrides)
    layout = RunLayout(
        folder / f"history-{history}",
        topic=f"bench-growth-{history}",
        bootstrap=bootstrap,
        trigger=config.stream.trigger_interval,
        extra=(f"kafka.max_offsets_per_trigger={args.batch}",),
    )
    print(f"history {history:,} ticks: seeding ...", flush=True)
    seed_seconds = seed_history(layout, base_args, history, args.symbols, args.timeout)
    total = args.batch * (1 + args.warm_batches)
    create_topic(config, bootstrap, layout.topic)
    start = (HISTORY_END + timedelta(seconds=1)).isoformat().replace("+00:00", "Z")
    summary = feed(
        simulator_command(
            bootstrap,
            layout.topic,
            base_args,
            symbols=args.symbols,
            interval=1,
            count=total,
            speed="max",
            start=start,
            seed=2,
            summary=layout.logs / "simulator.json",
        ),
        layout.logs / "simulator.log",
        timeout=args.timeout,
    )
    if summary["sent"] != total:
        raise BenchError(f"the simulator sent {summary['sent']:,} of {total:,} ticks")
    print(f"  seeded in {seed_seconds:.1f} s; job reads {total:,} ticks in batches of {args.batch:,} ...", flush=True)
    child = start_job(layout, base_args)
    with running(child):
        wait_until_started(child, layout.checkpoint_root / config.stream.checkpoint_name, args.timeout)
        deadline = time.monotonic() + args.timeout
        while True:
            child.check()
            batches = job_batches(layout)
            if len(batches) and int(batches["records_read"].sum()) >= total:
                break
            if time.monotonic() > deadline:
                raise BenchError(
                    f"the job did not read {total:,} ticks within {args.timeout:.0f} s; see {child.log_file}"
                )
            time.sleep(1.0)
    return GrowthRun(history, seed_seconds, batches)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.bench_growth",
        description=__doc__.split("\n\n")[0],
        epilog="Figures are printed and appended to bench/RESULTS.md. Run on a quiet machine.",
    )
    add_common_arguments(parser)
    parser.add_argument("--small", type=int, default=10_000, help="ticks of the small history (default 10000)")
    parser.add_argument("--large", type=int, default=10_000_000, help="ticks of the large history (default 10M)")
    parser.add_argument("--symbols", type=int, default=100, help="symbols of history and batches (default 100)")
    parser.add_argument("--batch", type=int, default=1200, help="ticks per micro-batch (default 1200)")
    parser.add_argument("--warm-batches", type=int, default=5, help="warm batches after the first (default 5)")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds allowed per step (default 3600)")
    args = parser.parse_args(argv)
    stop_on_signals()
    if args.quick:
        args.small, args.large, args.warm_batches = 10_000, 100_000, 2
    try:
        base_args = config_args(args)
        config = load_config(args.config, args.overrides)
        with workspace("growth", args.keep) as folder, kafka_broker(folder, config) as bootstrap:
            small = run_size(folder, bootstrap, base_args, args, args.small)
            large = run_size(folder, bootstrap, base_args, args, args.large)
    except (*HANDLED_ERRORS, ProducerError, subprocess.SubprocessError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1

    first_ratio = ratio(large.first_ms, small.first_ms)
    warm_small, warm_large = percentile(small.warm, 50), percentile(large.warm, 50)
    warm_ratio = ratio(warm_large, warm_small)
    figures = [
        f"history small {small.history:,} ticks (seeded in {small.seed_seconds:.1f} s), large {large.history:,} "
        f"(seeded in {large.seed_seconds:.1f} s); {args.symbols} symbols; batches of {args.batch:,} ticks; "
        f"batch records small {small.batches['records_read'].tolist()}, large {large.batches['records_read'].tolist()}",
        f"first batch, fresh run (ms)  small {small.first_ms:,.0f}  large {large.first_ms:,.0f}  "
        f"ratio {first_ratio:.2f}  [target <= {TARGET_RATIO}: {verdict(first_ratio, TARGET_RATIO)}]",
        f"warm batch p50 (ms)          small {warm_small:,.0f}  large {warm_large:,.0f}  ratio {warm_ratio:.2f}  "
        f"[target <= {TARGET_RATIO}: {verdict(warm_ratio, TARGET_RATIO)}]",
        f"warm batch max (ms)          small {small.warm.max():,.0f}  large {large.warm.max():,.0f}  "
        f"ratio {ratio(float(large.warm.max()), float(small.warm.max())):.2f}  "
        f"(warm batches: small {len(small.warm)}, large {len(large.warm)})",
    ]
    record_results("bench-growth", argv if argv is not None else sys.argv[1:], figures, args.quick, not args.no_record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
