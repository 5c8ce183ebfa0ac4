"""A history loaded with seed_history: the job continues from it as if it had processed those ticks itself."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from chispa import assert_approx_df_equality
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from jobs.pipeline.config import AppConfig, with_overrides
from jobs.pipeline.history import seed_history
from jobs.pipeline.micro_batch import Accepted, SignalBatchProcessor
from jobs.pipeline.tables import KAFKA_RECORD_SCHEMA
from jobs.pipeline.transforms.signals import SIGNAL_COLUMNS, compute_signals

T0 = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)


def test_the_job_continues_a_seeded_history_without_reading_it_back(
    spark: SparkSession, local_config: AppConfig, tmp_path: Path
) -> None:
    config = with_overrides(local_config, [f"storage.root={tmp_path / 'delta'}", "stream.compact_every_batches=0"])
    history = spark.createDataFrame(
        [
            (symbol, T0 + timedelta(minutes=m), 100.0 + (m * 7) % 5, 1000 + m)
            for symbol in ("AAA", "BBB")
            for m in range(40)
        ],
        "symbol string, event_time timestamp, close double, volume long",
    )
    assert seed_history(spark, config, history) == 80

    processor = SignalBatchProcessor(spark, config, checkpoint="unused", app_id="after-history")
    held = processor.states["AAA"].now.recent
    assert held is not None and [micros for micros, _, _ in held] == [
        int((T0 + timedelta(minutes=m)).timestamp() * 1_000_000) for m in range(39, 39 - config.signals.sma_long, -1)
    ]
    # The next ticks take their context from the state: no read of `ticks`.
    context, read_ticks = processor._context(
        {"AAA": Accepted(held[0][0] + 1, held[0][0] + 1, 1)},
        {"AAA": processor.states["AAA"].before(0)},
    )
    assert not read_ticks and context.count() == config.signals.sma_long

    now = datetime.now(UTC)
    records = [
        (
            symbol,
            f'{{"v":1,"symbol":"{symbol}","ts":"{(T0 + timedelta(minutes=m)).strftime("%Y-%m-%dT%H:%M:%SZ")}",'
            f'"close":{101.5 + m % 3},"volume":{2000 + int(m)}}}',
            "ticks",
            0,
            i,
            now,
            now,
        )
        for i, (symbol, m) in enumerate((s, m) for s in ("AAA", "BBB") for m in (40, 41, 38.5))
    ]
    processor(spark.createDataFrame(records, KAFKA_RECORD_SCHEMA), 0)
    ticks = spark.read.format("delta").load(config.table_path("ticks"))
    quarantine = spark.read.format("delta").load(config.table_path("ticks_quarantine"))
    assert quarantine.count() == 0, [(r.reason, r.detail) for r in quarantine.collect()]
    assert ticks.count() == 86
    expected = compute_signals(ticks, config.signals.sma_short, config.signals.sma_long)
    actual = spark.read.format("delta").load(config.table_path("signals")).select(*SIGNAL_COLUMNS)
    assert_approx_df_equality(actual, expected, precision=1e-9, ignore_row_order=True, ignore_nullable=True)
    assert spark.read.format("delta").load(config.table_path("signals")).where(F.col("revision") > 0).count() > 0
