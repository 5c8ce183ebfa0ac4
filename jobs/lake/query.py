"""Run Athena SQL locally: the Delta tables and the sql/ views on an embedded DuckDB (default) or on Trino.

    python -m jobs.query --config conf/local.yaml "SELECT * FROM v_latest_signals ORDER BY symbol"
    python -m jobs.query --format csv "SELECT * FROM v_signals WHERE symbol = 'SYM001'" > sym001.csv
    python -m jobs.query --engine trino "SELECT * FROM v_latest_signals ORDER BY symbol"

Two engines, one output. `--engine duckdb` (the default) needs no server: it is described below.
`--engine trino` sends the query unchanged to a Trino server (`make up TRINO=1`), Athena's own engine,
which reads the tables registered in Glue (`python -m jobs.catalog sync`) and the views deployed there
(`python -m jobs.athena deploy --engine trino`); see jobs.lake.trino.

The Delta tables under storage.root (a local path, or S3 through s3.endpoint) are read offline with
deltalake and registered under their table names; every view in sql/ is translated from Trino to DuckDB
with sqlglot at start-up and created in dependency order. A view that does not translate is an error
naming it: the local result is never that of a silently different query. Queries are Trino SQL too
(`--dialect duckdb` for DuckDB's own).

Window lengths: the views' `params` CTE must equal signals.sma_short/sma_long of the configuration, or
the runner refuses; `--substitute-windows` runs the views with the configured lengths instead.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pyarrow as pa

from jobs.lake.delta_log import error_line, open_delta_table
from jobs.lake.sql_views import (
    LOCAL_DIALECT,
    SOURCE_DIALECT,
    SQL_DIR,
    ViewError,
    Windows,
    check_windows,
    load_views,
    referenced_names,
    translate_query,
    translate_view,
)
from jobs.pipeline.config import AppConfig, ConfigError, add_config_arguments, config_from_args

FORMATS = ("table", "csv", "json")
ENGINES = ("duckdb", "trino")


class QueryError(RuntimeError):
    """A query that cannot run locally; the message names the table or view at fault."""


@dataclass
class LocalEngine:
    """A DuckDB connection with the Delta tables and the sql/ views registered."""

    connection: duckdb.DuckDBPyConnection
    tables: dict[str, str] = field(default_factory=dict)  # name -> location
    missing_tables: dict[str, str] = field(default_factory=dict)  # name -> location without a Delta table
    views: list[str] = field(default_factory=list)
    unavailable_views: dict[str, str] = field(default_factory=dict)  # name -> why
    notes: list[str] = field(default_factory=list)

    def _check_available(self, sql: str, dialect: str) -> None:
        for name in sorted(referenced_names(sql, dialect)):
            if name in self.missing_tables:
                raise QueryError(f"table {name} does not exist yet at {self.missing_tables[name]}")
            if name in self.unavailable_views:
                raise QueryError(f"view {name} is not available: {self.unavailable_views[name]}")

    def query(self, sql: str, dialect: str = SOURCE_DIALECT) -> pd.DataFrame:
        """Run one query (Trino SQL unless dialect says otherwise) and return its rows."""
        self._check_available(sql, dialect)
        try:
            local_sql = sql if dialect == LOCAL_DIALECT else translate_query(sql, read=dialect)
        except ValueError as exc:
            raise QueryError(f"query: {exc}") from None
        try:
            return arrow_to_pandas(self.connection.sql(local_sql).to_arrow_table())
        except duckdb.Error as exc:
            raise QueryError(f"query failed: {exc}") from None

    def close(self) -> None:
        self.connection.close()


_NULLABLE_INTEGERS = {
    pa.int8(): pd.Int8Dtype(),
    pa.int16(): pd.Int16Dtype(),
    pa.int32(): pd.Int32Dtype(),
    pa.int64(): pd.Int64Dtype(),
}


def arrow_to_pandas(table: pa.Table) -> pd.DataFrame:
    """Rows as pandas with SQL types kept: nullable integers (not floats), dates as dates, UTC timestamps."""
    return table.to_pandas(types_mapper=_NULLABLE_INTEGERS.get, date_as_object=True)


def _config_windows(config: AppConfig) -> Windows:
    return Windows(sma_short=config.signals.sma_short, sma_long=config.signals.sma_long)


def open_local_engine(
    config: AppConfig,
    *,
    sql_dir: Path = SQL_DIR,
    substitute_windows: bool = False,
) -> LocalEngine:
    """Register the existing Delta tables and create every view; raise ViewError for a bad view."""
    from jobs.pipeline.tables import PUBLIC_TABLES

    views = load_views(sql_dir)
    windows = _config_windows(config)
    if not substitute_windows:
        check_windows(views, windows)

    connection = duckdb.connect(":memory:")
    # Delta timestamps are UTC instants; show them in UTC as Athena does.
    connection.execute("SET TimeZone = 'UTC'")
    engine = LocalEngine(connection)
    for spec in PUBLIC_TABLES:
        location = config.table_path(spec.name)
        table = open_delta_table(config, spec.name)
        if table is None:
            engine.missing_tables[spec.name] = location
            engine.notes.append(f"table {spec.name}: no Delta table at {location} (skipped)")
            continue
        connection.register(spec.name, table.to_pyarrow_dataset())
        engine.tables[spec.name] = location

    for view in views:
        blocked = sorted(
            ref for ref in view.references if ref in engine.missing_tables or ref in engine.unavailable_views
        )
        if blocked:
            engine.unavailable_views[view.name] = f"it reads {', '.join(blocked)}, which does not exist yet"
            engine.notes.append(f"view {view.name}: not created, reads missing {', '.join(blocked)}")
            continue
        statement = translate_view(view, LOCAL_DIALECT, windows if substitute_windows else None)
        try:
            connection.execute(statement)
        except duckdb.Error as exc:
            raise ViewError(f"{view.file_name}: translated view fails on DuckDB: {exc}") from None
        engine.views.append(view.name)
    return engine


def local_connection(config: AppConfig, **options: Any) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with the Delta tables and the views registered (see open_local_engine)."""
    return open_local_engine(config, **options).connection


