"""The foreachBatch function itself, on hand-made Kafka records and local Delta tables (no services).

Called twice with the same batch id (what Spark does after a crash between the writes and the checkpoint
commit), it writes nothing twice; a fault injected between the writes and a retry give the same tables.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from chispa import assert_approx_df_equality, assert_df_equality
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from jobs.pipeline.config import AppConfig, with_overrides
from jobs.pipeline.delta_io import ensure_tables
from jobs.pipeline.micro_batch import Accepted, SignalBatchProcessor
from jobs.pipeline.tables import KAFKA_RECORD_SCHEMA
from jobs.pipeline.transforms.signals import SIGNAL_COLUMNS, compute_signals

T0 = datetime(2026, 11, 24, 18, 0, tzinfo=UTC)
KAFKA_TIME = datetime(2026, 11, 25, 0, 0, tzinfo=UTC)
TABLES = ("raw_ticks", "ticks", "ticks_quarantine", "signals", "pipeline_metrics", "_signal_state")


def _tick(symbol: str, minute: float, close: float | None = None, volume: int | None = None) -> str:
    ts = (T0 + timedelta(minutes=minute)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return json.dumps(
        {
            "v": 1,
            "symbol": symbol,
            "ts": ts,
            "close": close if close is not None else round(100 + (minute * 7) % 5 + minute * 0.1, 2),
            "volume": volume if volume is not None else 1000 + int(minute * 13) % 17,
        }
    )


def _records(spark: SparkSession, values: list[tuple[str, str]], first_offset: int) -> DataFrame:
    rows = [(key, value, "ticks", 0, first_offset + i, KAFKA_TIME, KAFKA_TIME) for i, (key, value) in enumerate(values)]
    return spark.createDataFrame(rows, KAFKA_RECORD_SCHEMA)


_SETTINGS = [
    "signals.sma_short=2",
    "signals.sma_long=4",
    "signals.allowed_lateness_seconds=600",
    "stream.compact_every_batches=0",
]


@pytest.fixture
def config(local_config: AppConfig, tmp_path: Path) -> AppConfig:
    return with_overrides(local_config, [f"storage.root={tmp_path / 'delta'}", *_SETTINGS])


def _snapshot(spark: SparkSession, config: AppConfig) -> dict[str, list[tuple]]:
    """Every table's rows, without the columns a retry may legitimately rewrite (none are expected to)."""
    return {
        name: sorted(map(tuple, spark.read.format("delta").load(config.table_path(name)).collect()), key=repr)
        for name in TABLES
    }


def _versions(spark: SparkSession, config: AppConfig) -> dict[str, int]:
    from delta.tables import DeltaTable

    versions = {}
    for name in TABLES:
        latest = DeltaTable.forPath(spark, config.table_path(name)).history(1).first()
        assert latest is not None
        versions[name] = latest["version"]
    return versions


def _assert_signals_equal_recomputation(spark: SparkSession, config: AppConfig) -> None:
    ticks = spark.read.format("delta").load(config.table_path("ticks"))
    expected = compute_signals(ticks, config.signals.sma_short, config.signals.sma_long)
    actual = spark.read.format("delta").load(config.table_path("signals")).select(*SIGNAL_COLUMNS)
    assert_approx_df_equality(actual, expected, precision=1e-9, ignore_row_order=True, ignore_nullable=True)


