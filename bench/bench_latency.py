"""Benchmark: end-to-end latency of the streaming job against a stateless stream, at a steady feed rate.

    python -m bench.bench_latency [--rate 1000] [--duration 60] [--steps 500,1000,2000,4000] [--quick]

Starts its own Kafka broker on free ports. Then, one after the other (never at the same time):
1. the job (`python -m jobs.stream_signals`) on a fresh topic, tables and checkpoint, fed by the simulator at
   --rate ticks/s for --duration s (120 symbols, seed 1, paced in real time);
2. the stateless baseline (`python -m bench.stateless_stream`: Kafka -> from_json -> Delta append, the job's
   Spark session settings and trigger) on a second topic with the very same feed;
3. the sustained-rate search: one more run of the job on a fresh topic, warmed by --step-warmup s of feed at
   the first rate (not judged), then fed --step-duration s at each rate in turn, rising until a step is not
   sustained. The job keeps running from step to step, as a deployed job would see a rising load.
Latency of a tick: its Kafka timestamp (producer CreateTime) -> the first Delta commit whose added files hold
its row, i.e. the end of the batch that made it visible: the tick's `signals` row for the job (mapped to the
Kafka record through `ticks` and `raw_ticks` by topic/partition/offset), its `stateless_ticks` row for the
baseline. Commit times come from the tables' transaction logs (see bench/common.py). Batch durations: the job's
pipeline_metrics.batch_duration_ms, the baseline's triggerExecution. A rate is sustained when every batch that
started during its step, after the step's first, took no longer than the trigger interval, and the job had read
every record soon after the step (two trigger intervals).
Target: job p99 <= 2x stateless p99.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

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
    epoch_ms,
    feed,
    job_batches,
    job_latencies,
    kafka_broker,
    percentile,
    ratio,
    record_results,
    running,
    simulator_command,
    start_job,
    start_stateless,
    stateless_batches,
    stateless_latencies,
    stop_on_signals,
    trigger_seconds,
    verdict,
    wait_until_started,
    workspace,
)
from jobs.pipeline.config import load_config
from simulator.producer import ProducerError

TARGET_P99_RATIO = 2.0


@dataclass
class SideResult:
    latencies: pd.DataFrame
    batches: pd.DataFrame
    sent: int
    sent_rate: float
    caught_up: bool


def wait_caught_up(layout: RunLayout, job: bool, expected: int, timeout: float, child: Child) -> bool:
    """Wait until the side has finished the batch holding the last record (metrics for the job); False if it
    had not within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        child.check()
        if job:
            batches = job_batches(layout)
            done = int(batches["records_read"].sum()) if len(batches) else 0
        else:
            done = delta_row_count(layout.table(STATELESS_TABLE))
        if done >= expected:
            return True
        time.sleep(1.0)
    return False


def paced_feed(
    layout: RunLayout,
    base_args: list[str],
    args: argparse.Namespace,
    rate: float,
    seconds: float,
    name: str,
    start: str | None = None,
) -> dict:
    """The simulator at `rate` ticks/s for `seconds`, paced in real time, into the layout's topic; its summary.
    `start="now"` continues the event time from the wall clock (a later feed into the same topic)."""
    return feed(
        simulator_command(
            layout.bootstrap,
            layout.topic,
            base_args,
            symbols=args.symbols,
            rate=rate,
            duration=seconds,
            speed="1",
            start=start,
            summary=layout.logs / f"{name}.json",
        ),
        layout.logs / f"{name}.log",
        timeout=seconds * 3 + 60,
    )


def run_side(
    job: bool,
    folder: Path,
    bootstrap: str,
    base_args: list[str],
    args: argparse.Namespace,
    rate: float,
    duration: float,
) -> SideResult:
    name = "job" if job else "stateless"
    layout = RunLayout(folder, topic=f"bench-{folder.name}", bootstrap=bootstrap, trigger=args.trigger)
    config = layout.config(base_args)
    create_topic(config, bootstrap, layout.topic)
    child = start_job(layout, base_args) if job else start_stateless(layout, base_args)
    checkpoint = layout.checkpoint_root / (config.stream.checkpoint_name if job else STATELESS_TABLE)
    with running(child):
        startup = wait_until_started(child, checkpoint, args.start_timeout)
        print(
            f"  {name}: query started after {startup:.1f} s; feeding {rate:,.0f} ticks/s for {duration:.0f} s",
            flush=True,
        )
        summary = paced_feed(layout, base_args, args, rate, duration, "simulator")
        caught_up = wait_caught_up(layout, job, int(summary["sent"]), args.catch_up_timeout, child)
        if not caught_up:
            raise BenchError(
                f"{child.name} had not read all {summary['sent']:,} records {args.catch_up_timeout:.0f} s after the "
                f"feed ended; see {child.log_file}"
            )
    latencies = job_latencies(layout) if job else stateless_latencies(layout)
    if args.warmup:
        first = latencies["kafka_ms"].min()
        latencies = latencies[latencies["kafka_ms"] >= first + args.warmup * 1000]
    batches = job_batches(layout) if job else stateless_batches(layout)
    return SideResult(latencies, batches, int(summary["sent"]), float(summary.get("rate_per_second") or 0.0), caught_up)


