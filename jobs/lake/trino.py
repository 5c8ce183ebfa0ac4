"""Athena SQL on a Trino server: the Glue catalog (moto locally) and the Delta tables on S3, as Athena reads them.

    python -m jobs.query --engine trino "SELECT * FROM v_latest_signals ORDER BY symbol"

The Trino (`make up TRINO=1`, jobs.devstack.trino) has one Delta Lake catalog, `trino.catalog` (default
`awsdatacatalog`, Athena's name) on the Glue metastore; `glue.database` is the schema. Tables are what
`python -m jobs.catalog sync` registered, views what `python -m jobs.athena deploy --engine trino` created
from sql/: queries run unchanged, nothing is translated. Rows come back as pandas with the types the
DuckDB engine gives (nullable integers, dates, UTC timestamps).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pandas as pd
import pyarrow as pa

from jobs.pipeline.config import AppConfig

USER = "market-signals"

_ARROW_TYPES: dict[str, pa.DataType] = {
    "boolean": pa.bool_(),
    "tinyint": pa.int8(),
    "smallint": pa.int16(),
    "integer": pa.int32(),
    "bigint": pa.int64(),
    "real": pa.float32(),
    "double": pa.float64(),
    "date": pa.date32(),
    "varbinary": pa.binary(),
}


class TrinoQueryError(RuntimeError):
    """A statement Trino refused or could not run; the message carries Trino's error name and text."""

    def __init__(self, message: str, error_name: str | None = None) -> None:
        super().__init__(message)
        self.error_name = error_name


def arrow_type(trino_type: str) -> pa.DataType | None:
    """The Arrow type of a Trino column type, or None to let Arrow infer it (maps, rows, decimals...)."""
    name = trino_type.strip().lower()
    if name in _ARROW_TYPES:
        return _ARROW_TYPES[name]
    if name.startswith(("varchar", "char")) or name in {"json", "uuid"}:
        return pa.string()
    if name.startswith("timestamp"):
        return pa.timestamp("us", tz="UTC") if name.endswith("with time zone") else pa.timestamp("us")
    match = re.fullmatch(r"map\((\w+), (\w+)\)", name)
    if match and match.group(1) in {"varchar"} and match.group(2) in _ARROW_TYPES:
        return pa.map_(pa.string(), _ARROW_TYPES[match.group(2)])
    return None


def _column(values: list[Any], trino_type: str) -> pa.Array:
    kind = arrow_type(trino_type)
    if kind is not None and pa.types.is_timestamp(kind) and kind.tz is not None:
        values = [value.astimezone(UTC) if isinstance(value, datetime) else value for value in values]
    if kind is not None and pa.types.is_map(kind):
        values = [list(value.items()) if isinstance(value, dict) else value for value in values]
    try:
        return pa.array(values, type=kind)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError):
        return pa.array([None if value is None else str(value) for value in values], type=pa.string())


def rows_to_frame(rows: list[list[Any]], columns: list[tuple[str, str]]) -> pd.DataFrame:
    """Trino's rows as pandas, typed like the DuckDB engine's results (see jobs.lake.query.arrow_to_pandas)."""
    from jobs.lake.query import arrow_to_pandas

    arrays = [_column([row[index] for row in rows], kind) for index, (_, kind) in enumerate(columns)]
    names = [name for name, _ in columns]
    if len(set(names)) != len(names):  # pandas keeps duplicates, Arrow tables need distinct names here
        names = [f"{name}_{index}" if names.count(name) > 1 else name for index, name in enumerate(names)]
    return arrow_to_pandas(pa.Table.from_arrays(arrays, names=names))


@dataclass
class TrinoEngine:
    """A connection to Trino in `catalog`.`schema` (Athena's catalog and the Glue database)."""

    connection: Any
    catalog: str
    schema: str

    def _run(self, sql: str) -> tuple[list[list[Any]], list[tuple[str, str]], str]:
        from trino.exceptions import TrinoQueryError as ClientQueryError
        from trino.exceptions import TrinoUserError

        cursor = self.connection.cursor()
        try:
            cursor.execute(sql)
            rows = cursor.fetchall()
        except (ClientQueryError, TrinoUserError) as exc:
            raise TrinoQueryError(f"{exc.error_name}: {exc.message}", exc.error_name) from None
        except OSError as exc:
            host = f"{self.connection.host}:{self.connection.port}"
            raise TrinoQueryError(
                f"cannot reach Trino at {host} ({type(exc).__name__}); start it with `make up TRINO=1` "
                "or set trino.host / trino.port"
            ) from None
        columns = [(column.name, column.type_code) for column in cursor.description or []]
        return rows, columns, cursor.query_id or ""

    def execute(self, statement: str) -> str:
        """Run one statement (DDL), wait until it is done and return Trino's query id."""
        try:
            return self._run(statement)[2]
        except TrinoQueryError as exc:
            raise TrinoQueryError(explain(exc, self), exc.error_name) from None

    def query(self, sql: str) -> pd.DataFrame:
        """Run one query in Athena's dialect and return its rows."""
        try:
            rows, columns, _ = self._run(sql)
        except TrinoQueryError as exc:
            raise TrinoQueryError(explain(exc, self), exc.error_name) from None
        return rows_to_frame(rows, columns)

    def relations(self) -> dict[str, str]:
        """Tables and views of the schema: name -> 'table' or 'view'."""
        rows, _, _ = self._run(
            f"SELECT table_name, table_type FROM {quote(self.catalog)}.information_schema.tables "
            f"WHERE table_schema = '{self.schema}' ORDER BY table_name"
        )
        return {name: ("view" if kind == "VIEW" else "table") for name, kind in rows}

    def close(self) -> None:
        self.connection.close()


def quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


_NO_COMMIT = re.compile(r"Metadata not found in transaction log for (\S+)")


def explain(error: TrinoQueryError, engine: TrinoEngine) -> str:
    """Trino's error, with what to do for the usual local causes."""
    message = str(error)
    no_commit = _NO_COMMIT.search(message)
    if no_commit:
        return (
            f"table {no_commit.group(1).rstrip('.')} is registered in Glue but its Delta table has no commit yet "
            "(nothing written so far): run the streaming job, then query again"
        )
    if error.error_name == "SCHEMA_NOT_FOUND":
        return f"{message} (register the tables first: python -m jobs.catalog sync)"
    if error.error_name == "TABLE_NOT_FOUND" and re.search(r"\bv_\w+", message):
        return f"{message} (deploy the views first: python -m jobs.athena deploy --engine trino)"
    return message


def connect(config: AppConfig, *, host: str | None = None, port: int | None = None) -> TrinoEngine:
    """A connection in trino.catalog and glue.database, session time zone UTC (as Athena shows times)."""
    import trino

    timeout = config.trino.query_timeout_seconds
    connection = trino.dbapi.connect(
        host=host or config.trino.host,
        port=port or config.trino.port,
        user=USER,
        catalog=config.trino.catalog,
        schema=config.glue.database,
        timezone="UTC",
        request_timeout=min(timeout, 60),
        session_properties={"query_max_run_time": f"{timeout}s"},
    )
    return TrinoEngine(connection, config.trino.catalog, config.glue.database)