def test_the_same_batch_id_twice_writes_nothing_twice(spark: SparkSession, config: AppConfig) -> None:
    ensure_tables(spark, config)
    first = _records(spark, [("AAA", _tick("AAA", m)) for m in range(8)] + [("BBB", _tick("BBB", 0))], 0)
    processor = SignalBatchProcessor(spark, config, checkpoint="unused", app_id="test-app")
    processor(first, 0)
    after_first = _snapshot(spark, config)
    versions = _versions(spark, config)
    assert len(after_first["ticks"]) == 9 and len(after_first["signals"]) == 9

    # A new processor (a restarted driver) replaying batch 0: every write is skipped or identical.
    replay = SignalBatchProcessor(spark, config, checkpoint="unused", app_id="test-app")
    replay(first, 0)
    assert _snapshot(spark, config) == after_first
    assert _versions(spark, config) == versions

    # Batch 1: a late tick (corrects later rows), a duplicate, a conflicting copy, a too-late tick, a new symbol.
    second = _records(
        spark,
        [
            ("AAA", _tick("AAA", 8)),
            ("AAA", _tick("AAA", 3.5)),
            ("AAA", _tick("AAA", 2)),
            ("AAA", _tick("AAA", 5, close=1.0)),
            ("CCC", _tick("CCC", 1)),
        ],
        9,
    )
    replay(second, 1)
    metrics = spark.read.format("delta").load(config.table_path("pipeline_metrics")).where("batch_id = 1").first()
    assert metrics is not None
    assert (metrics.records_read, metrics.ticks_written, metrics.duplicates) == (5, 3, 1)
    assert metrics.quarantined_by_reason == {"conflicting_duplicate": 1}
    revised = spark.read.format("delta").load(config.table_path("signals")).where("revision >= 1")
    assert metrics.signals_corrected == revised.count() > 0  # AAA's rows after minute 3.5
    after_second = _snapshot(spark, config)
    replay(second, 1)
    assert _snapshot(spark, config) == after_second
    _assert_signals_equal_recomputation(spark, config)


def _crash_batches(spark: SparkSession) -> list[DataFrame]:
    return [
        _records(spark, [("AAA", _tick("AAA", m)) for m in range(10)], 0),
        _records(spark, [("AAA", _tick("AAA", 4.5)), ("AAA", _tick("AAA", 10))], 10),
    ]


@pytest.fixture(scope="module")
def clean(spark: SparkSession, local_config: AppConfig, tmp_path_factory: pytest.TempPathFactory) -> AppConfig:
    """The tables of one clean run of the crash test's two batches (the same for every crash point)."""
    root = tmp_path_factory.mktemp("clean-run")
    clean = with_overrides(local_config, [*_SETTINGS, f"storage.root={root / 'delta'}"])
    ensure_tables(spark, clean)
    reference = SignalBatchProcessor(spark, clean, checkpoint="unused", app_id="clean-app")
    for batch_id, batch in enumerate(_crash_batches(spark)):
        reference(batch, batch_id)
    return clean


@pytest.mark.parametrize("crash_after", ["signals_appended", "signals_merged", "state_written"])
def test_a_crash_between_the_writes_and_the_retry_give_the_tables_of_one_clean_run(
    spark: SparkSession, config: AppConfig, clean: AppConfig, crash_after: str
) -> None:
    batches = _crash_batches(spark)
    ensure_tables(spark, config)

    armed: list[bool] = []

    def crash(step: str) -> None:
        if armed and step == crash_after:
            raise RuntimeError(f"injected crash after {step}")

    crashing = SignalBatchProcessor(spark, config, checkpoint="unused", app_id="crash-app", fault_hook=crash)
    crashing(batches[0], 0)
    armed.append(True)
    with pytest.raises(RuntimeError, match="injected crash"):
        crashing(batches[1], 1)
    restarted = SignalBatchProcessor(spark, config, checkpoint="unused", app_id="crash-app")
    restarted(batches[1], 1)

    def content(cfg: AppConfig, name: str, drop: tuple[str, ...]) -> DataFrame:
        return spark.read.format("delta").load(cfg.table_path(name)).drop(*drop)

    signal_drop = ("updated_at",)
    assert_df_equality(
        content(config, "signals", signal_drop),
        content(clean, "signals", signal_drop),
        ignore_row_order=True,
        ignore_nullable=True,
    )
    metric_columns = ("batch_id", "records_read", "ticks_written", "duplicates", "signals_emitted", "signals_corrected")
    assert_df_equality(
        content(config, "pipeline_metrics", ()).select(*metric_columns),
        content(clean, "pipeline_metrics", ()).select(*metric_columns),
        ignore_row_order=True,
        ignore_nullable=True,
    )
    assert content(config, "ticks", ("ingest_time",)).count() == 12
    # The retried batch reports the corrections the crashed attempt already wrote.
    corrected = content(config, "pipeline_metrics", ()).where(F.col("batch_id") == 1).first()
    assert corrected is not None
    assert corrected.signals_corrected == content(config, "signals", ()).where("revision >= 1").count() > 0


def _micros(minute: float) -> int:
    return int((T0 + timedelta(minutes=minute)).timestamp() * 1_000_000)


