"""`python -m simulator run|replay`: a seeded synthetic feed or a CSV replay into Kafka."""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np

from jobs.pipeline.config import AppConfig, ConfigError, add_config_arguments, config_from_args
from jobs.pipeline.stopping import stop_on_signals
from simulator.engine import MemorySink, Sink, StreamOptions, stream_ticks
from simulator.faults import FaultInjector, FaultRates
from simulator.market import Market, MarketSpec, build_symbol_specs, symbol_names
from simulator.messages import FORMATS, SYMBOL_PATTERN, Encoder, parse_iso_time, utc_iso
from simulator.producer import ProducerError, ProducerSettings, TickProducer, ensure_topic
from simulator.replay import CsvError, read_csv

SEEDED_DEFAULT_START = "2026-01-05 09:15:00"  # a Monday market open, in stream.source_timezone
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


class UsageError(ValueError):
    """Bad command-line input; reported without a traceback, exit code 2."""


# --- argument types --------------------------------------------------------------------------------------


def probability(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not a probability between 0 and 1")
    return value


def duration_seconds(text: str) -> float:
    match = _DURATION.match(text)
    if not match or float(match.group(1)) <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive duration (e.g. 90, 90s, 15m, 6h, 2d)")
    return float(match.group(1)) * _UNITS[match.group(2)]


def speed(text: str) -> float:
    """A positive factor, or infinity for 'max' (as fast as possible)."""
    if text.strip().lower() in {"max", "inf"}:
        return math.inf
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number or 'max'") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("speed must be positive (or 'max')")
    return value


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} must be at least 1")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} must be positive")
    return value


def parse_symbols(text: str) -> list[str]:
    """`120` -> SYM001..SYM120; `AAPL,MSFT` -> that list."""
    text = text.strip()
    if text.isdigit():
        count = int(text)
        if not 1 <= count <= 9999:
            raise UsageError(f"--symbols {text}: the count must be between 1 and 9999")
        return symbol_names(count)
    names = [name.strip() for name in text.split(",") if name.strip()]
    bad = [name for name in names if not SYMBOL_PATTERN.match(name)]
    if not names or bad:
        raise UsageError(
            f"--symbols {text!r}: give a count or a comma-separated list of 1-16 characters "
            f"of [A-Z0-9._-] (bad: {', '.join(bad) or 'empty list'})"
        )
    if len(set(names)) != len(names):
        raise UsageError(f"--symbols {text!r}: a symbol is listed twice")
    return names


def parse_start(text: str | None, seeded: bool, zone: ZoneInfo) -> int:
    """Simulated start in epoch ms. Naive times are in the source time zone."""
    if text is None or text == "now":
        if text is None and seeded:
            text = SEEDED_DEFAULT_START
        else:
            return int(datetime.now(UTC).timestamp()) * 1000
    try:
        return parse_iso_time(text)
    except ValueError:
        pass
    try:
        return round(datetime.fromisoformat(text.strip()).replace(tzinfo=zone).timestamp() * 1000)
    except ValueError:
        raise UsageError(f"--start {text!r} is not an ISO-8601 time (e.g. 2026-11-24T09:15:00Z)") from None


# --- parser ----------------------------------------------------------------------------------------------