def sustained(batches: pd.DataFrame, trigger_ms: float) -> tuple[bool, float]:
    """(every batch after the first one with records took <= the trigger interval, their max duration ms)."""
    warm = batches.iloc[1:] if len(batches) > 1 else batches
    longest = float(warm["batch_duration_ms"].max()) if len(warm) else float("nan")
    return bool(len(warm)) and longest <= trigger_ms, longest


def started_between(batches: pd.DataFrame, begin_ms: float, end_ms: float) -> pd.DataFrame:
    """The batches (job_batches rows) that started in [begin_ms, end_ms), epoch milliseconds, by batch id."""
    started = epoch_ms(batches["batch_started_at"])
    return batches[(started >= begin_ms) & (started < end_ms)].sort_values("batch_id")


def rate_steps(
    folder: Path, bootstrap: str, base_args: list[str], args: argparse.Namespace, rates: list[float], trigger_ms: float
) -> list[tuple[float, bool, float]]:
    """The sustained-rate search on one running job: (rate, sustained, longest judged batch ms) per step tried."""
    layout = RunLayout(folder, topic=f"bench-{folder.name}", bootstrap=bootstrap, trigger=args.trigger)
    config = layout.config(base_args)
    create_topic(config, bootstrap, layout.topic)
    child = start_job(layout, base_args)
    steps: list[tuple[float, bool, float]] = []
    sent = 0

    with running(child):
        startup = wait_until_started(child, layout.checkpoint_root / config.stream.checkpoint_name, args.start_timeout)
        print(
            f"  steps: query started after {startup:.1f} s; warm-up {args.step_warmup:.0f} s at {rates[0]:,.0f} "
            f"ticks/s, then {args.step_duration:.0f} s per rate",
            flush=True,
        )
        sent += int(paced_feed(layout, base_args, args, rates[0], args.step_warmup, "simulator-warm-up", "now")["sent"])
        wait_caught_up(layout, True, sent, 2 * trigger_ms / 1000 + args.catch_up_timeout, child)
        for index, rate in enumerate(rates):
            begin_ms = time.time() * 1000
            sent += int(
                paced_feed(layout, base_args, args, rate, args.step_duration, f"simulator-step{index}", "now")["sent"]
            )
            end_ms = time.time() * 1000
            caught_up = wait_caught_up(layout, True, sent, 2 * trigger_ms / 1000, child)
            ok, longest = sustained(started_between(job_batches(layout), begin_ms, end_ms), trigger_ms)
            ok = ok and caught_up
            steps.append((rate, ok, longest))
            behind = "" if caught_up else ", behind the feed at its end"
            print(
                f"  step {rate:,.0f} ticks/s: longest batch {fmt(longest)} ms{behind} -> {'ok' if ok else 'too slow'}",
                flush=True,
            )
            if not ok:
                break
    return steps


