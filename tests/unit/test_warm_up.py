"""The warm-up of a continuous run: the whole job on synthetic batches, with no trace in the job's tables."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from pyspark.sql import SparkSession

from jobs.pipeline.config import AppConfig, with_overrides
from jobs.pipeline.delta_io import ensure_tables
from jobs.pipeline.micro_batch import RunTotals
from jobs.pipeline.tables import ALL_TABLES
from jobs.pipeline.warm_up import SCRATCH_FOLDER, scratch_config, synthetic_batches, warm_up


def _versions(spark: SparkSession, config: AppConfig) -> dict[str, int]:
    from delta.tables import DeltaTable

    return {
        spec.name: DeltaTable.forPath(spark, config.table_path(spec.name)).history(1).first()["version"]  # type: ignore[index]
        for spec in ALL_TABLES
    }


def test_the_warm_up_runs_every_step_on_scratch_tables_and_leaves_nothing(
    spark: SparkSession, local_config: AppConfig, tmp_path: Path
) -> None:
    config = with_overrides(local_config, [f"storage.root={tmp_path / 'delta'}", "kafka.publish_signals=true"])
    ensure_tables(spark, config)
    before = _versions(spark, config)

    seconds = warm_up(spark, config)

    assert seconds > 0
    assert _versions(spark, config) == before  # the job's own tables: not one commit
    assert not (tmp_path / "delta" / SCRATCH_FOLDER).exists()
    assert sorted(path.name for path in (tmp_path / "delta").iterdir()) == sorted(spec.name for spec in ALL_TABLES)


def test_the_scratch_run_has_no_outside_effect(local_config: AppConfig, tmp_path: Path) -> None:
    config = with_overrides(
        local_config,
        [f"storage.root={tmp_path}", "kafka.publish_signals=true", "stream.register_catalog=true"],
    )
    scratch = scratch_config(config, "abc")
    assert scratch.table_path("ticks") == f"{tmp_path}/{SCRATCH_FOLDER}/abc/ticks"
    assert not scratch.kafka.publish_signals and not scratch.stream.register_catalog
    assert scratch.stream.compact_every_batches == 0


def test_the_synthetic_batches_reach_every_outcome_and_a_late_tick(
    spark: SparkSession, local_config: AppConfig
) -> None:
    from datetime import UTC, datetime

    from jobs.pipeline.transforms.parse import parse_records

    first, second = synthetic_batches(spark, 21, datetime.now(UTC))
    parsed = parse_records(first, 4096, "UTC")
    assert parsed.where("reject_reason = 'not_json'").count() == 1
    assert first.count() == 2 * 23 + 2  # full windows for two symbols, a re-send, a reject
    times = [row.event_time for row in parse_records(second, 4096, "UTC").collect()]
    assert times[-1] < max(times)  # the last record is late


@pytest.mark.parametrize(
    ("once", "stopped_first", "warmed"),
    [(False, False, True), (True, True, False), (False, True, False)],
    ids=["continuous", "once", "stopped-while-spark-started"],
)
def test_a_continuous_run_warms_up_first_and_a_stop_meanwhile_starts_no_query(
    spark: SparkSession,
    local_config: AppConfig,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    once: bool,
    stopped_first: bool,
    warmed: bool,
) -> None:
    """`stream.warm_up`: a continuous run warms up before its query starts, `--once` does not; a stop that arrives
    meanwhile (SIGTERM during the warm-up) starts no query: nothing planned, nothing read."""
    from jobs import stream_signals

    config = with_overrides(
        local_config,
        [
            f"storage.root={tmp_path / 'delta'}",
            f"storage.checkpoint_root={tmp_path / 'checkpoints'}",
            "stream.warm_up=true",
            "kafka.bootstrap_servers=127.0.0.1:9",  # never contacted: no query starts
        ],
    )
    stop = threading.Event()
    warmed_roots: list[str] = []

    def warm_up_then_stop(_spark: SparkSession, warmed_config: AppConfig) -> float:
        warmed_roots.append(warmed_config.storage.root)
        stop.set()
        return 0.0

    monkeypatch.setattr(stream_signals, "warm_up", warm_up_then_stop)
    if stopped_first:  # a stop that came while Spark started skips the warm-up too
        stop.set()
    assert stream_signals.run(spark, config, once=once, stop=stop) == RunTotals()
    assert warmed_roots == ([config.storage.root] if warmed else [])
    assert not Path(config.checkpoint_path()).exists()  # a started query writes its checkpoint's metadata at once
    assert sorted(path.name for path in (tmp_path / "delta").iterdir()) == sorted(spec.name for spec in ALL_TABLES)