def test_a_batch_reads_only_the_stored_ticks_its_new_ticks_need(spark: SparkSession, config: AppConfig) -> None:
    """Ticks after a symbol's newest stored one need its sma_long newest stored ticks, not the lateness horizon's
    worth: the read does not grow with the history. A late tick still reads back to the context start."""
    ensure_tables(spark, config)
    processor = SignalBatchProcessor(spark, config, checkpoint="unused", app_id="bounded-app")
    processor(_records(spark, [("AAA", _tick("AAA", m)) for m in range(30)], 0), 0)
    before = processor.states["AAA"].before(1)  # as batch 1 sees it

    def read(first: float, last: float, count: int) -> list[int]:
        context, _ = processor._context({"AAA": Accepted(_micros(first), _micros(last), count)}, {"AAA": before})
        return sorted(row[0] for row in context.select(F.unix_micros("event_time")).collect())

    assert read(30, 31, 2) == [_micros(m) for m in range(26, 30)]  # sma_long = 4
    # Late (lateness 10 minutes): windows from minute 25.5 on need ticks from minute 22, at least.
    assert read(25.5, 25.5, 1)[0] <= _micros(22)

    late_and_new = [("AAA", _tick("AAA", 30)), ("AAA", _tick("AAA", 25.5)), ("AAA", _tick("AAA", 31))]
    processor(_records(spark, late_and_new, 30), 1)
    processor(_records(spark, [("AAA", _tick("AAA", m)) for m in range(32, 40)], 33), 2)
    # The horizon (39 - 10) passed batch 0's newest tick (29): the context start moved, unread, to that batch's
    # tail (minute 26, the 4th newest then); a late tick just inside the horizon is recomputed from there.
    assert processor.states["AAA"].now.context_start == _micros(26)
    processor(_records(spark, [("AAA", _tick("AAA", 29.5)), ("AAA", _tick("AAA", 40))], 41), 3)
    assert spark.read.format("delta").load(config.table_path("signals")).where("revision > 0").count() > 0
    _assert_signals_equal_recomputation(spark, config)


def _newest_stored(spark: SparkSession, config: AppConfig, symbol: str) -> tuple[tuple[int, float, int], ...]:
    rows = (
        spark.read.format("delta")
        .load(config.table_path("ticks"))
        .where(F.col("symbol") == symbol)
        .select(F.unix_micros("event_time").alias("micros"), "close", "volume")
        .orderBy(F.desc("micros"))
        .limit(config.signals.sma_long)
        .collect()
    )
    return tuple((row.micros, row.close, row.volume) for row in rows)


def test_the_state_holds_each_symbols_newest_stored_ticks_so_in_order_ticks_read_no_ticks_table(
    spark: SparkSession, config: AppConfig
) -> None:
    """After every batch (in order, late, a retried one, a state without them), the state's newest ticks are the
    newest rows of `ticks`; the context of ticks after the watermark is built from them, with no Delta scan."""
    ensure_tables(spark, config)
    processor = SignalBatchProcessor(spark, config, checkpoint="unused", app_id="held-app")
    processor(_records(spark, [("AAA", _tick("AAA", m)) for m in range(3)], 0), 0)
    assert processor.states["AAA"].now.recent == _newest_stored(spark, config, "AAA")  # fewer than sma_long
    processor(_records(spark, [("AAA", _tick("AAA", m)) for m in range(3, 9)] + [("BBB", _tick("BBB", 1))], 3), 1)
    late = [("AAA", _tick("AAA", 7.5)), ("AAA", _tick("AAA", 2.5)), ("BBB", _tick("BBB", 0))]
    processor(_records(spark, late, 10), 2)
    for symbol in ("AAA", "BBB"):
        assert processor.states[symbol].now.recent == _newest_stored(spark, config, symbol)
    # The retry of batch 2 starts from the state before it, and ends with the same.
    after = processor.states["AAA"]
    processor(_records(spark, late, 10), 2)
    assert processor.states["AAA"] == after

    before = processor.states["AAA"].before(3)
    context, read_ticks = processor._context({"AAA": Accepted(_micros(9), _micros(10), 2)}, {"AAA": before})
    assert not read_ticks
    plan = context._jdf.queryExecution().optimizedPlan().toString()
    assert "delta" not in plan.lower() and "parquet" not in plan.lower(), plan
    held = sorted(
        (row.micros, row.close, row.volume)
        for row in context.select(F.unix_micros("event_time").alias("micros"), "close", "volume").collect()
    )
    assert held == sorted(_newest_stored(spark, config, "AAA"))

    # A state written before the newest ticks were kept: the next batch reads them from `ticks` once.
    processor.states["AAA"] = dataclasses.replace(
        processor.states["AAA"], now=dataclasses.replace(processor.states["AAA"].now, recent=None)
    )
    processor(_records(spark, [("AAA", _tick("AAA", 9)), ("AAA", _tick("AAA", 10))], 13), 3)
    assert processor.states["AAA"].now.recent == _newest_stored(spark, config, "AAA")
    _assert_signals_equal_recomputation(spark, config)

    # A restarted driver loads the same state from `_signal_state`.
    restarted = SignalBatchProcessor(spark, config, checkpoint="unused", app_id="held-app")
    assert restarted.states == processor.states


