"""Glue catalog registration of the Delta tables, so Athena reads them natively.

    python -m jobs.catalog sync --config conf/aws.yaml [--table signals ...] [--dry-run]

One Glue database (`glue.database`) and one table per public Delta table (jobs.pipeline.tables.PUBLIC_TABLES):
EXTERNAL_TABLE, `table_type=DELTA`, an `s3://` location (the job may write through `s3a://`), and the real
columns and partition keys read from the Delta log (from jobs.pipeline.tables when the table has no data yet), because
Athena views need a Glue schema equal to the transaction log's. Create or update: a table whose definition is
already as wanted is left alone, so a second sync changes nothing.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import dataclass
from typing import Any, Literal

from jobs.lake.delta_log import delta_uri, open_delta_table
from jobs.pipeline.config import AppConfig, ConfigError, add_config_arguments, config_from_args, is_remote

# Athena's Delta reader only needs table_type and the location; Spark (EMR, Glue jobs) recognises the table by
# spark.sql.sources.provider and the `path` SerDe parameter. The formats are the placeholders Spark itself
# writes for non-Hive tables: nothing reads data through them.
DELTA_PARAMETERS = {"EXTERNAL": "TRUE", "table_type": "DELTA", "spark.sql.sources.provider": "delta"}
INPUT_FORMAT = "org.apache.hadoop.mapred.SequenceFileInputFormat"
OUTPUT_FORMAT = "org.apache.hadoop.hive.ql.io.HiveSequenceFileOutputFormat"
SERDE = "org.apache.hadoop.hive.serde2.lazy.LazySimpleSerDe"

_HIVE_PRIMITIVES = {
    "string": "string",
    "long": "bigint",
    "integer": "int",
    "short": "smallint",
    "byte": "tinyint",
    "double": "double",
    "float": "float",
    "boolean": "boolean",
    "binary": "binary",
    "date": "date",
    "timestamp": "timestamp",
    "timestamp_ntz": "timestamp",
}

log = logging.getLogger(__name__)

SyncAction = Literal["created", "updated", "unchanged", "would create", "would update"]


class CatalogError(RuntimeError):
    """A sync that cannot proceed; the message says what to change."""


def glue_location(location: str) -> str:
    """A table location as Glue and Athena expect it: s3://..., or file://... for a local root."""
    if is_remote(location):
        return delta_uri(location)
    return location if location.startswith("file://") else f"file://{location}"


# ---------------------------------------------------------------- pure: Delta schema -> Glue TableInput


def hive_type(delta_type: Any) -> str:
    """A Delta (= Spark JSON) schema type as the Hive type name Glue and Athena use."""
    if isinstance(delta_type, str):
        if delta_type in _HIVE_PRIMITIVES:
            return _HIVE_PRIMITIVES[delta_type]
        if delta_type.startswith("decimal"):
            return delta_type.replace(" ", "")
        raise CatalogError(f"no Hive type for Delta type {delta_type!r}")
    kind = delta_type.get("type")
    if kind == "map":
        return f"map<{hive_type(delta_type['keyType'])},{hive_type(delta_type['valueType'])}>"
    if kind == "array":
        return f"array<{hive_type(delta_type['elementType'])}>"
    if kind == "struct":
        fields = ",".join(f"{field['name']}:{hive_type(field['type'])}" for field in delta_type["fields"])
        return f"struct<{fields}>"
    raise CatalogError(f"no Hive type for Delta type {delta_type!r}")


@dataclass(frozen=True)
class TableSchema:
    fields: tuple[tuple[str, str], ...]  # (name, Hive type), in the table's order
    partition_columns: tuple[str, ...]
    source: Literal["delta log", "jobs.pipeline.tables"]


def schema_from_json(
    schema_json: dict[str, Any], partition_columns: list[str] | tuple[str, ...], source: Any
) -> TableSchema:
    fields = tuple((field["name"], hive_type(field["type"])) for field in schema_json["fields"])
    names = {name for name, _ in fields}
    missing = [column for column in partition_columns if column not in names]
    if missing:
        raise CatalogError(f"partition column(s) {missing} are not in the schema")
    return TableSchema(fields, tuple(partition_columns), source)


def build_table_input(name: str, location: str, schema: TableSchema, description: str = "") -> dict[str, Any]:
    """The Glue TableInput of one Delta table.

    Partition columns are PartitionKeys only (Hive convention, which Glue and Athena follow: Columns +
    PartitionKeys is the whole schema, never a column twice).
    """
    partitions = set(schema.partition_columns)
    by_name = dict(schema.fields)
    table_input: dict[str, Any] = {
        "Name": name,
        "TableType": "EXTERNAL_TABLE",
        "Parameters": dict(DELTA_PARAMETERS),
        "PartitionKeys": [{"Name": column, "Type": by_name[column]} for column in schema.partition_columns],
        "StorageDescriptor": {
            "Columns": [{"Name": column, "Type": kind} for column, kind in schema.fields if column not in partitions],
            "Location": location,
            "InputFormat": INPUT_FORMAT,
            "OutputFormat": OUTPUT_FORMAT,
            "Compressed": False,
            "SerdeInfo": {"SerializationLibrary": SERDE, "Parameters": {"serialization.format": "1", "path": location}},
        },
    }
    if description:
        table_input["Description"] = description
    return table_input


