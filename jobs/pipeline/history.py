"""Load a history of ticks into the job's tables as if the streaming job had processed them.

For a backfill from another system and for benchmarks that need a large history: writes `ticks`, `signals`
(the one signal definition over the whole history) and the job's per-symbol state, so the streaming job then
continues from there. The tables must be new (or hold no ticks of these symbols).
"""

from __future__ import annotations

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from jobs.pipeline.config import AppConfig
from jobs.pipeline.delta_io import ensure_tables
from jobs.pipeline.state import (
    StateSettings,
    SymbolState,
    Watermark,
    rebuild_context_starts,
    state_frame,
    ticks_of,
)
from jobs.pipeline.tables import SIGNAL_STATE, SIGNALS, TICKS
from jobs.pipeline.transforms.batch import newest_ticks as newest_ticks_of
from jobs.pipeline.transforms.parse import utc_date
from jobs.pipeline.transforms.signals import compute_signals

HISTORY_TOPIC = "history"
# The state rows of a history belong to no micro-batch.
HISTORY_BATCH_ID = -1


def seed_history(spark: SparkSession, config: AppConfig, ticks: DataFrame) -> int:
    """Write `ticks` (symbol, event_time, close, volume) with their signals and state; returns the tick count.

    Each tick gets the Kafka coordinates (topic "history", partition -1, offset = its position) so every stored
    tick keeps a unique origin; event times are truncated to milliseconds as the parser does.
    """
    ensure_tables(spark, config)
    signals = config.signals
    prepared = (
        ticks.select(
            "symbol",
            F.timestamp_millis(F.unix_millis("event_time")).alias("event_time"),
            F.col("close").cast("double").alias("close"),
            F.col("volume").cast("long").alias("volume"),
        )
        .withColumn("offset", F.monotonically_increasing_id())
        .persist()
    )
    try:
        stored = prepared.select(
            "symbol",
            "event_time",
            "close",
            "volume",
            F.lit("v1").alias("message_format"),
            F.lit(HISTORY_TOPIC).alias("topic"),
            F.lit(-1).alias("partition"),
            "offset",
            F.current_timestamp().alias("ingest_time"),
            utc_date(F.col("event_time")).alias("event_date"),
        )
        stored.select(*TICKS.schema.fieldNames()).write.format("delta").mode("append").save(
            config.table_path(TICKS.name)
        )
        rows = compute_signals(
            prepared.select("symbol", "event_time", "close", "volume"), signals.sma_short, signals.sma_long
        )
        rows.select(
            *[c for c in SIGNALS.schema.fieldNames() if c not in {"revision", "updated_at", "batch_id", "event_date"}],
            F.lit(0).alias("revision"),
            F.current_timestamp().alias("updated_at"),
            F.lit(HISTORY_BATCH_ID).cast("long").alias("batch_id"),
            utc_date(F.col("event_time")).alias("event_date"),
        ).select(*SIGNALS.schema.fieldNames()).write.format("delta").mode("append").save(
            config.table_path(SIGNALS.name)
        )
        # Each symbol's sma_long newest ticks, newest first: its watermark, tail and held ticks, as a batch leaves them.
        newest = newest_ticks_of(prepared, signals.sma_long).collect()
        count = prepared.count()
    finally:
        prepared.unpersist()
    settings = StateSettings.of(signals)
    states = {}
    for row in newest:
        recent = ticks_of(row.ticks)
        now = Watermark(last=recent[0][0], tail=recent[-1][0], recent=recent)
        states[row.symbol] = SymbolState(now, Watermark(), HISTORY_BATCH_ID)
    states = rebuild_context_starts(
        spark, spark.read.format("delta").load(config.table_path(TICKS.name)), states, settings
    )
    state_frame(spark, states, settings).write.format("delta").mode("overwrite").option("overwriteSchema", "true").save(
        config.table_path(SIGNAL_STATE.name)
    )
    return count
