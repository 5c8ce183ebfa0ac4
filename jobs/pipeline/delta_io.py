"""Delta Lake edges: create the tables, idempotent appends, the signals upsert."""

from __future__ import annotations

from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from jobs.pipeline.config import AppConfig
from jobs.pipeline.tables import ALL_TABLES, SIGNAL_STATE, SIGNALS, TableSpec

# Readers such as Athena and delta-rs need the default protocol: no deletion vectors, no column mapping.
TABLE_PROPERTIES = {
    "delta.enableDeletionVectors": "false",
    "delta.autoOptimize.autoCompact": "true",
    "delta.checkpointInterval": "20",
}


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
    """Create every table the job writes; returns the names of the ones created now."""
    return [spec.name for spec in ALL_TABLES if ensure_table(spark, config.table_path(spec.name), spec)]


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


def upsert_signals(spark: SparkSession, path: str, changes: DataFrame, batch_id: int) -> None:
    """Insert new signal rows and overwrite corrected ones (changes carry their new revision)."""
    rows = changes.select(
        *[c for c in SIGNALS.schema.fieldNames() if c not in {"updated_at", "batch_id", "event_date"}],
        F.current_timestamp().alias("updated_at"),
        F.lit(batch_id).cast("long").alias("batch_id"),
        F.to_date("event_time").alias("event_date"),
    )
    first_date = changes.agg(F.min(F.to_date("event_time"))).first()[0]
    if first_date is None:
        return
    # The literal date bound lets Delta prune the target's partitions before the join.
    condition = (
        f"t.event_date >= DATE'{first_date.isoformat()}' AND t.event_date = s.event_date "
        "AND t.symbol = s.symbol AND t.event_time = s.event_time"
    )
    columns = {name: f"s.{name}" for name in SIGNALS.schema.fieldNames()}
    (
        DeltaTable.forPath(spark, path)
        .alias("t")
        .merge(rows.alias("s"), condition)
        .whenMatchedUpdate(set=columns)
        .whenNotMatchedInsert(values=columns)
        .execute()
    )


def upsert_state(spark: SparkSession, path: str, state: DataFrame) -> None:
    columns = {name: f"s.{name}" for name in SIGNAL_STATE.schema.fieldNames()}
    (
        DeltaTable.forPath(spark, path)
        .alias("t")
        .merge(state.alias("s"), "t.symbol = s.symbol")
        .whenMatchedUpdate(set=columns)
        .whenNotMatchedInsert(values=columns)
        .execute()
    )