def _operations(spark: SparkSession, config: AppConfig, table: str) -> list[tuple[str, dict]]:
    from delta.tables import DeltaTable

    history = DeltaTable.forPath(spark, config.table_path(table)).history().orderBy("version").collect()
    return [(row.operation, dict(row.operationParameters)) for row in history]


def _files_per_date(spark: SparkSession, config: AppConfig, table: str) -> dict[str, int]:
    frame = spark.read.format("delta").load(config.table_path(table))
    files = frame.select("event_date", F.input_file_name().alias("file")).distinct()
    return {str(row.event_date): row["count"] for row in files.groupBy("event_date").count().collect()}


def test_the_job_compacts_its_settled_partitions_every_n_batches_and_changes_no_row(
    spark: SparkSession, local_config: AppConfig, tmp_path: Path
) -> None:
    """`stream.compact_every_batches`: every N batches that wrote ticks, the job OPTIMIZEs the event dates before
    the lateness horizon (and its metrics), in its own driver; the tables hold the same rows as without it."""
    day_one = [("AAA", _tick("AAA", m)) for m in range(0, 40, 10)]  # 2026-11-24 18:00..18:30
    batches = [
        day_one[:2],
        # In order after batch 0: more of 2026-11-24, then 2026-11-25 01:00 on (the horizon moves past 11-24).
        day_one[2:] + [("AAA", _tick("AAA", 420 + m)) for m in range(0, 30, 10)],
    ]
    # The hand-made records all carry KAFKA_TIME (11-25 00:00): allow the 11-25 01:00 ticks.
    ticks_after_kafka_time = ["stream.max_future_seconds=86400"]
    tables = {}
    for every in (0, 2):
        config = with_overrides(
            local_config,
            [
                f"storage.root={tmp_path / f'every-{every}'}",
                *_SETTINGS,
                f"stream.compact_every_batches={every}",
                *ticks_after_kafka_time,
            ],
        )
        ensure_tables(spark, config)
        processor = SignalBatchProcessor(spark, config, checkpoint="unused", app_id=f"compact-{every}")
        offset = 0
        for batch_id, values in enumerate(batches):
            processor(_records(spark, values, offset), batch_id)
            offset += len(values)
        tables[every] = config

    plain, compacted = tables[0], tables[2]
    for table in ("ticks", "signals"):
        optimized = [params for operation, params in _operations(spark, compacted, table) if operation == "OPTIMIZE"]
        assert len(optimized) == 1, table
        assert "2026-11-25" in optimized[0]["predicate"], optimized[0]
        assert not [op for op, _ in _operations(spark, plain, table) if op == "OPTIMIZE"], table
        # Two appends made two files for 11-24; compaction leaves one, and leaves 11-25 (within the horizon) alone.
        assert _files_per_date(spark, plain, table) == {"2026-11-24": 2, "2026-11-25": 1}, table
        assert _files_per_date(spark, compacted, table) == {"2026-11-24": 1, "2026-11-25": 1}, table
    assert "OPTIMIZE" in [op for op, _ in _operations(spark, compacted, "pipeline_metrics")]
    # The same rows in every table, compacted or not (but for the wall-clock times of the writes).
    for table in ("raw_ticks", "ticks", "ticks_quarantine", "signals"):
        assert_df_equality(
            spark.read.format("delta").load(compacted.table_path(table)).drop("ingest_time", "updated_at"),
            spark.read.format("delta").load(plain.table_path(table)).drop("ingest_time", "updated_at"),
            ignore_row_order=True,
        )