def _matches(existing: Any, desired: Any) -> bool:
    """True when `existing` has every value `desired` sets (extra keys a catalog adds are ignored)."""
    if isinstance(desired, dict):
        return isinstance(existing, dict) and all(
            key in existing and _matches(existing[key], value) for key, value in desired.items()
        )
    if isinstance(desired, list):
        return (
            isinstance(existing, list)
            and len(existing) == len(desired)
            and all(_matches(have, want) for have, want in zip(existing, desired, strict=True))
        )
    return existing == desired


def plan_table(existing: dict[str, Any] | None, desired: dict[str, Any]) -> tuple[str, dict[str, Any] | None]:
    """("create"|"update"|"unchanged", the TableInput to send). Parameters others added are kept on update."""
    if existing is None:
        return "create", desired
    if _matches(existing, desired):
        return "unchanged", None
    merged = dict(desired)
    merged["Parameters"] = {**(existing.get("Parameters") or {}), **desired["Parameters"]}
    return "update", merged


# ---------------------------------------------------------------- I/O edges


def table_schema(config: AppConfig, spec: Any) -> TableSchema:
    """The schema of a Delta table from its log, or from jobs.pipeline.tables when the table does not exist yet."""
    table = open_delta_table(config, spec.name)
    if table is not None:
        return schema_from_json(json.loads(table.schema().to_json()), table.metadata().partition_columns, "delta log")
    return schema_from_json(spec.schema.jsonValue(), spec.partition_by, "jobs.pipeline.tables")


@dataclass(frozen=True)
class SyncResult:
    table: str
    action: SyncAction
    location: str
    schema_source: str

    def __str__(self) -> str:
        return f"{self.table:<18} {self.action:<13} {self.location}  (columns from {self.schema_source})"


def _ensure_database(glue: Any, database: str, dry_run: bool) -> str:
    try:
        glue.get_database(Name=database)
        return "exists"
    except glue.exceptions.EntityNotFoundException:
        if dry_run:
            return "would create"
        glue.create_database(
            DatabaseInput={"Name": database, "Description": "market-signals Delta tables (Athena reads them natively)"}
        )
        return "created"


def _existing_table(glue: Any, database: str, name: str) -> dict[str, Any] | None:
    try:
        return glue.get_table(DatabaseName=database, Name=name)["Table"]
    except glue.exceptions.EntityNotFoundException:
        return None


def sync_catalog(
    config: AppConfig,
    tables: list[str] | None = None,
    *,
    glue: Any = None,
    dry_run: bool = False,
    allow_local: bool = False,
) -> list[SyncResult]:
    """Create or update the Glue database and tables; idempotent. The streaming job calls this too."""
    from jobs.aws.clients import aws_client
    from jobs.pipeline.tables import PUBLIC_TABLES

    if not is_remote(config.storage.root) and not allow_local:
        raise CatalogError(
            f"storage.root {config.storage.root!r} is a local path: Athena can only read tables in S3. "
            "Set storage.root to s3a://bucket/prefix (or pass --allow-local to register file:// locations anyway)"
        )
    specs = {spec.name: spec for spec in PUBLIC_TABLES}
    selected = list(specs) if not tables else tables
    unknown = [name for name in selected if name not in specs]
    if unknown:
        raise CatalogError(f"unknown table(s) {', '.join(unknown)}; known: {', '.join(specs)}")

    glue = glue or aws_client(config, "glue")
    database = config.glue.database
    log.info("Glue database %s: %s", database, _ensure_database(glue, database, dry_run))
    results = []
    for name in selected:
        spec = specs[name]
        schema = table_schema(config, spec)
        location = glue_location(config.table_path(name))
        desired = build_table_input(name, location, schema, spec.description)
        action, table_input = plan_table(_existing_table(glue, database, name), desired)
        if action == "create":
            if not dry_run:
                glue.create_table(DatabaseName=database, TableInput=table_input)
            outcome: SyncAction = "would create" if dry_run else "created"
        elif action == "update":
            if not dry_run:
                glue.update_table(DatabaseName=database, TableInput=table_input)
            outcome = "would update" if dry_run else "updated"
        else:
            outcome = "unchanged"
        results.append(SyncResult(name, outcome, location, schema.source))
    return results


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m jobs.catalog",
        description=(
            "Register the Delta tables in the Glue Data Catalog so Athena reads them natively "
            "(table_type=DELTA, s3:// locations, columns and partition keys from the Delta log). "
            "Create or update; a second run changes nothing."
        ),
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sync = commands.add_parser(
        "sync",
        help="create or update the Glue database and tables",
        description=(
            "Create or update glue.database and one Glue table per Delta table (table_type=DELTA, its s3:// "
            "location, columns and partition keys from the Delta log); a table already up to date is left alone."
        ),
    )
    add_config_arguments(sync)
    sync.add_argument(
        "--table",
        dest="tables",
        action="append",
        metavar="NAME",
        help="only this table (repeatable); default: raw_ticks, ticks, ticks_quarantine, signals, pipeline_metrics",
    )
    sync.add_argument("--dry-run", action="store_true", help="show what would change, change nothing")
    sync.add_argument(
        "--allow-local",
        action="store_true",
        help="register file:// locations when storage.root is a local path (Athena cannot read them; for trials)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = config_from_args(args)
        results = sync_catalog(config, args.tables, dry_run=args.dry_run, allow_local=args.allow_local)
    except (ConfigError, CatalogError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # boto3/deltalake failures: one line, not a traceback
        print(f"error: catalog sync failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(f"Glue database {config.glue.database}:")
    for result in results:
        print(f"  {result}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
