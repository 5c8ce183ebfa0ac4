"""Delta Lake edges: create the tables, idempotent appends and overwrites, the signals corrections MERGE."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from typing import Any, TypeVar

from delta.tables import DeltaTable
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from jobs.pipeline.config import AppConfig
from jobs.pipeline.tables import ALL_TABLES, SIGNALS, TableSpec
from jobs.pipeline.transforms.parse import utc_date

log = logging.getLogger(__name__)

# Readers such as Athena and delta-rs need the default protocol: no deletion vectors, no column mapping.
TABLE_PROPERTIES = {
    "delta.enableDeletionVectors": "false",
    "delta.autoOptimize.autoCompact": "false",
    "delta.checkpointInterval": "20",
}
# Delta's optimistic-concurrency conflicts (another writer, e.g. OPTIMIZE from jobs.maintenance, committed files
# this MERGE or overwrite read): retried on a fresh snapshot. Appends never conflict with compaction.
_CONFLICT_NAMES = (
    "ConcurrentAppendException",
    "ConcurrentDeleteReadException",
    "ConcurrentDeleteDeleteException",
    "ConcurrentTransactionException",
    "ConcurrentWriteException",
    "MetadataChangedException",
    "ProtocolChangedException",
    "DELTA_CONCURRENT",
)
CONFLICT_ATTEMPTS = 5

T = TypeVar("T")


def is_write_conflict(error: BaseException) -> bool:
    text = f"{type(error).__name__}: {error}"
    return any(name in text for name in _CONFLICT_NAMES)


def retry_on_conflict(action: Callable[[], T], what: str, attempts: int = CONFLICT_ATTEMPTS) -> T:
    """Run a Delta write, again on a concurrent-modification conflict (each attempt reads a new snapshot)."""
    for attempt in range(1, attempts + 1):
        try:
            return action()
        except Exception as error:
            if attempt == attempts or not is_write_conflict(error):
                raise
            log.warning("%s: concurrent write conflict (attempt %d of %d), retrying", what, attempt, attempts)
            time.sleep(0.2 * attempt)
    raise AssertionError("unreachable")


def ensure_table(spark: SparkSession, path: str, spec: TableSpec) -> bool:
    """Create the table at `path` if absent. Returns True when it was created."""
    if DeltaTable.isDeltaTable(spark, path):
        return False
    builder = DeltaTable.createIfNotExists(spark).location(path).addColumns(spec.schema).comment(spec.description)
    if spec.partition_by:
        builder = builder.partitionedBy(*spec.partition_by)
    for key, value in TABLE_PROPERTIES.items():
        builder = builder.property(key, value)
    builder.execute()
    return True


def ensure_tables(spark: SparkSession, config: AppConfig) -> list[str]:
    """Create every table the job writes; returns the names of the ones created now.

    In parallel: each check or creation is a few small Delta log reads and writes, mostly waiting, and a fresh
    start creates six tables.
    """
    with ThreadPoolExecutor(max_workers=len(ALL_TABLES), thread_name_prefix="ensure-table") as pool:
        created = list(pool.map(lambda spec: ensure_table(spark, config.table_path(spec.name), spec), ALL_TABLES))
    return [spec.name for spec, was_created in zip(ALL_TABLES, created, strict=True) if was_created]


def append_once(frame: DataFrame, path: str, spec: TableSpec, app_id: str, batch_id: int) -> None:
    """Append a micro-batch's rows; a retried batch (same app id and batch id) writes nothing again."""
    (
        frame.select(*spec.schema.fieldNames())
        .write.format("delta")
        .mode("append")
        .option("txnAppId", app_id)
        .option("txnVersion", batch_id)
        .save(path)
    )


def overwrite_once(frame: DataFrame, path: str, spec: TableSpec, app_id: str, batch_id: int) -> None:
    """Replace a small table's rows once per batch (idempotent like append_once); the schema may grow."""
    retry_on_conflict(
        lambda: (
            frame.select(*spec.schema.fieldNames())
            .write.format("delta")
            .mode("overwrite")
            .option("overwriteSchema", "true")
            .option("txnAppId", app_id)
            .option("txnVersion", batch_id)
            .save(path)
        ),
        f"overwrite {spec.name}",
    )


def merge_signal_corrections(
    spark: SparkSession, path: str, rows: DataFrame, symbols: Sequence[str], first_date: date, last_date: date
) -> None:
    """Insert or overwrite signal rows (corrections carry their new revision) within the given dates and symbols.

    The literal bounds let Delta prune partitions and skip files by statistics before the join.
    """
    quoted = ", ".join("'" + symbol.replace("'", "''") + "'" for symbol in symbols)
    condition = (
        f"t.event_date BETWEEN DATE'{first_date.isoformat()}' AND DATE'{last_date.isoformat()}' "
        f"AND t.symbol IN ({quoted}) "
        "AND t.event_date = s.event_date AND t.symbol = s.symbol AND t.event_time = s.event_time"
    )
    columns: dict[str, str | Column] = {name: f"s.{name}" for name in SIGNALS.schema.fieldNames()}

    def merge() -> None:
        (
            DeltaTable.forPath(spark, path)
            .alias("t")
            .merge(rows.alias("s"), condition)
            .whenMatchedUpdate(set=columns)
            .whenNotMatchedInsert(values=columns)
            .execute()
        )

    retry_on_conflict(merge, "merge signals")


def signal_rows(frame: DataFrame, batch_id: int) -> DataFrame:
    """Signal rows (SIGNAL_COLUMNS + revision) in the columns of the signals table."""
    return frame.select(
        *[c for c in SIGNALS.schema.fieldNames() if c not in {"updated_at", "batch_id", "event_date"}],
        F.current_timestamp().alias("updated_at"),
        F.lit(batch_id).cast("long").alias("batch_id"),
        utc_date(F.col("event_time")).alias("event_date"),
    )


def compact(spark: SparkSession, path: str, where: str | None = None) -> dict[str, int]:
    """Bin-pack a table's small files (OPTIMIZE), only in the partitions `where` selects; files added/removed."""
    if not DeltaTable.isDeltaTable(spark, path):
        return {"files_added": 0, "files_removed": 0}
    builder = DeltaTable.forPath(spark, path).optimize()
    if where:
        builder = builder.where(where)

    def compaction() -> Any:
        result = builder.executeCompaction().first()
        assert result is not None, "OPTIMIZE returned no metrics row"
        return result["metrics"]

    metrics = retry_on_conflict(compaction, f"optimize {path}")
    return {"files_added": metrics["numFilesAdded"], "files_removed": metrics["numFilesRemoved"]}