def run_query(
    config: AppConfig, sql: str, *, dialect: str = SOURCE_DIALECT, engine_name: str = "duckdb", **options: Any
) -> pd.DataFrame:
    """Run one query against the tables and views and return its rows (engine_name: duckdb or trino)."""
    if engine_name == "trino":
        return run_trino_query(config, sql)
    engine = open_local_engine(config, **options)
    try:
        return engine.query(sql, dialect)
    finally:
        engine.close()


def run_trino_query(config: AppConfig, sql: str) -> pd.DataFrame:
    """Run one Athena query on Trino (trino.host:trino.port), in trino.catalog and glue.database."""
    from jobs.lake.trino import TrinoQueryError, connect

    engine = connect(config)
    try:
        return engine.query(sql)
    except TrinoQueryError as exc:
        raise QueryError(f"trino: {exc}") from None
    finally:
        engine.close()


def format_result(frame: pd.DataFrame, output_format: str) -> str:
    if output_format == "csv":
        # Full precision: rounding is presentation only, and CSV is data.
        return frame.to_csv(index=False, date_format="%Y-%m-%dT%H:%M:%S.%fZ", float_format="%.17g")
    if output_format == "json":
        return frame.to_json(orient="records", date_format="iso", date_unit="us", double_precision=15, indent=1) + "\n"
    return _text_table(frame) + f"({len(frame)} row{'s' if len(frame) != 1 else ''})\n"


