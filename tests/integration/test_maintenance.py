"""Maintenance: OPTIMIZE compacts the small files a stream leaves behind, VACUUM removes unreferenced ones, the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from urllib.parse import urlparse

from chispa import assert_df_equality
from pyspark.sql import SparkSession

from jobs.maintenance import optimize, vacuum
from jobs.pipeline.delta_io import append_once, ensure_tables
from jobs.pipeline.tables import PIPELINE_METRICS

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_optimize_compacts_without_changing_rows(spark: SparkSession, make_config) -> None:
    config = make_config()
    ensure_tables(spark, config)
    path = config.table_path("pipeline_metrics")
    for batch_id in range(4):
        row = _metrics_row(batch_id)
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


def _metrics_row(batch_id: int) -> dict:
    return {
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


def _cli(config, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    command = [
        sys.executable,
        "-m",
        "jobs.maintenance",
        *args,
        "--config",
        str(REPO_ROOT / "conf" / "local.yaml"),
        f"--set=storage.root={config.storage.root}",
        f"--set=storage.checkpoint_root={config.storage.checkpoint_root}",
        "--set=spark.driver_memory=1g",
        "--set=spark.shuffle_partitions=2",
    ]
    return subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout)


def _stream_like_table(spark: SparkSession, config, batches: int = 4) -> str:
    """pipeline_metrics with one small file per batch, as the stream leaves it."""
    ensure_tables(spark, config)
    path = config.table_path("pipeline_metrics")
    for batch_id in range(batches):
        frame = spark.createDataFrame([_metrics_row(batch_id)], PIPELINE_METRICS.schema)
        append_once(frame, path, PIPELINE_METRICS, "test", batch_id)
    return path


def _batch_ids(spark: SparkSession, path: str) -> list[int]:
    return sorted(row.batch_id for row in spark.read.format("delta").load(path).select("batch_id").collect())


def test_cli_help_and_bad_arguments_fail_fast_with_one_line(make_config) -> None:
    config = make_config()
    result = subprocess.run(
        [sys.executable, "-m", "jobs.maintenance", "--help"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0
    assert "optimize" in result.stdout and "vacuum" in result.stdout
    vacuum_help = subprocess.run(
        [sys.executable, "-m", "jobs.maintenance", "vacuum", "--help"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert vacuum_help.returncode == 0 and "--retain-hours" in vacuum_help.stdout and "--table" in vacuum_help.stdout

    too_short = _cli(config, "vacuum", "--retain-hours", "1", timeout=60)
    assert too_short.returncode == 2
    assert too_short.stderr.strip() == "error: --retain-hours must be at least 168"
    unknown = _cli(config, "optimize", "--table", "nope", timeout=60)
    assert unknown.returncode == 2 and "invalid choice: 'nope'" in unknown.stderr
    bad_key = _cli(config, "optimize", "--set", "storage.nope=1", timeout=60)
    assert bad_key.returncode == 2
    assert bad_key.stderr.startswith("error: invalid configuration") and "storage.nope: unknown key" in bad_key.stderr
    for result in (too_short, unknown, bad_key):
        assert "Traceback" not in result.stderr
    # Nothing was started or created by a refused command.
    assert not Path(config.storage.root).exists()


def test_optimize_cli_compacts_the_named_table_only(spark: SparkSession, make_config) -> None:
    config = make_config()
    path = _stream_like_table(spark, config)
    result = _cli(config, "optimize", "--table", "pipeline_metrics")
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.splitlines() == ["pipeline_metrics: 4 files compacted into 1"]
    files = spark.sql(f"DESCRIBE DETAIL delta.`{path}`").first()["numFiles"]
    assert files == 1
    assert _batch_ids(spark, path) == [0, 1, 2, 3]


def test_vacuum_cli_removes_old_unreferenced_files_only(spark: SparkSession, make_config) -> None:
    config = make_config()
    path = _stream_like_table(spark, config)
    table = Path(path)
    referenced = [Path(urlparse(uri).path) for uri in spark.read.format("delta").load(path).inputFiles()]
    assert len(referenced) == 4 and all(file.parent == table for file in referenced)
    payload = referenced[0].read_bytes()
    old_orphan = table / "part-00000-0000aaaa-old-orphan.c000.snappy.parquet"
    new_orphan = table / "part-00000-0000bbbb-new-orphan.c000.snappy.parquet"
    for orphan in (old_orphan, new_orphan):
        orphan.write_bytes(payload)
    eight_days_ago = time.time() - 8 * 24 * 3600
    os.utime(old_orphan, (eight_days_ago, eight_days_ago))

    result = _cli(config, "vacuum", "--retain-hours", "168", "--table", "pipeline_metrics")

    assert result.returncode == 0, result.stderr[-3000:]
    # Delta's own VACUUM prints a "Deleted N files" line from the JVM first; the job's summary ends the output.
    assert result.stdout.splitlines()[-1] == "pipeline_metrics: vacuumed (retained 168 h)"
    assert not old_orphan.exists(), "a file no version references, older than the retention, was kept"
    assert new_orphan.exists(), "a file younger than the retention was deleted"
    assert all(file.exists() for file in referenced), "a file the table references was deleted"
    assert _batch_ids(spark, path) == [0, 1, 2, 3]


def test_vacuum_of_a_small_table_runs_a_few_tasks_not_thousands(spark: SparkSession, make_config) -> None:
    """VACUUM lists the table's folders with `spark.sql.sources.parallelPartitionDiscovery.parallelism` tasks per
    listing job, 10,000 by default: ~70,000 empty tasks and ~40 s on two cores for a table of four files. The job's
    session settings bound it by the configured parallelism."""
    config = make_config()
    path = _stream_like_table(spark, config)
    tracker = spark.sparkContext.statusTracker()
    group = "vacuum-task-count"
    spark.sparkContext.setJobGroup(group, "vacuum of a small table")
    try:
        assert vacuum(spark, config, ["pipeline_metrics"], 168) == ["pipeline_metrics"]
    finally:
        spark.sparkContext.setLocalProperty("spark.jobGroup.id", None)  # type: ignore[arg-type]
    stages = [stage for job in tracker.getJobIdsForGroup(group) for stage in tracker.getJobInfo(job).stageIds]
    tasks = sum(tracker.getStageInfo(stage).numTasks for stage in stages)
    assert stages, "VACUUM ran no Spark job"
    assert tasks <= 100, f"VACUUM of a four-file table ran {tasks} tasks"
    assert _batch_ids(spark, path) == [0, 1, 2, 3]


def test_a_table_that_cannot_be_read_is_one_error_line_naming_it(spark: SparkSession, make_config) -> None:
    config = make_config()
    path = _stream_like_table(spark, config)
    Path(path, "_delta_log", f"{99:020d}.json").write_text("{not json\n")
    result = _cli(config, "optimize", "--table", "pipeline_metrics")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: optimize failed on pipeline_metrics at {path}: "), result.stderr[-3000:]