def fmt(value: float) -> str:
    return "n/a" if pd.isna(value) else f"{value:,.0f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.bench_latency",
        description=__doc__.split("\n\n")[0],
        epilog="Figures are printed and appended to bench/RESULTS.md. Run on a quiet machine.",
    )
    add_common_arguments(parser)
    parser.add_argument("--rate", type=float, default=1000, help="ticks per second of the latency runs (default 1000)")
    parser.add_argument("--duration", type=float, default=60, help="seconds of feed per latency run (default 60)")
    parser.add_argument("--trigger", default="5 seconds", help="stream.trigger_interval of both sides (default 5 s)")
    parser.add_argument("--symbols", type=int, default=120, help="symbols of the feed (default 120)")
    parser.add_argument(
        "--steps", default="500,1000,2000,4000", help="rates (ticks/s) of the sustained-rate search, rising"
    )
    parser.add_argument("--step-duration", type=float, default=40, help="seconds of feed per rate step (default 40)")
    parser.add_argument(
        "--step-warmup",
        type=float,
        default=300,
        help="seconds of feed at the first rate before the steps (default 300, the soak's warm-up)",
    )
    parser.add_argument("--no-steps", action="store_true", help="skip the sustained-rate search")
    parser.add_argument(
        "--warmup", type=float, default=0, help="leave out ticks sent in the first S seconds of each run (default 0)"
    )
    parser.add_argument("--start-timeout", type=float, default=300, help="seconds to wait for a query to start")
    parser.add_argument("--catch-up-timeout", type=float, default=300, help="seconds to wait for the last batch")
    args = parser.parse_args(argv)
    stop_on_signals()
    if args.quick:
        args.rate, args.duration, args.steps, args.step_duration, args.step_warmup = 200, 10, "400", 10, 5
    try:
        rates = [float(item) for item in args.steps.split(",") if item.strip()]
        trigger_ms = trigger_seconds(args.trigger) * 1000
        base_args = config_args(args)
        config = load_config(args.config, args.overrides)
        with workspace("latency", args.keep) as folder, kafka_broker(folder, config) as bootstrap:
            print(f"broker {bootstrap}; job first, then the stateless stream", flush=True)
            job = run_side(True, folder / "job", bootstrap, base_args, args, args.rate, args.duration)
            base = run_side(False, folder / "stateless", bootstrap, base_args, args, args.rate, args.duration)
            steps = [] if args.no_steps else rate_steps(folder / "steps", bootstrap, base_args, args, rates, trigger_ms)
    except (*HANDLED_ERRORS, ProducerError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1

    job_p50, job_p99 = percentile(job.latencies["latency_ms"], 50), percentile(job.latencies["latency_ms"], 99)
    base_p50, base_p99 = percentile(base.latencies["latency_ms"], 50), percentile(base.latencies["latency_ms"], 99)
    job_d, base_d = job.batches["batch_duration_ms"], base.batches["batch_duration_ms"]
    p99_ratio = ratio(job_p99, base_p99)
    figures = [
        f"feed: {args.rate:,.0f} ticks/s requested for {args.duration:.0f} s, trigger {args.trigger}; sent job "
        f"{job.sent:,} ({job.sent_rate:,.0f}/s), stateless {base.sent:,} ({base.sent_rate:,.0f}/s); "
        f"rows measured job {len(job.latencies):,}, stateless {len(base.latencies):,}; "
        f"warm-up left out {args.warmup:.0f} s",
        f"latency p50 (ms)           job {fmt(job_p50)}  stateless {fmt(base_p50)}  "
        f"ratio {ratio(job_p50, base_p50):.2f}",
        f"latency p99 (ms)           job {fmt(job_p99)}  stateless {fmt(base_p99)}  ratio {p99_ratio:.2f}  "
        f"[target <= {TARGET_P99_RATIO:.1f}: {verdict(p99_ratio, TARGET_P99_RATIO)}]",
        f"batch duration p50 (ms)    job {fmt(percentile(job_d, 50))}  stateless {fmt(percentile(base_d, 50))}  "
        f"ratio {ratio(percentile(job_d, 50), percentile(base_d, 50)):.2f}",
        f"batch duration max (ms)    job {fmt(job_d.max())}  stateless {fmt(base_d.max())}  "
        f"ratio {ratio(float(job_d.max()), float(base_d.max())):.2f}  "
        f"(batches: job {len(job_d)}, stateless {len(base_d)})",
    ]
    if steps:
        good = [rate for rate, ok, _ in steps if ok]
        detail = ", ".join(
            f"{rate:,.0f}: {'ok' if ok else 'too slow'} (max {fmt(longest)} ms)" for rate, ok, longest in steps
        )
        best = f"{max(good):,.0f} ticks/s" if good else f"below {steps[0][0]:,.0f} ticks/s"
        capped = " (the highest step tried; try higher --steps)" if good and all(ok for _, ok, _ in steps) else ""
        figures.append(
            f"highest sustained rate     job {best}{capped}; trigger {trigger_ms:,.0f} ms; "
            f"{args.step_duration:.0f} s steps: {detail}"
        )
    record_results("bench-latency", argv if argv is not None else sys.argv[1:], figures, args.quick, not args.no_record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
