"""Benchmark (drill): the job under a steady feed for a long time; memory and batch duration must stay flat.

    python -m bench.bench_soak [--minutes 30] [--rate 1000] [--warmup-minutes 5] [--quick]

Starts its own Kafka broker on free ports and the job (`python -m jobs.stream_signals`, trigger
stream.trigger_interval) on a fresh topic, tables and checkpoint, then feeds it with the simulator at --rate
ticks/s for --minutes (120 symbols, seed 1, paced in real time). Every --sample-seconds it samples, with psutil,
the resident memory of the job's Python driver process and of its JVM. Figures: both memories after the warm-up
and at the end of the feed [within 10%], the median batch duration (pipeline_metrics.batch_duration_ms) in each
of --periods equal periods after the warm-up [flat: last / first <= 1.1], and how many batches took longer
than the trigger interval. Choose --rate at or below the highest sustained rate bench-latency reports.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import time

import pandas as pd

from bench.common import (
    HANDLED_ERRORS,
    BenchError,
    RunLayout,
    add_common_arguments,
    config_args,
    create_topic,
    job_batches,
    kafka_broker,
    percentile,
    process_memory,
    ratio,
    record_results,
    running,
    simulator_command,
    spawn,
    start_job,
    stop_on_signals,
    trigger_seconds,
    verdict,
    wait_until_started,
    workspace,
)
from jobs.pipeline.config import load_config
from simulator.producer import ProducerError

MEMORY_TOLERANCE = 0.10
FLAT_LIMIT = 1.10
MIB = 2**20


def soak(args: argparse.Namespace) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, float]]:
    """(memory samples, job batches, facts) of one soak run."""
    base_args = config_args(args)
    config = load_config(args.config, args.overrides)
    trigger = args.trigger or config.stream.trigger_interval
    with workspace("soak", args.keep) as folder, kafka_broker(folder, config) as bootstrap:
        layout = RunLayout(folder / "job", "bench-soak", bootstrap, trigger)
        create_topic(config, bootstrap, layout.topic)
        job = start_job(layout, base_args)
        with running(job):
            startup = wait_until_started(
                job, layout.checkpoint_root / config.stream.checkpoint_name, args.start_timeout
            )
            duration = args.minutes * 60
            print(f"job query started after {startup:.1f} s; feeding {args.rate:,.0f} ticks/s for {duration:.0f} s")
            command = simulator_command(
                bootstrap,
                layout.topic,
                base_args,
                symbols=args.symbols,
                rate=args.rate,
                duration=duration,
                speed="1",
                summary=layout.logs / "simulator.json",
            )
            simulator = spawn("simulator", command, layout.logs / "simulator.log")
            with running(simulator):
                began = time.monotonic()
                samples = []
                next_report = began + 60
                while simulator.alive():
                    job.check()
                    if time.monotonic() - began > duration * 2 + 120:
                        raise BenchError(f"the simulator is still feeding after {duration * 2 + 120:.0f} s")
                    python_rss, jvm_rss = process_memory(job.pid)
                    samples.append({"seconds": time.monotonic() - began, "python": python_rss, "jvm": jvm_rss})
                    if time.monotonic() >= next_report:
                        print(
                            f"  {samples[-1]['seconds']:6.0f} s: python {python_rss / MIB:,.0f} MiB, "
                            f"JVM {jvm_rss / MIB:,.0f} MiB",
                            flush=True,
                        )
                        next_report += 60
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        simulator.process.wait(timeout=args.sample_seconds)
                simulator.check()
            python_rss, jvm_rss = process_memory(job.pid)
            samples.append({"seconds": time.monotonic() - began, "python": python_rss, "jvm": jvm_rss})
            sent = int(json.loads((layout.logs / "simulator.json").read_text())["sent"])
            deadline = time.monotonic() + args.catch_up_timeout
            while int(job_batches(layout)["records_read"].sum()) < sent:
                job.check()
                if time.monotonic() > deadline:
                    raise BenchError(
                        f"the job had not read all {sent:,} ticks {args.catch_up_timeout:.0f} s after the feed"
                    )
                time.sleep(1.0)
            started_at = pd.Timestamp.now(tz="UTC") - pd.Timedelta(seconds=time.monotonic() - began)
            batches = job_batches(layout)
    batches["seconds"] = (pd.to_datetime(batches["batch_started_at"], utc=True) - started_at).dt.total_seconds()
    return pd.DataFrame(samples), batches, {"trigger_ms": trigger_seconds(trigger) * 1000}


def memory_line(name: str, samples: pd.DataFrame, column: str, warmup_s: float) -> tuple[str, float]:
    after = samples[samples["seconds"] >= warmup_s]
    if after.empty:
        return f"{name:<26} no sample after the warm-up", float("nan")
    warm, end = float(after.iloc[0][column]), float(samples.iloc[-1][column])
    change = ratio(end, warm)
    growth = abs(change - 1)
    return (
        f"{name:<26} after warm-up {warm / MIB:,.0f}  end {end / MIB:,.0f}  ratio end/warm {change:.3f}  "
        f"[within {MEMORY_TOLERANCE:.0%}: {verdict(growth, MEMORY_TOLERANCE)}]",
        change,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.bench_soak",
        description=__doc__.split("\n\n")[0],
        epilog="Figures are printed and appended to bench/RESULTS.md. Run on a quiet machine.",
    )
    add_common_arguments(parser)
    parser.add_argument("--minutes", type=float, default=30, help="minutes of feed (default 30)")
    parser.add_argument("--rate", type=float, default=1000, help="ticks per second (default 1000)")
    parser.add_argument("--warmup-minutes", type=float, default=5, help="minutes before the reference sample (5)")
    parser.add_argument("--sample-seconds", type=float, default=15, help="seconds between memory samples (15)")
    parser.add_argument("--periods", type=int, default=5, help="periods of the batch-duration series (default 5)")
    parser.add_argument("--symbols", type=int, default=120, help="symbols of the feed (default 120)")
    parser.add_argument("--trigger", help="stream.trigger_interval (default: the profile's)")
    parser.add_argument("--start-timeout", type=float, default=300, help="seconds to wait for the query to start")
    parser.add_argument("--catch-up-timeout", type=float, default=300, help="seconds to wait for the last batch")
    args = parser.parse_args(argv)
    stop_on_signals()
    if args.quick:
        args.minutes, args.rate, args.warmup_minutes, args.sample_seconds, args.periods = 1, 200, 0.3, 5, 2
    try:
        samples, batches, facts = soak(args)
    except (*HANDLED_ERRORS, ProducerError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1

    warmup_s = args.warmup_minutes * 60
    python_line, _ = memory_line("python driver RSS (MiB)", samples, "python", warmup_s)
    jvm_line, _ = memory_line("JVM RSS (MiB)", samples, "jvm", warmup_s)
    steady = batches[batches["seconds"] >= warmup_s]
    edges = [warmup_s + (args.minutes * 60 - warmup_s) * index / args.periods for index in range(args.periods + 1)]
    edges[-1] = float("inf")
    medians = [
        percentile(steady[(steady["seconds"] >= low) & (steady["seconds"] < high)]["batch_duration_ms"], 50)
        for low, high in zip(edges, edges[1:], strict=False)
    ]
    flat = ratio(medians[-1], medians[0]) if medians else float("nan")
    slow = int((steady["batch_duration_ms"] > facts["trigger_ms"]).sum())
    figures = [
        f"feed {args.rate:,.0f} ticks/s for {args.minutes:g} min, warm-up {args.warmup_minutes:g} min; "
        f"batches {len(batches)} ({len(steady)} after warm-up), records read {int(batches['records_read'].sum()):,}; "
        f"memory samples {len(samples)} every {args.sample_seconds:g} s",
        python_line,
        jvm_line,
        "batch duration p50 by period (ms)  "
        + "  ".join("n/a" if pd.isna(m) else f"{m:,.0f}" for m in medians)
        + f"  ratio last/first {flat:.2f}  [flat <= {FLAT_LIMIT}: {verdict(flat, FLAT_LIMIT)}]",
        f"batch duration after warm-up (ms)  p50 {percentile(steady['batch_duration_ms'], 50):,.0f}  "
        f"max {steady['batch_duration_ms'].max() if len(steady) else float('nan'):,.0f}  "
        f"longer than the trigger ({facts['trigger_ms']:,.0f} ms): {slow}",
    ]
    record_results("bench-soak", argv if argv is not None else sys.argv[1:], figures, args.quick, not args.no_record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