def _common_options(config_parent: argparse.ArgumentParser) -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False, parents=[config_parent])
    kafka = common.add_argument_group("Kafka")
    kafka.add_argument(
        "--bootstrap-servers", help="broker list host:port[,host:port] (default kafka.bootstrap_servers)"
    )
    kafka.add_argument("--topic", help="target topic, created when absent (default kafka.topic)")
    kafka.add_argument(
        "--dry-run", action="store_true", help="generate and count everything but send nothing (no broker needed)"
    )
    out = common.add_argument_group("output")
    out.add_argument(
        "--seed",
        type=int,
        help="seed of every random choice (default simulator.seed; none: a fresh one, printed in the summary with "
        "the --start that repeats the run); same seed + arguments = same bytes",
    )
    out.add_argument(
        "--speed",
        type=speed,
        metavar="X|max",
        help="simulated seconds per wall second; 'max' sends as fast as possible",
    )
    out.add_argument("--quiet", action="store_true", help="no progress bar or rate lines")
    out.add_argument("--summary-json", type=Path, metavar="PATH", help="also write the summary as JSON to PATH")
    faults = common.add_argument_group("fault injection (seeded; extra records, except --out-of-order)")
    faults.add_argument(
        "--duplicates",
        type=probability,
        default=0.0,
        metavar="P",
        help="probability that a tick is re-sent identically right after itself",
    )
    faults.add_argument(
        "--conflicts",
        type=probability,
        default=0.0,
        metavar="P",
        help="probability of an extra record with the same symbol and time but another price",
    )
    faults.add_argument(
        "--out-of-order",
        type=probability,
        default=0.0,
        metavar="P",
        help="probability that a tick is held back up to --max-delay simulated seconds "
        "(counted when a later tick of its symbol overtook it)",
    )
    faults.add_argument(
        "--max-delay",
        type=positive_float,
        metavar="S",
        help="out-of-order delay bound in simulated seconds, below signals.allowed_lateness_seconds "
        "(default simulator.max_delay_seconds)",
    )
    faults.add_argument(
        "--too-late",
        type=probability,
        default=0.0,
        metavar="P",
        help="probability of an extra tick older than its symbol's latest by the allowed lateness plus one hour",
    )
    faults.add_argument(
        "--malformed",
        type=probability,
        default=0.0,
        metavar="P",
        help="probability of an extra invalid record, one of: not_json, missing_field, bad_type, "
        "non_positive_price, non_finite, unknown_version, oversized",
    )
    return common


