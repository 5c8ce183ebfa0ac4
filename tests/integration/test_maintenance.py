"""OPTIMIZE compacts the small files a stream leaves behind, without changing a row."""

from __future__ import annotations

from datetime import datetime

from chispa import assert_df_equality
from pyspark.sql import SparkSession

from jobs.maintenance import optimize
from jobs.pipeline.delta_io import append_once, ensure_tables
from jobs.pipeline.tables import PIPELINE_METRICS


def test_optimize_compacts_without_changing_rows(spark: SparkSession, make_config) -> None:
    config = make_config()
    ensure_tables(spark, config)
    path = config.table_path("pipeline_metrics")
    for batch_id in range(4):
        row = {
            "batch_id": batch_id,
            "batch_started_at": datetime(2026, 11, 24, 9, batch_id),
            "records_read": 10,
            "ticks_written": 9,
            "quarantined": 1,
            "quarantined_by_reason": {"not_json": 1},
            "duplicates": 0,
            "signals_emitted": 9,
            "signals_corrected": 0,
            "batch_duration_ms": 100,
            "max_event_time_lag_ms": 5,
        }
        append_once(spark.createDataFrame([row], PIPELINE_METRICS.schema), path, PIPELINE_METRICS, "test", batch_id)
    # A retried batch id writes nothing.
    append_once(spark.createDataFrame([row], PIPELINE_METRICS.schema), path, PIPELINE_METRICS, "test", 3)
    before = spark.read.format("delta").load(path)
    expected = spark.createDataFrame(before.collect(), before.schema)
    assert expected.count() == 4
    expected_maps = sorted((row.batch_id, row.quarantined_by_reason) for row in before.collect())

    results = optimize(spark, config, ["pipeline_metrics", "signals"])

    assert results["pipeline_metrics"] == {"files_added": 1, "files_removed": 4}
    assert results["signals"] == {"files_added": 0, "files_removed": 0}
    after = spark.read.format("delta").load(path)
    # chispa sorts rows, which Spark cannot do on a MAP column: compare the map separately.
    assert_df_equality(
        after.drop("quarantined_by_reason"), expected.drop("quarantined_by_reason"), ignore_row_order=True
    )
    assert sorted((row.batch_id, row.quarantined_by_reason) for row in after.collect()) == expected_maps
    properties = spark.sql(f"SHOW TBLPROPERTIES delta.`{path}`").collect()
    assert {row.key: row.value for row in properties}["delta.enableDeletionVectors"] == "false"
