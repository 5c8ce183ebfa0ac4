"""The streaming job on a real broker, real Spark and Delta: exact table contents, late ticks, S3A."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pandas as pd
import pytest
from chispa import assert_approx_df_equality, assert_df_equality
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from jobs.aws.clients import aws_client
from jobs.pipeline.transforms.signals import SIGNAL_COLUMNS, compute_signals
from jobs.stream_signals import run

T0 = datetime(2026, 11, 24, 9, 0, 0, tzinfo=UTC)
IST = timezone(timedelta(hours=5, minutes=30))


def _minute(m: float) -> datetime:
    return T0 + timedelta(minutes=m)


def _close(m: float) -> float:
    return round(100 + ((m * 37) % 17) + m * 0.25, 2)


def _volume(m: float) -> int:
    return int(1000 + (m * 53) % 29)


def v1(symbol: str, m: float, close: float | None = None, volume: int | None = None) -> tuple[str, str]:
    ts = _minute(m).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    body = {
        "v": 1,
        "symbol": symbol,
        "ts": ts,
        "close": _close(m) if close is None else close,
        "volume": _volume(m) if volume is None else volume,
    }
    return symbol, json.dumps(body)


def legacy(symbol: str, m: int) -> tuple[str, str]:
    local = _minute(m).astimezone(IST).strftime("%Y-%m-%d %H:%M:%S")
    return symbol, json.dumps({"symbol": symbol, "Date-Time": local, "Close": _close(m), "Volume": _volume(m)})


def _consume(bootstrap: str, topic: str) -> list[tuple[str, dict]]:
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", consumer_timeout_ms=5000)
    try:
        return [(message.key.decode(), json.loads(message.value)) for message in consumer]
    finally:
        consumer.close()


def _table(spark: SparkSession, config, name: str) -> DataFrame:
    return spark.read.format("delta").load(config.table_path(name))


def _expected_ticks(spark: SparkSession, rows: list[tuple[str, int, str]]) -> DataFrame:
    return spark.createDataFrame(
        [(s, _minute(m).replace(tzinfo=None), _close(m), _volume(m), fmt) for s, m, fmt in rows],
        schema="symbol string, event_time timestamp, close double, volume long, message_format string",
    )


def _assert_signals_equal_recomputation(spark: SparkSession, config) -> None:
    ticks = _table(spark, config, "ticks")
    expected = compute_signals(ticks, config.signals.sma_short, config.signals.sma_long)
    actual = _table(spark, config, "signals").select(*SIGNAL_COLUMNS)
    assert_approx_df_equality(actual, expected, precision=1e-9, ignore_row_order=True, ignore_nullable=True)


def test_once_writes_every_table_exactly(spark, make_config, kafka_broker, kafka_topic, produce) -> None:
    topic, signals_topic = kafka_topic(), kafka_topic(partitions=1)
    config = make_config(
        f"kafka.bootstrap_servers={kafka_broker.address}",
        f"kafka.topic={topic}",
        "kafka.publish_signals=true",
        f"kafka.signals_topic={signals_topic}",
    )
    records = [v1("AAA", m) for m in range(30)] + [legacy("BBB", m) for m in range(25)]
    records += [
        v1("AAA", 5),  # identical re-send: counted and dropped
        v1("AAA", 6, close=_close(6) + 1),  # same key, different price: quarantined
        ("AAA", "this is not json"),
        v1("AAA", 40, close=-1.0),
        ("AAA", json.dumps({"v": 2, "symbol": "AAA", "ts": "2026-11-24T10:00:00Z", "close": 1.0, "volume": 1})),
    ]
    produce(topic, records)

    totals = run(spark, config, once=True, timeout_seconds=300)

    expected_ticks = _expected_ticks(
        spark, [("AAA", m, "v1") for m in range(30)] + [("BBB", m, "legacy") for m in range(25)]
    )
    ticks = _table(spark, config, "ticks").select("symbol", "event_time", "close", "volume", "message_format")
    assert_df_equality(ticks, expected_ticks, ignore_row_order=True, ignore_nullable=True)

    quarantine = _table(spark, config, "ticks_quarantine").select("reason", "symbol", "value")
    expected_quarantine = spark.createDataFrame(
        [
            ("conflicting_duplicate", "AAA", records[-4][1]),
            ("not_json", None, "this is not json"),
            ("non_positive_price", "AAA", records[-2][1]),
            ("unknown_version", None, records[-1][1]),
        ],
        schema="reason string, symbol string, value string",
    )
    assert_df_equality(
        quarantine.select("reason", "value"),
        expected_quarantine.select("reason", "value"),
        ignore_row_order=True,
        ignore_nullable=True,
    )

    raw = _table(spark, config, "raw_ticks")
    assert sorted(row.value for row in raw.collect()) == sorted(value for _, value in records)

    _assert_signals_equal_recomputation(spark, config)
    assert {row.revision for row in _table(spark, config, "signals").collect()} == {0}

    published = _consume(kafka_broker.address, signals_topic)
    stored = {
        (row.symbol, row.event_time.replace(tzinfo=None)): row for row in _table(spark, config, "signals").collect()
    }
    assert len(published) == len(stored) == 55
    for key, message in published:
        row = stored[
            (
                message["symbol"],
                datetime.fromisoformat(message["event_time"]).astimezone(UTC).replace(tzinfo=None),
            )
        ]
        assert key == message["symbol"]
        assert (message["signal"], message.get("crossover"), message["revision"], message["is_correction"]) == (
            row.signal,
            row.crossover,
            0,
            False,
        )
        assert message.get("sma_long") == row.sma_long

    metrics = _table(spark, config, "pipeline_metrics").collect()
    assert sum(row.records_read for row in metrics) == len(records)
    assert sum(row.ticks_written for row in metrics) == 55
    assert sum(row.duplicates for row in metrics) == 1
    by_reason: dict[str, int] = {}
    for row in metrics:
        for reason, count in row.quarantined_by_reason.items():
            by_reason[reason] = by_reason.get(reason, 0) + count
    assert by_reason == {"conflicting_duplicate": 1, "non_positive_price": 1, "not_json": 1, "unknown_version": 1}
    assert totals.records_read == len(records)
    assert all(row.records_read == row.ticks_written + row.quarantined + row.duplicates for row in metrics)


def test_late_ticks_correct_the_rows_after_them(spark, make_config, kafka_broker, kafka_topic, produce) -> None:
    topic = kafka_topic()
    config = make_config(
        f"kafka.bootstrap_servers={kafka_broker.address}",
        f"kafka.topic={topic}",
        "signals.sma_short=3",
        "signals.sma_long=5",
        "signals.allowed_lateness_seconds=900",
    )
    # Batch 1: minutes 0..29 without 10 and 20.
    produce(topic, [v1("AAA", m) for m in range(30) if m not in (10, 20)])
    run(spark, config, once=True, timeout_seconds=300)
    first = {row.event_time: row for row in _table(spark, config, "signals").collect()}
    _assert_signals_equal_recomputation(spark, config)

    # Batch 2: minute 20 is late but within 15 minutes of the newest tick (29); minute 10 is too late.
    produce(topic, [v1("AAA", 20), v1("AAA", 10)] + [v1("AAA", m) for m in range(30, 35)])
    totals = run(spark, config, once=True, timeout_seconds=300)
    _assert_signals_equal_recomputation(spark, config)
    signals = {row.event_time.replace(tzinfo=None): row for row in _table(spark, config, "signals").collect()}
    naive = lambda m: _minute(m).replace(tzinfo=None)  # noqa: E731
    assert signals[naive(20)].revision == 0
    # prev_volume of 21 and the windows of 21..24 (sma_long 5) change; 25.. keep their values.
    assert [signals[naive(m)].revision for m in range(21, 30)] == [1, 1, 1, 1, 0, 0, 0, 0, 0]
    assert all(signals[naive(m)].revision == 0 for m in range(30, 35))
    assert signals[naive(25)].batch_id == first[naive(25)].batch_id
    assert totals.signals_corrected == 4
    assert totals.signals_emitted == 6

    too_late = _table(spark, config, "ticks_quarantine").where(F.col("reason") == "too_late").collect()
    assert [(row.symbol, row.event_time.replace(tzinfo=None)) for row in too_late] == [("AAA", naive(10))]

    # The state: in-order ticks need the 5 newest (from minute 30); late ones the context start, which stays at the
    # first tick until the horizon (now 19) passes the mark (batch 1's newest, 29, whose 5 newest start at 25).
    state = _table(spark, config, "_signal_state").collect()
    times = ["last_event_time", "tail_time", "context_start_time", "mark_last_time", "mark_tail_time"]
    assert [[row[name].replace(tzinfo=None) for name in times] for row in state] == [
        [naive(34), naive(30), naive(0), naive(29), naive(25)]
    ]
    # ... and the tail's ticks themselves, newest first, as stored in `ticks`.
    stored = {
        row.event_time.replace(tzinfo=None): (row.close, row.volume) for row in _table(spark, config, "ticks").collect()
    }
    held = [(tick.event_micros, tick.close, tick.volume) for tick in state[0].recent_ticks]
    assert [micros for micros, _, _ in held] == [_utc_micros(naive(m)) for m in range(34, 29, -1)]
    assert [(close, volume) for _, close, volume in held] == [stored[naive(m)] for m in range(34, 29, -1)]
    # Batch 3: another late tick inside the horizon.
    produce(topic, [v1("AAA", 35), v1("AAA", 25.5, close=150.0, volume=5000)])
    run(spark, config, once=True, timeout_seconds=300)
    _assert_signals_equal_recomputation(spark, config)
    assert _table(spark, config, "ticks").count() == 36


def _utc_micros(naive_utc: datetime) -> int:
    return int(naive_utc.replace(tzinfo=UTC).timestamp() * 1_000_000)


@pytest.mark.parametrize("bucket", ["stream-lake"])
def test_delta_tables_on_s3a(spark, make_config, kafka_broker, kafka_topic, produce, bucket) -> None:
    topic = kafka_topic()
    aws_client(make_config(), "s3").create_bucket(Bucket=bucket)
    config = make_config(
        f"kafka.bootstrap_servers={kafka_broker.address}",
        f"kafka.topic={topic}",
        f"storage.root=s3a://{bucket}/lake",
        f"storage.checkpoint_root=s3a://{bucket}/checkpoints",
    )
    produce(topic, [v1("AAA", m) for m in range(25)])
    run(spark, config, once=True, timeout_seconds=300)
    ticks = _table(spark, config, "ticks").select("symbol", "event_time", "close", "volume", "message_format")
    assert_df_equality(
        ticks,
        _expected_ticks(spark, [("AAA", m, "v1") for m in range(25)]),
        ignore_row_order=True,
        ignore_nullable=True,
    )
    _assert_signals_equal_recomputation(spark, config)
    listed = aws_client(config, "s3").list_objects_v2(Bucket=bucket, Prefix="lake/signals/_delta_log/")
    assert listed["KeyCount"] > 0


def _view(spark: SparkSession, config, view: str, columns: tuple[str, ...] = SIGNAL_COLUMNS) -> DataFrame:
    from jobs.lake.query import run_query

    frame = run_query(config, f"SELECT {', '.join(columns)} FROM {view}", substitute_windows=True)
    if frame["event_time"].dt.tz is not None:
        frame["event_time"] = frame["event_time"].dt.tz_convert("UTC").dt.tz_localize(None)

    def plain(value):
        if pd.isna(value):
            return None
        if isinstance(value, pd.Timestamp):
            return value.to_pydatetime()
        return value.item() if hasattr(value, "item") else value

    rows = [tuple(plain(value) for value in record) for record in frame[list(columns)].itertuples(index=False)]
    return spark.createDataFrame(rows, schema=_table(spark, config, "signals").select(*columns).schema)


def test_views_over_ticks_equal_the_streamed_signals(spark, make_config, kafka_broker, kafka_topic, produce) -> None:
    """Parity: the Athena views, run locally on the job's own `ticks`, equal the job's `signals` table."""
    topic = kafka_topic()
    config = make_config(
        f"kafka.bootstrap_servers={kafka_broker.address}",
        f"kafka.topic={topic}",
        "signals.sma_short=3",
        "signals.sma_long=5",
        "signals.allowed_lateness_seconds=1200",
    )
    # Two symbols, out of order inside the first batch, late ticks in the second.
    produce(
        topic,
        [v1("AAA", m) for m in (3, 1, 0, 2, *range(4, 30)) if m not in (12, 25)]
        + [legacy("BBB", m) for m in range(0, 30, 2)],
    )
    run(spark, config, once=True, timeout_seconds=300)
    produce(topic, [v1("AAA", 25), v1("AAA", 12), legacy("BBB", 27), legacy("BBB", 31)])
    run(spark, config, once=True, timeout_seconds=300)

    signals = _table(spark, config, "signals").select(*SIGNAL_COLUMNS)
    assert_approx_df_equality(
        signals, _view(spark, config, "v_signals"), precision=1e-9, ignore_row_order=True, ignore_nullable=True
    )
    crossover_columns = ("symbol", "event_time", "crossover", "close", "volume", "sma_short", "sma_long", "signal")
    crosses = signals.where(F.col("crossover").isNotNull()).select(*crossover_columns)
    assert crosses.count() > 0
    assert_approx_df_equality(
        crosses,
        _view(spark, config, "v_crossovers", crossover_columns),
        precision=1e-9,
        ignore_row_order=True,
        ignore_nullable=True,
    )
    latest = signals.join(
        signals.groupBy("symbol").agg(F.max("event_time").alias("event_time")), on=["symbol", "event_time"], how="inner"
    ).select(*SIGNAL_COLUMNS)
    assert_approx_df_equality(
        latest, _view(spark, config, "v_latest_signals"), precision=1e-9, ignore_row_order=True, ignore_nullable=True
    )
