"""Glue registration against the session's moto server, with Delta tables written by Spark to moto S3."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime

import pytest
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from jobs.aws.clients import aws_client
from jobs.aws.glue import (
    DELTA_PARAMETERS,
    CatalogError,
    build_table_input,
    hive_type,
    main,
    plan_table,
    schema_from_json,
    sync_catalog,
)
from jobs.pipeline.config import REPO_ROOT, AppConfig
from jobs.pipeline.tables import PIPELINE_METRICS, PUBLIC_TABLES, TICKS

TICKS_COLUMNS = [
    ("symbol", "string"),
    ("event_time", "timestamp"),
    ("close", "double"),
    ("volume", "bigint"),
    ("message_format", "string"),
    ("topic", "string"),
    ("partition", "int"),
    ("offset", "bigint"),
    ("ingest_time", "timestamp"),
]
METRICS_COLUMNS = [
    ("batch_id", "bigint"),
    ("batch_started_at", "timestamp"),
    ("records_read", "bigint"),
    ("ticks_written", "bigint"),
    ("quarantined", "bigint"),
    ("quarantined_by_reason", "map<string,bigint>"),
    ("duplicates", "bigint"),
    ("signals_emitted", "bigint"),
    ("signals_corrected", "bigint"),
    ("batch_duration_ms", "bigint"),
    ("max_event_time_lag_ms", "bigint"),
]


def expected_input(
    config: AppConfig, name: str, columns: list[tuple[str, str]], partitions: list[tuple[str, str]]
) -> dict:
    bucket_prefix = config.storage.root.removeprefix("s3a://")
    location = f"s3://{bucket_prefix}/{name}"
    return {
        "TableType": "EXTERNAL_TABLE",
        "Parameters": {"EXTERNAL": "TRUE", "table_type": "DELTA", "spark.sql.sources.provider": "delta"},
        "PartitionKeys": [{"Name": n, "Type": t} for n, t in partitions],
        "StorageDescriptor": {
            "Columns": [{"Name": n, "Type": t} for n, t in columns],
            "Location": location,
            "InputFormat": "org.apache.hadoop.mapred.SequenceFileInputFormat",
            "OutputFormat": "org.apache.hadoop.hive.ql.io.HiveSequenceFileOutputFormat",
            "SerdeInfo": {
                "SerializationLibrary": "org.apache.hadoop.hive.serde2.lazy.LazySimpleSerDe",
                "Parameters": {"serialization.format": "1", "path": location},
            },
        },
    }


def assert_registered(glue, config: AppConfig, name: str, expected: dict) -> dict:
    table = glue.get_table(DatabaseName=config.glue.database, Name=name)["Table"]
    assert table["TableType"] == expected["TableType"]
    assert {k: v for k, v in table["Parameters"].items() if k in DELTA_PARAMETERS} == expected["Parameters"]
    assert table["PartitionKeys"] == expected["PartitionKeys"]
    sd = table["StorageDescriptor"]
    assert [{"Name": c["Name"], "Type": c["Type"]} for c in sd["Columns"]] == expected["StorageDescriptor"]["Columns"]
    for key in ("Location", "InputFormat", "OutputFormat", "SerdeInfo"):
        assert sd[key] == expected["StorageDescriptor"][key], key
    partition_names = {k["Name"] for k in table["PartitionKeys"]}
    assert not partition_names & {c["Name"] for c in sd["Columns"]}, "a partition column is not repeated in Columns"
    return table


@pytest.fixture
def lake(make_config, spark: SparkSession) -> AppConfig:
    """A bucket in moto S3 with `ticks` and `pipeline_metrics` written by Spark through s3a://."""
    bucket = f"catalog-{uuid.uuid4().hex[:12]}"
    config = make_config(
        f"storage.root=s3a://{bucket}/market-signals/delta", f"glue.database=db_{uuid.uuid4().hex[:8]}"
    )
    aws_client(config, "s3").create_bucket(Bucket=bucket)
    at = datetime(2026, 3, 2, 9, 15, tzinfo=UTC)
    ticks = spark.createDataFrame(
        [("SYM001", at, 101.5, 1200, "v1", "stock-ticks", 0, 7, at, date(2026, 3, 2))], TICKS.schema
    )
    ticks.write.format("delta").partitionBy(*TICKS.partition_by).save(config.table_path("ticks"))
    metrics = spark.createDataFrame([(0, at, 10, 9, 1, {"not_json": 1}, 0, 9, 0, 1500, 2000)], PIPELINE_METRICS.schema)
    metrics.write.format("delta").save(config.table_path("pipeline_metrics"))
    return config


