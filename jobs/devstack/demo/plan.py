"""The demo's settings: command-line options, the plan they make, and the names of what it writes."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from jobs.pipeline.config import (
    DEFAULT_CONFIG,
    AppConfig,
    ConfigError,
    is_remote,
    load_config,
    port_number,
    resolve_local_path,
)

DEFAULT_DATA_DIR = ".local/demo"
STATE_FILE = "demo-processes.json"
# What a demo folder holds; anything else in --data-dir means it is not one, and it is not emptied.
DEMO_ENTRIES = {
    "delta",
    "checkpoints",
    "logs",
    "charts",
    "services",
    STATE_FILE,
    "demo-summary.json",
    "simulator-summary.json",
    "latest_signals.csv",
}
LATEST_SQL = (
    "SELECT symbol, event_time, close, volume, sma_short, sma_long, prev_volume, signal, crossover "
    "FROM v_latest_signals ORDER BY symbol"
)
QUARANTINE_SQL = "SELECT reason, COUNT(*) AS records FROM ticks_quarantine GROUP BY reason ORDER BY reason"


class DemoError(RuntimeError):
    """The demo cannot go on; the message says why and where the log is."""


@dataclass
class Plan:
    config: AppConfig
    config_path: Path
    overrides: list[str]
    data_dir: Path
    duration: float
    symbols: int
    ticks_per_symbol: int
    seed: int
    drain_seconds: float
    chart_count: int

    @property
    def speed(self) -> float:
        # Simulated seconds per wall second so the bounded feed takes `duration` wall seconds.
        return self.ticks_per_symbol * self.config.simulator.interval_seconds / self.duration


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m jobs.demo",
        description=(
            "Run the pipeline end to end on this machine: Kafka broker, simulator (120 symbols, accelerated "
            "clock, a few duplicate/late/malformed ticks), the streaming job, live progress; then the latest "
            "signal per symbol, quarantine counts and charts. Stops everything it started, also on Ctrl-C."
        ),
        epilog="example: python -m jobs.demo --duration 30 --kafka-port 0",
    )
    parser.add_argument(
        "--config", default=str(DEFAULT_CONFIG), help="configuration profile (YAML); default: conf/local.yaml"
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override one configuration key (repeatable); storage and Kafka are the demo's own",
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="how long the simulator feeds ticks (default 60; start-up, draining and charts add about 40 s)",
    )
    parser.add_argument(
        "--data-dir",
        default=DEFAULT_DATA_DIR,
        metavar="DIR",
        help=f"the demo's folder: tables, checkpoints, logs, charts; emptied at start (default {DEFAULT_DATA_DIR})",
    )
    parser.add_argument(
        "--kafka-port",
        type=port_number,
        default=None,
        metavar="PORT",
        help="broker port (default services.kafka_port; 0: the demo's own broker on a free port)",
    )
    parser.add_argument("--symbols", type=int, default=120, help="number of symbols (default 120: SYM001..SYM120)")
    parser.add_argument(
        "--ticks-per-symbol",
        type=int,
        default=60,
        metavar="N",
        help="clean ticks per symbol (default 60; the signals need 21 for the long average)",
    )
    parser.add_argument("--seed", type=int, default=42, help="simulator seed (default 42: the same market each run)")
    parser.add_argument(
        "--drain",
        type=float,
        default=90.0,
        metavar="SECONDS",
        help="at most this long for the job to catch up after the feed ends (default 90)",
    )
    parser.add_argument("--charts", type=int, default=3, metavar="N", help="symbols to chart (default 3)")
    parser.add_argument(
        "--board",
        action="store_true",
        help="also serve the live signal board (python -m jobs.board) on board.port and print its address; "
        "in a terminal it stays up after the run until Ctrl-C",
    )
    return parser


def plan_from_args(args: argparse.Namespace) -> Plan:
    if args.duration <= 0 or args.drain < 0:
        raise ConfigError("--duration must be positive and --drain not negative")
    if not 1 <= args.symbols <= 999 or args.ticks_per_symbol < 1 or args.charts < 0:
        raise ConfigError("--symbols must be 1..999, --ticks-per-symbol at least 1, --charts not negative")
    data_dir = Path(args.data_dir)
    data_dir = data_dir.resolve() if args.data_dir != DEFAULT_DATA_DIR else resolve_local_path(DEFAULT_DATA_DIR)
    profile = load_config(args.config, args.overrides)
    if is_remote(profile.storage.root):
        storage = [
            f"storage.root={profile.storage.root}/demo",
            f"storage.checkpoint_root={profile.storage.checkpoint_root}/demo",
        ]
    else:
        storage = [f"storage.root={data_dir / 'delta'}", f"storage.checkpoint_root={data_dir / 'checkpoints'}"]
    # Demo defaults first, so the user's --set can change them; storage last, as it is the demo's own.
    overrides = [
        "stream.trigger_interval=2 seconds",
        "spark.driver_memory=2g",
        "stream.register_catalog=false",
        *args.overrides,
        *storage,
    ]
    return Plan(
        config=load_config(args.config, overrides),
        config_path=Path(args.config).resolve(),
        overrides=overrides,
        data_dir=data_dir,
        duration=args.duration,
        symbols=args.symbols,
        ticks_per_symbol=args.ticks_per_symbol,
        seed=args.seed,
        drain_seconds=args.drain,
        chart_count=args.charts,
    )
