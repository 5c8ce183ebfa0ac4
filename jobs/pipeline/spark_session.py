"""The one SparkSession factory: Delta, the resolved jars, S3A, local-mode tuning, all from config."""

from __future__ import annotations

from pathlib import Path

from pyspark.sql import SparkSession

from jobs.pipeline.config import AppConfig, resolve_local_path

# Moto and MinIO accept any key pair; these are fixed placeholders, not credentials.
_TEST_ACCESS_KEY = "testing"
_TEST_SECRET_KEY = "testing"
# The JVM logs every class it cannot archive or map (signed jars, generated classes): thousands of harmless lines.
CDS_LOG_OFF = "-Xlog:cds=off -Xlog:cds+dynamic=off"


class MissingJarsError(RuntimeError):
    pass


def spark_jars(jars_dir: str) -> list[str]:
    folder = resolve_local_path(jars_dir)
    jars = sorted(str(path) for path in Path(folder).glob("*.jar"))
    if not jars:
        raise MissingJarsError(f"no jars in {folder}: run `make setup` to resolve the JVM dependencies")
    return jars


def class_archive_options(config: AppConfig) -> str | None:
    """JVM options that map the driver's class-data archive, when the profile names one and it exists.

    The JVM checks that the archive matches its own build and class path, and starts without it (silently: its
    CDS log is off) when not."""
    if not config.spark.class_archive:
        return None
    archive = resolve_local_path(config.spark.class_archive)
    if not archive.is_file():
        return None
    return f"-XX:SharedArchiveFile={archive} -Xshare:auto {CDS_LOG_OFF}"


def spark_settings(config: AppConfig) -> dict[str, str]:
    """Every Spark setting the job needs, as plain key/value pairs (also used to build spark-submit args)."""
    settings: dict[str, str] = {
        "spark.app.name": config.spark.app_name,
        "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
        "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.shuffle.partitions": str(config.spark.shuffle_partitions),
        "spark.ui.enabled": str(config.spark.ui_enabled).lower(),
        # Athena and delta-rs read the default protocol: no deletion vectors, no column mapping.
        "spark.databricks.delta.properties.defaults.enableDeletionVectors": "false",
        # Compaction runs inside the streaming job, outside the lateness horizon (see jobs.pipeline.compaction):
        # automatic compaction after a write would rewrite the files the next batch reads and merges into.
        "spark.databricks.delta.properties.defaults.autoOptimize.autoCompact": "false",
        "spark.databricks.delta.schema.autoMerge.enabled": "false",
        # A micro-batch runs ~170 generated classes (parsing, classification, signals, Delta's own queries): more
        # than the default cache of 100, so every batch compiled them all again (~1 s of a 2-core batch).
        "spark.sql.codegen.cache.maxEntries": "2000",
        # Delta's VACUUM lists a table's folders with this many tasks per listing job (default 10,000): ~70,000
        # empty tasks and ~40 s for a small table on two cores. The configured parallelism fits the cluster.
        "spark.sql.sources.parallelPartitionDiscovery.parallelism": str(config.spark.shuffle_partitions),
        "spark.hadoop.fs.s3a.impl": "org.apache.hadoop.fs.s3a.S3AFileSystem",
        "spark.hadoop.fs.s3.impl": "org.apache.hadoop.fs.s3a.S3AFileSystem",
        "spark.hadoop.fs.s3a.endpoint.region": config.s3.region,
        "spark.hadoop.fs.s3a.path.style.access": str(config.s3.path_style_access).lower(),
    }
    local = bool(config.spark.master and config.spark.master.startswith("local"))
    if local:
        settings.update(
            {
                "spark.driver.memory": config.spark.driver_memory,
                "spark.sql.adaptive.enabled": "false",
                "spark.default.parallelism": str(config.spark.shuffle_partitions),
                "spark.driver.bindAddress": "127.0.0.1",
                "spark.driver.host": "127.0.0.1",
                "spark.ui.showConsoleProgress": "false",
                # Delta rebuilds table snapshots with 50 tasks by default: far too many for one machine.
                "spark.databricks.delta.snapshotPartitions": "2",
            }
        )
    if config.spark.jars_dir:
        settings["spark.jars"] = ",".join(spark_jars(config.spark.jars_dir))
    if config.s3.endpoint:
        settings["spark.hadoop.fs.s3a.endpoint"] = config.s3.endpoint
        settings["spark.hadoop.fs.s3a.connection.ssl.enabled"] = str(config.s3.endpoint.startswith("https")).lower()
        # Fail fast against a local emulator instead of retrying for minutes.
        settings["spark.hadoop.fs.s3a.attempts.maximum"] = "3"
        settings["spark.hadoop.fs.s3a.retry.limit"] = "3"
    if config.s3.use_test_credentials:
        settings["spark.hadoop.fs.s3a.aws.credentials.provider"] = (
            "org.apache.hadoop.fs.s3a.SimpleAWSCredentialsProvider"
        )
        settings["spark.hadoop.fs.s3a.access.key"] = _TEST_ACCESS_KEY
        settings["spark.hadoop.fs.s3a.secret.key"] = _TEST_SECRET_KEY
    else:
        settings["spark.hadoop.fs.s3a.aws.credentials.provider"] = (
            "software.amazon.awssdk.auth.credentials.DefaultCredentialsProvider"
        )
    if config.s3.sse_kms_key_id:
        settings["spark.hadoop.fs.s3a.encryption.algorithm"] = "SSE-KMS"
        settings["spark.hadoop.fs.s3a.encryption.key"] = config.s3.sse_kms_key_id
    settings.update(config.spark.conf)
    archive_options = class_archive_options(config) if local else None
    if archive_options:
        # Started with the profile's own driver options, if any.
        own = settings.get("spark.driver.extraJavaOptions")
        settings["spark.driver.extraJavaOptions"] = f"{archive_options} {own}" if own else archive_options
    return settings


def build_spark(config: AppConfig) -> SparkSession:
    builder = SparkSession.builder
    if config.spark.master:
        builder = builder.master(config.spark.master)
    for key, value in spark_settings(config).items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    return spark
