"""Smoke test of the whole local stack: kafka-python -> real broker -> Spark batch read -> Delta on s3a:// (moto)."""

from __future__ import annotations

import json

from chispa import assert_df_equality
from kafka import KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from jobs.aws.clients import aws_client
from jobs.devstack.services import ServiceHandle
from jobs.pipeline.config import AppConfig


def test_kafka_to_delta_on_s3a_round_trip(
    spark: SparkSession, kafka_broker: ServiceHandle, base_config: AppConfig
) -> None:
    topic = "smoke-ticks"
    admin = KafkaAdminClient(bootstrap_servers=kafka_broker.address)
    try:
        admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])
    finally:
        admin.close()
    sent = [
        {"symbol": f"SYM{index % 7:03d}", "seq": index, "close": round(100 + index * 0.25, 2)} for index in range(1000)
    ]
    producer = KafkaProducer(bootstrap_servers=kafka_broker.address, acks="all")
    try:
        for record in sent:
            producer.send(topic, key=record["symbol"].encode(), value=json.dumps(record).encode())
        producer.flush(timeout=30)
    finally:
        producer.close()

    record_schema = T.StructType(
        [
            T.StructField("symbol", T.StringType()),
            T.StructField("seq", T.LongType()),
            T.StructField("close", T.DoubleType()),
        ]
    )
    read = (
        spark.read.format("kafka")
        .option("kafka.bootstrap.servers", kafka_broker.address)
        .option("subscribe", topic)
        .option("startingOffsets", "earliest")
        .option("endingOffsets", "latest")
        .load()
        .select(
            F.col("key").cast("string").alias("key"),
            F.from_json(F.col("value").cast("string"), record_schema).alias("record"),
        )
        .select("key", "record.*")
    )

    bucket = "smoke-lake"
    aws_client(base_config, "s3").create_bucket(Bucket=bucket)
    table = f"s3a://{bucket}/smoke/records"
    read.write.format("delta").mode("overwrite").save(table)
    round_trip = spark.read.format("delta").load(table)

    expected = spark.createDataFrame(
        [(record["symbol"], record["symbol"], record["seq"], record["close"]) for record in sent],
        schema="key string, symbol string, seq long, close double",
    )
    assert_df_equality(round_trip, expected, ignore_row_order=True, ignore_nullable=True)
    objects = aws_client(base_config, "s3").list_objects_v2(Bucket=bucket, Prefix="smoke/records/_delta_log/")
    assert any(item["Key"].endswith("00000000000000000000.json") for item in objects.get("Contents", []))
