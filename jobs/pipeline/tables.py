"""The Delta tables the pipeline writes: names, schemas and partition columns, defined once.

Every writer, the Glue registration and the docs take their columns from here.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import types as T


@dataclass(frozen=True)
class TableSpec:
    name: str
    schema: T.StructType
    partition_by: tuple[str, ...]
    description: str


def _fields(*fields: tuple[str, T.DataType, bool]) -> T.StructType:
    return T.StructType([T.StructField(name, data_type, nullable) for name, data_type, nullable in fields])


_KAFKA_COORDINATES = (
    ("topic", T.StringType(), False),
    ("partition", T.IntegerType(), False),
    ("offset", T.LongType(), False),
)

# The shape of a Kafka record as the job sees it before parsing (also the input of jobs.pipeline.transforms.parse).
KAFKA_RECORD_SCHEMA = _fields(
    ("kafka_key", T.StringType(), True),
    ("value", T.StringType(), True),
    *_KAFKA_COORDINATES,
    ("kafka_timestamp", T.TimestampType(), True),
    ("ingest_time", T.TimestampType(), False),
)

RAW_TICKS = TableSpec(
    name="raw_ticks",
    schema=_fields(
        ("kafka_key", T.StringType(), True),
        ("value", T.StringType(), True),
        *_KAFKA_COORDINATES,
        ("kafka_timestamp", T.TimestampType(), True),
        ("ingest_time", T.TimestampType(), False),
        ("ingest_date", T.DateType(), False),
    ),
    partition_by=("ingest_date",),
    description="Every Kafka record as received (audit and replay), append-only.",
)

TICKS = TableSpec(
    name="ticks",
    schema=_fields(
        ("symbol", T.StringType(), False),
        ("event_time", T.TimestampType(), False),
        ("close", T.DoubleType(), False),
        ("volume", T.LongType(), False),
        ("message_format", T.StringType(), False),
        *_KAFKA_COORDINATES,
        ("ingest_time", T.TimestampType(), False),
        ("event_date", T.DateType(), False),
    ),
    partition_by=("event_date",),
    description="Parsed, validated ticks, unique on (symbol, event_time); the first by Kafka offset wins.",
)

TICKS_QUARANTINE = TableSpec(
    name="ticks_quarantine",
    schema=_fields(
        ("reason", T.StringType(), False),
        ("detail", T.StringType(), True),
        ("kafka_key", T.StringType(), True),
        ("value", T.StringType(), True),
        *_KAFKA_COORDINATES,
        ("kafka_timestamp", T.TimestampType(), True),
        ("symbol", T.StringType(), True),
        ("event_time", T.TimestampType(), True),
        ("ingest_time", T.TimestampType(), False),
        ("ingest_date", T.DateType(), False),
    ),
    partition_by=("ingest_date",),
    description="Every rejected record with its reason code, raw value and Kafka coordinates.",
)

SIGNALS = TableSpec(
    name="signals",
    schema=_fields(
        ("symbol", T.StringType(), False),
        ("event_time", T.TimestampType(), False),
        ("close", T.DoubleType(), False),
        ("volume", T.LongType(), False),
        ("sma_short", T.DoubleType(), True),
        ("sma_long", T.DoubleType(), True),
        ("prev_volume", T.LongType(), True),
        ("signal", T.StringType(), False),
        ("crossover", T.StringType(), True),
        ("revision", T.IntegerType(), False),
        ("updated_at", T.TimestampType(), False),
        ("batch_id", T.LongType(), False),
        ("event_date", T.DateType(), False),
    ),
    partition_by=("event_date",),
    description=(
        "One row per tick: SMA short/long, previous volume, Buy/Sell/Hold, crossover. revision 0 is the first "
        "emission; each correction by a late tick increments it."
    ),
)

PIPELINE_METRICS = TableSpec(
    name="pipeline_metrics",
    schema=_fields(
        ("batch_id", T.LongType(), False),
        ("batch_started_at", T.TimestampType(), False),
        ("records_read", T.LongType(), False),
        ("ticks_written", T.LongType(), False),
        ("quarantined", T.LongType(), False),
        ("quarantined_by_reason", T.MapType(T.StringType(), T.LongType()), False),
        ("duplicates", T.LongType(), False),
        ("signals_emitted", T.LongType(), False),
        ("signals_corrected", T.LongType(), False),
        ("batch_duration_ms", T.LongType(), False),
        ("max_event_time_lag_ms", T.LongType(), True),
    ),
    partition_by=(),
    description="One row per micro-batch: counts that reconcile (records_read = ticks + quarantined + duplicates).",
)

# The newest stored ticks of a symbol in the state (times as epoch micros).
_TICK_LIST = T.ArrayType(
    _fields(("event_micros", T.LongType(), True), ("close", T.DoubleType(), True), ("volume", T.LongType(), True))
)

# Internal bookkeeping of the streaming job (not registered in Glue): per symbol, the newest event time seen and
# where the context needed to recompute late ticks starts, with the settings it was built for. Bounded: one row
# per symbol; rewritten whole by every batch (idempotently, like the appends).
SIGNAL_STATE = TableSpec(
    name="_signal_state",
    schema=_fields(
        ("symbol", T.StringType(), False),
        ("last_event_time", T.TimestampType(), False),
        ("previous_last_event_time", T.TimestampType(), True),
        ("context_start_time", T.TimestampType(), True),
        ("previous_context_start_time", T.TimestampType(), True),
        ("batch_id", T.LongType(), False),
        ("sma_short", T.IntegerType(), True),
        ("sma_long", T.IntegerType(), True),
        ("allowed_lateness_seconds", T.LongType(), True),
        ("tail_time", T.TimestampType(), True),
        ("previous_tail_time", T.TimestampType(), True),
        ("mark_last_time", T.TimestampType(), True),
        ("previous_mark_last_time", T.TimestampType(), True),
        ("mark_tail_time", T.TimestampType(), True),
        ("previous_mark_tail_time", T.TimestampType(), True),
        ("recent_ticks", _TICK_LIST, True),
        ("previous_recent_ticks", _TICK_LIST, True),
    ),
    partition_by=(),
    description="Per-symbol watermark and the bounds of a recomputation's stored ticks, with the settings they "
    "hold for (internal).",
)

PUBLIC_TABLES: tuple[TableSpec, ...] = (RAW_TICKS, TICKS, TICKS_QUARANTINE, SIGNALS, PIPELINE_METRICS)
ALL_TABLES: tuple[TableSpec, ...] = (*PUBLIC_TABLES, SIGNAL_STATE)

# Reason codes of ticks_quarantine, in the order the checks run.
REJECT_REASONS: tuple[str, ...] = (
    "oversized",
    "not_json",
    "unknown_version",
    "missing_field",
    "bad_type",
    "bad_timestamp",
    "future_timestamp",
    "bad_symbol",
    "non_finite",
    "non_positive_price",
    "price_out_of_range",
    "negative_volume",
    "conflicting_duplicate",
    "too_late",
)