def build_parser() -> argparse.ArgumentParser:
    config_parent = argparse.ArgumentParser(add_help=False)
    add_config_arguments(config_parent)
    common = _common_options(config_parent)
    parser = argparse.ArgumentParser(
        prog="python -m simulator",
        description="Market tick simulator: a seeded synthetic live feed (run) or a CSV replay (replay) into Kafka. "
        "Message formats: docs/design.md. Exit code 0 when every record was delivered, 1 when any failed, "
        "2 for bad input.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="{run,replay}")
    run = commands.add_parser(
        "run",
        parents=[common],
        help="synthetic live feed (GBM prices, U-shaped heavy-tailed volumes)",
        description="Synthetic live feed: per-symbol geometric Brownian motion rounded to 0.01, Pareto volumes "
        "with an intraday U shape. Unbounded unless --count or --duration; Ctrl-C or SIGTERM "
        "flushes and prints the summary.",
    )
    run.add_argument("--symbols", help="a count (120 = SYM001..SYM120) or a list AAPL,MSFT (default simulator.symbols)")
    pace = run.add_mutually_exclusive_group()
    pace.add_argument(
        "--interval",
        type=positive_float,
        metavar="S",
        help="simulated seconds between two ticks of one symbol (default simulator.interval_seconds)",
    )
    pace.add_argument(
        "--rate",
        type=positive_float,
        metavar="R",
        help="ticks per simulated second in total (sets the interval to symbols / R)",
    )
    run.add_argument(
        "--start",
        help="simulated start, ISO-8601 (naive = stream.source_timezone) or 'now'; "
        f"default now, or {SEEDED_DEFAULT_START} source time with a seed",
    )
    run.add_argument("--count", type=positive_int, help="stop after this many clean ticks")
    run.add_argument(
        "--duration",
        type=duration_seconds,
        metavar="D",
        help="stop after this much simulated time (90, 90s, 15m, 6h, 2d)",
    )
    run.add_argument("--format", choices=FORMATS, default="v1", help="message format (default v1)")
    replay = commands.add_parser(
        "replay",
        parents=[common],
        help="replay a CSV (legacy or v1 columns) in time order",
        description="Replay a CSV in time order: legacy columns Date-Time,symbol,Close,Volume (extra columns "
        "ignored; Date-Time in stream.source_timezone) or v1 columns symbol,ts,close,volume. The whole "
        "file is validated first: a bad row stops the replay before anything is sent. "
        "Default speed: max; with --speed X the gaps between timestamps are divided by X.",
    )
    replay.add_argument("--csv", required=True, type=Path, metavar="FILE", help="the CSV file to replay")
    replay.add_argument("--format", choices=FORMATS, help="emitted format (default: the format of the input)")
    return parser


# --- commands --------------------------------------------------------------------------------------------


def _seed(args: argparse.Namespace, config: AppConfig) -> int:
    if args.seed is not None:
        return args.seed
    if config.simulator.seed is not None:
        return config.simulator.seed
    entropy = np.random.SeedSequence().entropy  # an int when drawn from the OS
    assert isinstance(entropy, int)
    return entropy % (2**63)


def _generators(seed: int) -> tuple[np.random.Generator, np.random.Generator]:
    """The market generator and, spawned from it, the fault generator: adding faults never changes the ticks."""
    market = np.random.Generator(np.random.PCG64(seed))
    return market, market.spawn(1)[0]


def _fault_injector(
    args: argparse.Namespace, config: AppConfig, rng: np.random.Generator, encoder: Encoder
) -> FaultInjector | None:
    max_delay = args.max_delay if args.max_delay is not None else config.simulator.max_delay_seconds
    try:
        rates = FaultRates(
            duplicates=args.duplicates,
            conflicts=args.conflicts,
            out_of_order=args.out_of_order,
            too_late=args.too_late,
            malformed=args.malformed,
            max_delay_ms=int(max_delay * 1000),
            lateness_ms=config.signals.allowed_lateness_seconds * 1000,
            max_message_bytes=config.stream.max_message_bytes,
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return FaultInjector(rates, rng, encoder) if rates.active else None


def market_from_args(
    args: argparse.Namespace, config: AppConfig, seed: int, zone: ZoneInfo, rng: np.random.Generator
) -> Market:
    sim = config.simulator
    names = parse_symbols(args.symbols) if args.symbols else symbol_names(sim.symbols)
    if args.rate is not None:
        interval_ms = round(len(names) * 1000 / args.rate)
    else:
        interval_ms = round((args.interval or sim.interval_seconds) * 1000)
    if interval_ms < 1:
        raise UsageError(
            f"--rate {args.rate} with {len(names)} symbols puts ticks of one symbol less than 1 ms "
            "apart; lower the rate or add symbols"
        )
    overrides = {name: params.model_dump() for name, params in sim.symbol_params.items()}
    spec = MarketSpec(
        symbols=build_symbol_specs(names, sim.drift, sim.volatility, sim.start_price, sim.volume_mean, overrides),
        start_ms=parse_start(args.start or sim.start, args.seeded, zone),
        interval_ms=interval_ms,
        volume_tail=sim.volume_tail,
        session_open_s=_minutes(sim.session_open) * 60,
        session_close_s=_minutes(sim.session_close) * 60,
        zone=zone,
    )
    return Market(spec, rng)


def _run_bounds(args: argparse.Namespace, market: Market) -> tuple[int | None, int | None]:
    """(end of simulated time in ms, number of ticks) of a bounded run; None where unbounded."""
    end_ms = market.spec.start_ms + round(args.duration * 1000) if args.duration is not None else None
    limits = [
        limit
        for limit in (args.count, market.ticks_before(end_ms) if end_ms is not None else None)
        if limit is not None
    ]
    return end_ms, (min(limits) if limits else None)


def _minutes(text: str) -> int:
    hours, minutes = text.split(":")
    return int(hours) * 60 + int(minutes)


def _open_sink(args: argparse.Namespace, config: AppConfig) -> Sink:
    if args.dry_run:
        return MemorySink()
    settings = ProducerSettings.from_config(config, args.bootstrap_servers, args.topic)
    ensure_topic(settings)
    return TickProducer(settings)


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, AppConfig]:
    args = build_parser().parse_args(argv)
    return args, config_from_args(args)


def execute(
    args: argparse.Namespace, config: AppConfig, stop: threading.Event | None = None, sink: Sink | None = None
) -> dict[str, Any]:
    """Run one command; returns the summary. Raises UsageError, CsvError or ProducerError.

    `sink` replaces Kafka (tests of the pure pipeline, benchmarks); by default --dry-run or a producer.
    """
    zone = ZoneInfo(config.stream.source_timezone)  # validated when the configuration was loaded
    args.seeded = args.seed is not None or config.simulator.seed is not None
    seed = _seed(args, config)
    market_rng, fault_rng = _generators(seed)
    start: str | None = None
    if args.command == "run":
        market = market_from_args(args, config, seed, zone, market_rng)
        start = utc_iso(market.spec.start_ms)
        end_ms, total = _run_bounds(args, market)
        batches = market.batches(args.count, end_ms)
        message_format = args.format
        pace = config.simulator.speed if args.speed is None else args.speed
    else:
        data = read_csv(args.csv, zone)  # validates every row before the broker is even contacted
        message_format = args.format or data.format
        total = len(data.ticks)
        batches = (data.ticks.slice(i, i + 8192) for i in range(0, total, 8192))
        pace = args.speed
    encoder = Encoder(message_format, zone)
    injector = _fault_injector(args, config, fault_rng, encoder)
    sink = sink if sink is not None else _open_sink(args, config)
    options = StreamOptions(
        speed=None if pace is None or math.isinf(pace) else pace, total_ticks=total, quiet=args.quiet
    )
    stop = stop or threading.Event()
    try:
        with stop_on_signals(stop):
            result = stream_ticks(batches, encoder, sink, injector, options, stop)
    finally:
        if isinstance(sink, TickProducer):
            sink.close()
    topic = args.topic or config.kafka.topic
    kafka = isinstance(sink, TickProducer)
    return {
        "command": args.command,
        "topic": topic if kafka else None,
        "idempotent_producer": sink.idempotent if isinstance(sink, TickProducer) else None,
        "format": message_format,
        "seed": seed,
        # With `start`, what repeats a run byte for byte (with the same other arguments): an unseeded run starts now.
        "seeded": args.seeded,
        "start": start,
        **result,
    }


def _print_summary(result: dict[str, Any]) -> None:
    faults = result["faults"]
    malformed = ", ".join(f"{k} {v}" for k, v in faults["malformed"].items() if v) or "0"
    print(
        f"{result['command']}: {result['ticks']:,} ticks, {result['messages']:,} records -> "
        f"{result['topic'] or '(dry run)'}: sent {result['sent']:,}, failed {result['failed']:,}, "
        f"{result['rate_per_second']:,.0f} records/s in {result['elapsed_seconds']:.1f} s (seed {result['seed']})"
    )
    if any(faults[k] for k in ("duplicates", "conflicts", "out_of_order", "too_late")) or malformed != "0":
        print(
            f"  faults: duplicates {faults['duplicates']}, conflicts {faults['conflicts']}, out_of_order "
            f"{faults['out_of_order']}, too_late {faults['too_late']}, malformed: {malformed}"
        )
    if result["first_event_time"]:
        print(f"  event time {result['first_event_time']} .. {result['last_event_time']}")
    if result["start"] and not result["seeded"]:
        print(f"  to repeat this run, add: --seed {result['seed']} --start {result['start']}")
    for error in result["errors"]:
        print(f"  delivery error: {error}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = config_from_args(args)
        result = execute(args, config)
    except (ConfigError, UsageError, CsvError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ProducerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    _print_summary(result)
    if args.summary_json:
        args.summary_json.write_text(json.dumps(result, indent=2) + "\n")
    return EXIT_FAILED if result["failed"] else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