def _text_table(frame: pd.DataFrame) -> str:
    """Plain text columns (rich, no colours): numbers right-aligned, doubles to 4 places, NULL for missing."""
    import io

    from rich import box
    from rich.console import Console
    from rich.table import Table

    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    numeric = [pd.api.types.is_numeric_dtype(frame[column]) for column in frame.columns]
    for column, is_number in zip(frame.columns, numeric, strict=True):
        table.add_column(str(column), justify="right" if is_number else "left", no_wrap=True)

    def cell(value: object) -> str:
        if value is None or (not isinstance(value, str) and pd.isna(value)):
            return "NULL"
        return f"{value:.4f}" if isinstance(value, float) else str(value)

    for row in frame.itertuples(index=False, name=None):
        table.add_row(*(cell(value) for value in row))
    buffer = io.StringIO()
    Console(file=buffer, width=10_000, color_system=None, force_terminal=False, soft_wrap=True).print(table)
    return "\n".join(line.rstrip() for line in buffer.getvalue().splitlines()).strip("\n") + "\n"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m jobs.query",
        description=(
            "Run Athena (Trino) SQL over the Delta tables and the views in sql/.\n"
            "Tables: raw_ticks, ticks, ticks_quarantine, signals, pipeline_metrics.\n"
            "Views:  v_signals, v_latest_signals, v_crossovers, v_signal_summary.\n\n"
            "Engines:\n"
            "  duckdb (default)  embedded, no server: reads the Delta tables under storage.root directly and\n"
            "                    creates the views of sql/ translated to DuckDB.\n"
            "  trino             Athena's engine: the query runs unchanged on a Trino server (make up TRINO=1,\n"
            "                    trino.host:trino.port) through the Glue catalog (catalog trino.catalog, schema\n"
            "                    glue.database): the tables `python -m jobs.catalog sync` registered and the\n"
            "                    views `python -m jobs.athena deploy --engine trino` created."
        ),
        epilog=(
            'examples: python -m jobs.query "SELECT symbol, signal FROM v_latest_signals ORDER BY symbol"\n'
            '          python -m jobs.query --engine trino --format csv "SELECT * FROM v_signals"'
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_arguments(parser)
    parser.add_argument(
        "--engine",
        choices=ENGINES,
        default="duckdb",
        help="duckdb (default): embedded, over the Delta tables and sql/ views; trino: Athena's engine on the "
        "local Trino server, through the Glue catalog and the deployed views",
    )
    parser.add_argument("sql", nargs="?", help="the query (or use --file); Trino SQL unless --dialect duckdb")
    parser.add_argument("-f", "--file", help="read the query from this file ('-' for stdin)")
    parser.add_argument("--format", choices=FORMATS, default="table", help="output: table (default), csv or json")
    parser.add_argument(
        "--dialect",
        choices=(SOURCE_DIALECT, LOCAL_DIALECT),
        default=SOURCE_DIALECT,
        help="dialect of the query: trino (Athena's, default; translated like the views) or duckdb",
    )
    parser.add_argument(
        "--substitute-windows",
        action="store_true",
        help="run the views with signals.sma_short/sma_long from the config instead of refusing when they "
        "differ from the views' params (the deployed views keep theirs)",
    )
    parser.add_argument("--list", action="store_true", help="list the registered tables and views, then exit")
    parser.add_argument("-q", "--quiet", action="store_true", help="no notes on stderr about skipped tables")
    return parser


def _read_sql(args: argparse.Namespace, parser: argparse.ArgumentParser) -> str:
    if args.file and args.sql:
        parser.error("give the query either as an argument or with --file, not both")
    if args.file:
        if args.file == "-":
            return sys.stdin.read()
        try:
            return Path(args.file).read_text()
        except (OSError, UnicodeDecodeError) as exc:
            parser.error(f"--file {args.file}: cannot read it ({getattr(exc, 'strerror', None) or exc})")
    if not args.sql:
        parser.error("no query given (pass it as an argument, with --file, or use --list)")
    return args.sql


def _main_trino(args: argparse.Namespace, sql: str | None) -> int:
    from jobs.lake.trino import TrinoQueryError, connect

    try:
        config = config_from_args(args)
        # The deployed views must be the ones of sql/: same rule as for the embedded engine.
        check_windows(load_views(SQL_DIR), _config_windows(config))
    except (ConfigError, ViewError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    engine = connect(config)
    try:
        if args.list:
            for name, kind in engine.relations().items():
                print(f"{kind:<5} {name}")
            return 0
        assert sql is not None
        frame = engine.query(sql)
    except TrinoQueryError as exc:
        print(f"error: trino: {exc}", file=sys.stderr)
        return 1
    finally:
        engine.close()
    sys.stdout.write(format_result(frame, args.format))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    sql = None if args.list else _read_sql(args, parser)
    if args.engine == "trino":
        if args.dialect != SOURCE_DIALECT:
            parser.error("--dialect duckdb needs --engine duckdb: Trino runs Athena SQL only")
        if args.substitute_windows:
            parser.error("--substitute-windows needs --engine duckdb: Trino runs the views as deployed")
        return _main_trino(args, sql)
    try:
        config = config_from_args(args)
        engine = open_local_engine(config, substitute_windows=args.substitute_windows)
    except (ConfigError, ViewError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # storage failures (S3 unreachable, corrupt log): one line, not a traceback
        print(f"error: cannot open the Delta tables: {error_line(exc)}", file=sys.stderr)
        return 1
    try:
        if not args.quiet:
            for note in engine.notes:
                print(f"note: {note}", file=sys.stderr)
        if args.list:
            for name, location in engine.tables.items():
                print(f"table {name:<18} {location}")
            for name in engine.views:
                print(f"view  {name}")
            for name, why in engine.unavailable_views.items():
                print(f"view  {name:<18} unavailable: {why}")
            return 0
        assert sql is not None
        try:
            frame = engine.query(sql, args.dialect)
        except QueryError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        sys.stdout.write(format_result(frame, args.format))
        return 0
    finally:
        engine.close()


if __name__ == "__main__":
    sys.exit(main())
