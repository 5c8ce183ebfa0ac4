"""Benchmark: the v_signals view on the embedded engine against a single-window query over the same table.

    python -m bench.bench_sql [--ticks 10000000] [--symbols 100] [--repeat 3] [--mode aggregate|fetch] [--quick]

Builds a `ticks` Delta table with pyarrow + deltalake in the job's ticks schema (partitioned by event_date):
--symbols symbols x ticks/symbols ticks each, 1 s apart, a seeded random walk on the 0.01 price grid, random
volumes. Then times `jobs.lake.query.run_query` (DuckDB over the Delta table, the sql/ views translated from
Athena's dialect; engine set-up included) for
  view:   v_signals (two SMAs with their counts, the previous volume, signal and crossover per tick), and
  window: SELECT symbol, event_time, AVG(close) OVER (PARTITION BY symbol ORDER BY event_time
          ROWS 20 PRECEDING) FROM ticks (one window, the long SMA's frame),
and, for where the view's time goes,
  functions: the window functions v_signals needs and nothing else (its tick number, two frame means, two frame
          sums, three lags) over the same frames, folded like the others,
alternating, --repeat times each; the best time of each counts. --mode aggregate (default) folds every output
column of each query into a one-row aggregate, so the whole result is computed but no 10M-row result is
converted to pandas; --mode fetch returns every row to pandas. Target: view / window <= 1.5.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from bench.common import (
    HANDLED_ERRORS,
    BenchError,
    add_common_arguments,
    ratio,
    record_results,
    stop_on_signals,
    verdict,
    workspace,
)
from jobs.pipeline.config import AppConfig, load_config

TARGET_RATIO = 1.5
START = datetime(2026, 1, 5, 3, 45, tzinfo=UTC)

TICKS_ARROW = pa.schema(
    [
        pa.field("symbol", pa.string(), False),
        pa.field("event_time", pa.timestamp("us", tz="UTC"), False),
        pa.field("close", pa.float64(), False),
        pa.field("volume", pa.int64(), False),
        pa.field("message_format", pa.string(), False),
        pa.field("topic", pa.string(), False),
        pa.field("partition", pa.int32(), False),
        pa.field("offset", pa.int64(), False),
        pa.field("ingest_time", pa.timestamp("us", tz="UTC"), False),
        pa.field("event_date", pa.date32(), False),
    ]
)

_BY_TIME = "PARTITION BY symbol ORDER BY event_time"
_VIEW_FUNCTIONS = (
    f"row_number() OVER ({_BY_TIME}) AS tick_number, "
    f"avg(close) OVER ({_BY_TIME} ROWS BETWEEN 8 PRECEDING AND CURRENT ROW) AS short_mean, "
    f"avg(close) OVER ({_BY_TIME} ROWS BETWEEN 20 PRECEDING AND CURRENT ROW) AS long_mean, "
    f"sum(close_micros) OVER ({_BY_TIME} ROWS BETWEEN 8 PRECEDING AND CURRENT ROW) AS short_sum, "
    f"sum(close_micros) OVER ({_BY_TIME} ROWS BETWEEN 20 PRECEDING AND CURRENT ROW) AS long_sum, "
    f"lag(close_micros, 9) OVER ({_BY_TIME}) AS short_dropped, "
    f"lag(close_micros, 21) OVER ({_BY_TIME}) AS long_dropped, "
    f"lag(volume) OVER ({_BY_TIME}) AS prev_volume "
    "FROM (SELECT symbol, event_time, close, volume, CAST(ROUND(close * 1000000) AS bigint) AS close_micros "
    "FROM ticks) AS t"
)

QUERIES = {
    "aggregate": {
        "view": (
            "SELECT count(*) AS row_count, count(sma_short) AS short_count, sum(sma_short) AS short_sum, "
            "count(sma_long) AS long_count, sum(sma_long) AS long_sum, sum(prev_volume) AS prev_volume_sum, "
            "sum(CASE WHEN signal = 'Buy' THEN 1 ELSE 0 END) AS buys, "
            "sum(CASE WHEN signal = 'Sell' THEN 1 ELSE 0 END) AS sells, count(crossover) AS crossovers, "
            "max(event_time) AS last_time, max(event_date) AS last_date, sum(close) AS close_sum, "
            "sum(volume) AS volume_sum, count(DISTINCT symbol) AS symbols FROM v_signals"
        ),
        "window": (
            "SELECT count(*) AS row_count, sum(sma) AS sma_sum, max(event_time) AS last_time, "
            "count(DISTINCT symbol) AS symbols FROM (SELECT symbol, event_time, avg(close) OVER "
            "(PARTITION BY symbol ORDER BY event_time ROWS 20 PRECEDING) AS sma FROM ticks) AS w"
        ),
        "functions": (
            "SELECT count(*) AS row_count, sum(tick_number) AS tick_sum, sum(short_mean) AS short_mean_sum, "
            "sum(long_mean) AS long_mean_sum, sum(short_sum) AS short_sum, sum(long_sum) AS long_sum, "
            "sum(short_dropped) AS short_dropped_sum, sum(long_dropped) AS long_dropped_sum, "
            f"sum(prev_volume) AS prev_volume_sum FROM (SELECT {_VIEW_FUNCTIONS}) AS f"
        ),
    },
    "fetch": {
        "view": "SELECT * FROM v_signals",
        "window": (
            "SELECT symbol, event_time, avg(close) OVER "
            "(PARTITION BY symbol ORDER BY event_time ROWS 20 PRECEDING) AS sma FROM ticks"
        ),
        "functions": f"SELECT symbol, event_time, {_VIEW_FUNCTIONS}",
    },
}


def build_ticks(location: Path, ticks: int, symbols: int, chunk_symbols: int = 10) -> int:
    """Write the ticks table; returns the row count. Memory stays at about one chunk of symbols."""
    from deltalake import write_deltalake

    per_symbol = max(1, ticks // symbols)
    rng = np.random.default_rng(7)
    start_us = int(START.timestamp() * 1_000_000)
    ingest = np.full(1, start_us, dtype=np.int64)
    written = 0
    for first in range(0, symbols, chunk_symbols):
        names, times, closes, volumes = [], [], [], []
        for index in range(first, min(symbols, first + chunk_symbols)):
            cents = 5_000 + index * 100 + np.cumsum(rng.integers(-5, 6, size=per_symbol))
            cents = np.maximum(cents, 1)
            names.append(np.full(per_symbol, f"SYM{index + 1:03d}", dtype=object))
            times.append(start_us + np.arange(per_symbol, dtype=np.int64) * 1_000_000)
            closes.append(cents / 100.0)
            volumes.append(rng.integers(1, 5_000, size=per_symbol, dtype=np.int64))
        event_us = np.concatenate(times)
        rows = len(event_us)
        table = pa.table(
            {
                "symbol": pa.array(np.concatenate(names), pa.string()),
                "event_time": pa.array(event_us, pa.timestamp("us", tz="UTC")),
                "close": pa.array(np.concatenate(closes), pa.float64()),
                "volume": pa.array(np.concatenate(volumes), pa.int64()),
                "message_format": pa.array(np.full(rows, "v1", dtype=object), pa.string()),
                "topic": pa.array(np.full(rows, "stock-ticks", dtype=object), pa.string()),
                "partition": pa.array(np.zeros(rows, dtype=np.int32), pa.int32()),
                "offset": pa.array(np.arange(written, written + rows, dtype=np.int64), pa.int64()),
                "ingest_time": pa.array(np.repeat(ingest, rows), pa.timestamp("us", tz="UTC")),
                "event_date": pa.array((event_us // 86_400_000_000).astype(np.int32), pa.date32()),
            },
            schema=TICKS_ARROW,
        )
        write_deltalake(str(location), table, mode="append", partition_by=["event_date"])
        written += rows
    return written


def timed(config: AppConfig, sql: str) -> tuple[float, pd.DataFrame]:
    from jobs.lake.query import run_query

    started = time.perf_counter()
    frame = run_query(config, sql)
    return time.perf_counter() - started, frame


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.bench_sql",
        description=__doc__.split("\n\n")[0],
        epilog="Figures are printed and appended to bench/RESULTS.md. Run on a quiet machine.",
    )
    add_common_arguments(parser)
    parser.add_argument("--ticks", type=int, default=10_000_000, help="ticks in the table (default 10000000)")
    parser.add_argument("--symbols", type=int, default=100, help="symbols (default 100)")
    parser.add_argument("--repeat", type=int, default=3, help="alternating runs of each query; best counts (3)")
    parser.add_argument("--mode", choices=sorted(QUERIES), default="aggregate", help="see above (default aggregate)")
    args = parser.parse_args(argv)
    stop_on_signals()
    if args.quick:
        args.ticks, args.repeat = 200_000, 1
    try:
        with workspace("sql", args.keep) as folder:
            root = folder / "delta"
            config = load_config(args.config, [*args.overrides, f"storage.root={root}"])
            print(f"building ticks: {args.ticks:,} rows, {args.symbols} symbols ...", flush=True)
            started = time.perf_counter()
            rows = build_ticks(root / "ticks", args.ticks, args.symbols)
            build_seconds = time.perf_counter() - started
            setup_seconds = min(timed(config, "SELECT 1 AS row_count")[0] for _ in range(max(1, args.repeat)))
            times: dict[str, list[float]] = {name: [] for name in QUERIES[args.mode]}
            results = {}
            for round_index in range(args.repeat):
                for name in QUERIES[args.mode]:
                    seconds, results[name] = timed(config, QUERIES[args.mode][name])
                    times[name].append(seconds)
                print(f"  round {round_index + 1}: " + ", ".join(f"{name} {times[name][-1]:.2f} s" for name in times))
            result_rows = {
                name: int(frame["row_count"].iloc[0]) if args.mode == "aggregate" else len(frame)
                for name, frame in results.items()
            }
            if any(count != rows for count in result_rows.values()):
                raise BenchError(f"queries returned {result_rows} rows for a table of {rows:,}")
    except (*HANDLED_ERRORS, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1

    view, window, functions = (min(times[name]) for name in ("view", "window", "functions"))
    query_ratio = ratio(view, window)
    figures = [
        f"ticks {rows:,} ({args.symbols} symbols, built in {build_seconds:.1f} s); mode {args.mode}; "
        f"best of {args.repeat}; each query over all {rows:,} rows",
        f"query time (s)             v_signals {view:.2f}  single window {window:.2f}  ratio {query_ratio:.2f}  "
        f"[target <= {TARGET_RATIO}: {verdict(query_ratio, TARGET_RATIO)}]",
        f"window functions alone (s) {functions:.2f}  ratio to single window {ratio(functions, window):.2f}  "
        f"(v_signals' own expressions and labels: {view - functions:.2f} s)",
        f"throughput (rows/s)        v_signals {rows / view:,.0f}  single window {rows / window:,.0f}",
        f"engine set-up (s)          {setup_seconds:.2f} (in both times: register the Delta tables, create the views)",
    ]
    record_results("bench-sql", argv if argv is not None else sys.argv[1:], figures, args.quick, not args.no_record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
