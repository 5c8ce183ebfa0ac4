"""The original system's published Athena output, replayed through Kafka in the legacy format."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from chispa import assert_approx_df_equality
from pyspark.sql import functions as F

from jobs.stream_signals import run


def test_replaying_the_reference_reproduces_its_signals(
    spark, make_config, kafka_broker, kafka_topic, produce, reference_csv: Path
) -> None:
    with open(reference_csv, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 24_000
    # Published newest first; the producer sends in time order as the original system did.
    rows.sort(key=lambda row: row["Date-Time"])
    topic = kafka_topic(partitions=3)
    produce(
        topic,
        [
            (
                row["symbol"],
                json.dumps(
                    {
                        "symbol": row["symbol"],
                        "Date-Time": row["Date-Time"],
                        "Close": float(row["Close"]),
                        "Volume": int(row["Volume"]),
                    }
                ),
            )
            for row in rows
        ],
    )
    config = make_config(
        f"kafka.bootstrap_servers={kafka_broker.address}", f"kafka.topic={topic}", "kafka.max_offsets_per_trigger=12000"
    )
    totals = run(spark, config, once=True, timeout_seconds=600)
    assert totals.ticks_written == 24_000
    assert totals.quarantined == 0

    published = (
        spark.read.option("header", True)
        .csv(str(reference_csv))
        .select(
            F.col("symbol"),
            F.to_utc_timestamp(F.to_timestamp("Date-Time"), config.stream.source_timezone).alias("event_time"),
            F.col("sma_9").cast("double").alias("sma_short"),
            F.col("sma_21").cast("double").alias("sma_long"),
            F.col("signal"),
        )
    )
    signals = (
        spark.read.format("delta")
        .load(config.table_path("signals"))
        .select("symbol", "event_time", "sma_short", "sma_long", "signal")
    )
    assert_approx_df_equality(signals, published, precision=1e-9, ignore_row_order=True, ignore_nullable=True)
