"""Table maintenance: compact small files (OPTIMIZE) and remove unreferenced files (VACUUM).

    python -m jobs.maintenance optimize [--table signals ...]
    python -m jobs.maintenance vacuum --retain-hours 168 [--table ...]

The streaming job commits small files every micro-batch and compacts the settled partitions itself
(`stream.compact_every_batches`). `optimize` here is for a stopped job, or a second driver on a local
root: the job retries a MERGE or state rewrite that conflicts with it. On S3, a second writer is only safe with
Delta's DynamoDB LogStore (S3DynamoDBLogStore) configured for every writer; without it, leave compaction to the
job. `vacuum` deletes only files older than --retain-hours (at least 168) that no version references.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from delta.tables import DeltaTable
from pyspark.sql import SparkSession

from jobs.pipeline.config import AppConfig, ConfigError, add_config_arguments, config_from_args
from jobs.pipeline.delta_io import compact
from jobs.pipeline.tables import ALL_TABLES

TABLE_NAMES = [spec.name for spec in ALL_TABLES]
# Below this, VACUUM could delete files a running reader or the stream still needs.
MIN_RETAIN_HOURS = 168


class MaintenanceFailed(RuntimeError):
    """One table's OPTIMIZE or VACUUM failed (storage unreachable, a broken log): said in one line."""


@contextmanager
def _failing_as_one_line(command: str, name: str, path: str) -> Iterator[None]:
    try:
        yield
    except Exception as exc:  # noqa: BLE001 - Spark's errors carry a JVM trace: the first line names the cause
        # A py4j error's own text starts "An error occurred while calling ...": the Java exception says what.
        java = getattr(exc, "java_exception", None)
        text = str(java.toString()) if java is not None else str(exc)
        cause = next((line.strip() for line in text.splitlines() if line.strip()), type(exc).__name__)
        raise MaintenanceFailed(f"{command} failed on {name} at {path}: {cause}") from None


def optimize(spark: SparkSession, config: AppConfig, tables: list[str]) -> dict[str, dict[str, int]]:
    """Bin-pack each table's small files; returns files added/removed per table."""
    results = {}
    for name in tables:
        path = config.table_path(name)
        with _failing_as_one_line("optimize", name, path):
            if DeltaTable.isDeltaTable(spark, path):
                results[name] = compact(spark, path)
    return results


def vacuum(spark: SparkSession, config: AppConfig, tables: list[str], retain_hours: int) -> list[str]:
    done = []
    for name in tables:
        path = config.table_path(name)
        with _failing_as_one_line("vacuum", name, path):
            if DeltaTable.isDeltaTable(spark, path):
                DeltaTable.forPath(spark, path).vacuum(retain_hours)
                done.append(name)
    return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.maintenance", description=__doc__.split("\n\n")[0])
    common = argparse.ArgumentParser(add_help=False)
    add_config_arguments(common)
    common.add_argument(
        "--table", action="append", choices=TABLE_NAMES, help="table to maintain (repeatable; default: all)"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser(
        "optimize",
        parents=[common],
        help="compact small files of each table",
        description=(
            "Bin-pack each table's small files (Delta OPTIMIZE). For a stopped job, or beside a running one on a "
            "local root (the job retries what conflicts); on S3 only with Delta's DynamoDB LogStore set for "
            "every writer, else leave compaction to the job (stream.compact_every_batches)."
        ),
    )
    vacuum_parser = commands.add_parser(
        "vacuum",
        parents=[common],
        help="delete files no version references",
        description=(
            "Delete the files that no table version of the last --retain-hours references (Delta VACUUM). "
            f"At least {MIN_RETAIN_HOURS} hours, so a running reader or the stream never loses a file it needs."
        ),
    )
    vacuum_parser.add_argument(
        "--retain-hours",
        type=int,
        default=MIN_RETAIN_HOURS,
        help=f"keep files needed by versions of the last N hours (>= {MIN_RETAIN_HOURS})",
    )
    args = parser.parse_args(argv)
    try:
        config = config_from_args(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.command == "vacuum" and args.retain_hours < MIN_RETAIN_HOURS:
        print(f"error: --retain-hours must be at least {MIN_RETAIN_HOURS}", file=sys.stderr)
        return 2
    from jobs.pipeline.spark_session import build_spark

    spark = build_spark(config)
    failure = None
    try:
        tables = args.table or TABLE_NAMES
        if args.command == "optimize":
            for name, counts in optimize(spark, config, tables).items():
                print(f"{name}: {counts['files_removed']} files compacted into {counts['files_added']}")
        else:
            for name in vacuum(spark, config, tables, args.retain_hours):
                print(f"{name}: vacuumed (retained {args.retain_hours} h)")
    except MaintenanceFailed as exc:
        failure = f"error: {exc}"
    finally:
        spark.stop()
    if failure:
        # After Spark has stopped, so the error is the last line on stderr.
        print(failure, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
