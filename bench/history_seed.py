"""Seed the job's tables with a synthetic history of ticks (for bench-growth), generated with Spark.

    python -m bench.history_seed --ticks 10000000 --symbols 100 --end 2026-01-05T03:45:00Z [--set storage.root=...]

`--symbols` symbols named like the simulator's (SYM001..), each with ticks/symbols ticks 1 s apart, the last one
at --end; closes on the 0.01 price grid, positive volumes; all from spark.range and arithmetic, so the same
arguments give the same ticks. They are written through `jobs.pipeline.history.seed_history(spark, config,
ticks)`, which stores ticks, signals and the job's state as if the job had processed them.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime
from typing import TYPE_CHECKING

from jobs.pipeline.config import AppConfig, ConfigError, add_config_arguments, config_from_args

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession


def history_ticks(spark: SparkSession, symbols: int, per_symbol: int, end_epoch_s: int) -> DataFrame:
    """symbol string, event_time timestamp, close double, volume long: symbols x per_symbol rows."""
    from pyspark.sql import functions as F

    width = max(3, len(str(symbols)))
    ids = spark.range(symbols * per_symbol)
    symbol_index = (F.col("id") / per_symbol).cast("long")
    position = F.col("id") % per_symbol
    return ids.select(
        F.format_string(f"SYM%0{width}d", symbol_index + 1).alias("symbol"),
        F.timestamp_seconds(F.lit(end_epoch_s) - (F.lit(per_symbol - 1) - position)).alias("event_time"),
        # A saw-tooth between 20 and 60 plus a per-symbol level, rounded to cents.
        F.round(F.lit(20.0) + symbol_index + ((position * 37 + symbol_index * 11) % 4000) / 100.0, 2).alias("close"),
        (F.lit(100) + (position * 7919 + symbol_index) % 5000).cast("long").alias("volume"),
    )


def seed(config: AppConfig, ticks: int, symbols: int, end: str) -> dict[str, float]:
    try:
        from jobs.pipeline.history import seed_history
    except ImportError as exc:
        raise ConfigError(
            f"jobs.pipeline.history.seed_history is not available in this checkout ({exc}); bench-growth needs it"
        ) from None
    from jobs.pipeline.spark_session import build_spark

    end_epoch_s = int(datetime.fromisoformat(end.replace("Z", "+00:00")).timestamp())
    per_symbol = max(1, ticks // symbols)
    spark = build_spark(config)
    try:
        started = time.monotonic()
        written = seed_history(spark, config, history_ticks(spark, symbols, per_symbol, end_epoch_s))
        return {"ticks": int(written or symbols * per_symbol), "seconds": time.monotonic() - started}
    finally:
        spark.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.history_seed", description=__doc__.split("\n\n")[0])
    add_config_arguments(parser)
    parser.add_argument("--ticks", type=int, required=True, help="total ticks of the history (rounded down)")
    parser.add_argument("--symbols", type=int, default=100, help="symbols SYM001.. (default 100)")
    parser.add_argument("--end", required=True, help="event time of each symbol's last tick, ISO-8601 UTC")
    args = parser.parse_args(argv)
    try:
        config = config_from_args(args)
        result = seed(config, args.ticks, args.symbols, args.end)
    except (ConfigError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({"event": "seeded", **result}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