def test_sync_registers_every_table_for_athena_and_is_idempotent(lake: AppConfig, spark: SparkSession) -> None:
    glue = aws_client(lake, "glue")
    results = {r.table: r for r in sync_catalog(lake)}
    assert {name: r.action for name, r in results.items()} == {spec.name: "created" for spec in PUBLIC_TABLES}
    assert results["ticks"].schema_source == "delta log" and results["pipeline_metrics"].schema_source == "delta log"
    assert results["signals"].schema_source == "jobs.pipeline.tables"  # not written yet: its definition
    assert glue.get_database(Name=lake.glue.database)["Database"]["Name"] == lake.glue.database

    assert_registered(glue, lake, "ticks", expected_input(lake, "ticks", TICKS_COLUMNS, [("event_date", "date")]))
    assert_registered(glue, lake, "pipeline_metrics", expected_input(lake, "pipeline_metrics", METRICS_COLUMNS, []))
    signals = glue.get_table(DatabaseName=lake.glue.database, Name="signals")["Table"]
    assert [c["Name"] for c in signals["StorageDescriptor"]["Columns"]][-3:] == ["revision", "updated_at", "batch_id"]
    assert signals["PartitionKeys"] == [{"Name": "event_date", "Type": "date"}]

    before = {
        spec.name: glue.get_table(DatabaseName=lake.glue.database, Name=spec.name)["Table"] for spec in PUBLIC_TABLES
    }
    assert {r.action for r in sync_catalog(lake)} == {"unchanged"}
    after = {
        spec.name: glue.get_table(DatabaseName=lake.glue.database, Name=spec.name)["Table"] for spec in PUBLIC_TABLES
    }
    assert after == before, "a second sync changes nothing"

    # Someone else's table parameter survives an update; a new Delta column reaches Glue.
    extra = dict(before["ticks"]["Parameters"], owner_team="markets")
    table_input = {k: before["ticks"][k] for k in ("Name", "TableType", "PartitionKeys", "StorageDescriptor")}
    glue.update_table(DatabaseName=lake.glue.database, TableInput={**table_input, "Parameters": extra})
    at = datetime(2026, 3, 3, 9, 15, tzinfo=UTC)
    evolved = spark.createDataFrame(
        [("SYM002", at, 99.0, 800, "v1", "stock-ticks", 1, 8, at, date(2026, 3, 3))], TICKS.schema
    ).withColumn("source_region", F.lit("ap-south-1"))
    evolved.write.format("delta").mode("append").option("mergeSchema", "true").save(lake.table_path("ticks"))

    actions = {r.table: r.action for r in sync_catalog(lake)}
    assert actions == {**{spec.name: "unchanged" for spec in PUBLIC_TABLES}, "ticks": "updated"}
    evolved_input = expected_input(
        lake, "ticks", [*TICKS_COLUMNS, ("source_region", "string")], [("event_date", "date")]
    )
    table = assert_registered(glue, lake, "ticks", evolved_input)
    assert table["Parameters"]["owner_team"] == "markets"
    assert {r.action for r in sync_catalog(lake)} == {"unchanged"}


def test_dry_run_changes_nothing(lake: AppConfig, capsys: pytest.CaptureFixture[str]) -> None:
    glue = aws_client(lake, "glue")
    results = sync_catalog(lake, ["ticks"], dry_run=True)
    assert [(r.table, r.action) for r in results] == [("ticks", "would create")]
    with pytest.raises(glue.exceptions.EntityNotFoundException):
        glue.get_database(Name=lake.glue.database)


def test_cli_sync(lake: AppConfig, capsys: pytest.CaptureFixture[str]) -> None:
    args = [
        "sync",
        "--config", str(REPO_ROOT / "conf" / "local.yaml"),
        "--set", f"storage.root={lake.storage.root}",
        "--set", f"s3.endpoint={lake.s3.endpoint}",
        "--set", "s3.path_style_access=true",
        "--set", "s3.use_test_credentials=true",
        "--set", f"glue.database={lake.glue.database}",
        "--table", "ticks",
    ]  # fmt: skip
    assert main(args) == 0
    assert "ticks" in capsys.readouterr().out
    assert main(args) == 0
    out = capsys.readouterr().out
    assert f"Glue database {lake.glue.database}:" in out and "unchanged" in out

    assert main([*args, "--table", "nope"]) == 2
    assert "unknown table(s) nope" in capsys.readouterr().err


def test_a_local_root_is_refused_unless_allowed(make_config, capsys: pytest.CaptureFixture[str]) -> None:
    config = make_config(f"glue.database=db_{uuid.uuid4().hex[:8]}")
    with pytest.raises(CatalogError, match="is a local path: Athena can only read tables in S3"):
        sync_catalog(config)
    results = sync_catalog(config, ["signals"], allow_local=True)
    assert results[0].location == f"file://{config.table_path('signals')}"
    assert (
        main(["sync", "--set", f"storage.root={config.storage.root}", "--set", "s3.endpoint=http://127.0.0.1:1"]) == 2
    )
    assert "is a local path" in capsys.readouterr().err


# ---------------------------------------------------------------- pure parts


def test_hive_types_of_delta_types() -> None:
    assert hive_type("long") == "bigint" and hive_type("integer") == "int" and hive_type("timestamp_ntz") == "timestamp"
    map_type = {"type": "map", "keyType": "string", "valueType": "long", "valueContainsNull": True}
    assert hive_type(map_type) == "map<string,bigint>"
    assert hive_type({"type": "array", "elementType": "double", "containsNull": True}) == "array<double>"
    assert hive_type({"type": "struct", "fields": [{"name": "a", "type": "date"}]}) == "struct<a:date>"
    assert hive_type("decimal(10, 2)") == "decimal(10,2)"
    with pytest.raises(CatalogError):
        hive_type("variant")


def test_plan_compares_only_what_the_sync_sets() -> None:
    schema = schema_from_json(TICKS.schema.jsonValue(), TICKS.partition_by, "jobs.pipeline.tables")
    desired = build_table_input("ticks", "s3://b/p/ticks", schema, TICKS.description)
    existing = {
        **desired,
        "DatabaseName": "db",
        "CreateTime": datetime.now(UTC),
        "Parameters": {**desired["Parameters"], "transient_lastDdlTime": "1"},
    }
    assert plan_table(None, desired) == ("create", desired)
    assert plan_table(existing, desired) == ("unchanged", None)
    moved = build_table_input("ticks", "s3://b/other/ticks", schema, TICKS.description)
    action, update = plan_table(existing, moved)
    assert action == "update" and update["Parameters"]["transient_lastDdlTime"] == "1"
    columns = desired["StorageDescriptor"]["Columns"]
    fewer = {**existing, "StorageDescriptor": {**desired["StorageDescriptor"], "Columns": columns[:-1]}}
    assert plan_table(fewer, desired)[0] == "update"
