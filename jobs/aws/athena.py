"""Deploy the views in sql/ to Athena, or to the local Trino that stands in for it.

    python -m jobs.athena deploy --config conf/aws.yaml [--view v_signals ...] [--dry-run]
    python -m jobs.athena deploy --engine trino      # the same statements on `make up TRINO=1`'s Trino

Each view is created or replaced with StartQueryExecution (database `glue.database`, workgroup
`athena.workgroup`, results under `athena.output_location` when set, otherwise the workgroup's), in
dependency order (v_signals before the views that read it), waiting for each to finish. A failed
statement stops the deployment with Athena's own error message and the view's file name.
Run `python -m jobs.catalog sync` first: the views read the Glue tables.

`--engine trino` sends the very same statements, in the same order, to Trino (trino.host:trino.port) in
catalog `trino.catalog` (awsdatacatalog) and schema `glue.database`; Trino stores the views in the Glue
catalog the way Athena does.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jobs.lake.sql_views import SQL_DIR, View, ViewError, Windows, check_windows, load_views
from jobs.pipeline.config import AppConfig, ConfigError, add_config_arguments, config_from_args

TERMINAL_STATES = {"SUCCEEDED", "FAILED", "CANCELLED"}


class DeployError(RuntimeError):
    """A view that Athena did not create; the message names the file and carries Athena's reason."""


@dataclass(frozen=True)
class DeployResult:
    view: str
    file_name: str
    query_execution_id: str
    state: str
    seconds: float


def start_statement(athena: Any, config: AppConfig, statement: str) -> str:
    request: dict[str, Any] = {
        "QueryString": statement,
        "QueryExecutionContext": {"Database": config.glue.database},
        "WorkGroup": config.athena.workgroup,
    }
    if config.athena.output_location:
        request["ResultConfiguration"] = {"OutputLocation": config.athena.output_location}
    return athena.start_query_execution(**request)["QueryExecutionId"]


def failure_reason(execution: dict[str, Any]) -> str:
    status = execution.get("Status", {})
    reason = status.get("StateChangeReason") or status.get("AthenaError", {}).get("ErrorMessage")
    return reason or "no reason given"


def wait_for(
    athena: Any,
    query_execution_id: str,
    timeout_seconds: float,
    *,
    poll_seconds: float = 1.0,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> dict[str, Any]:
    """Poll GetQueryExecution until the query ends; on timeout stop it and raise TimeoutError."""
    deadline = clock() + timeout_seconds
    delay = min(0.2, poll_seconds)
    while True:
        execution = athena.get_query_execution(QueryExecutionId=query_execution_id)["QueryExecution"]
        if execution["Status"]["State"] in TERMINAL_STATES:
            return execution
        if clock() >= deadline:
            athena.stop_query_execution(QueryExecutionId=query_execution_id)
            state = execution["Status"]["State"]
            raise TimeoutError(f"query {query_execution_id} still {state} after {timeout_seconds:g}s; stopped it")
        sleep(delay)
        # DDL usually ends in about a second: poll fast first, then back off to poll_seconds.
        delay = min(delay * 2, poll_seconds)


def deploy_views(
    config: AppConfig,
    views: list[View] | None = None,
    *,
    athena: Any = None,
    poll_seconds: float = 1.0,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    progress: Callable[[DeployResult], None] | None = None,
) -> list[DeployResult]:
    """Create or replace each view in order, waiting for each; DeployError on the first failure."""
    from jobs.aws.clients import aws_client

    views = load_views(SQL_DIR) if views is None else views
    check_windows(views, Windows(config.signals.sma_short, config.signals.sma_long))
    athena = athena or aws_client(config, "athena")
    results = []
    for view in views:
        started = clock()
        query_id = start_statement(athena, config, view.statement)
        try:
            execution = wait_for(
                athena,
                query_id,
                config.athena.query_timeout_seconds,
                poll_seconds=poll_seconds,
                sleep=sleep,
                clock=clock,
            )
        except TimeoutError as exc:
            raise DeployError(f"{view.file_name}: {exc}") from None
        state = execution["Status"]["State"]
        if state != "SUCCEEDED":
            raise DeployError(f"{view.file_name}: Athena query {query_id} {state}: {failure_reason(execution)}")
        result = DeployResult(view.name, view.file_name, query_id, state, clock() - started)
        if progress:
            progress(result)
        results.append(result)
    return results


def deploy_views_trino(
    config: AppConfig,
    views: list[View] | None = None,
    *,
    engine: Any = None,
    clock: Callable[[], float] = time.monotonic,
    progress: Callable[[DeployResult], None] | None = None,
) -> list[DeployResult]:
    """The statements deploy_views sends to Athena, run on Trino in order; DeployError on the first failure."""
    from jobs.lake.trino import TrinoQueryError, connect

    views = load_views(SQL_DIR) if views is None else views
    check_windows(views, Windows(config.signals.sma_short, config.signals.sma_long))
    own = engine is None
    engine = engine or connect(config)
    results = []
    try:
        for view in views:
            started = clock()
            try:
                query_id = engine.execute(view.statement)
            except TrinoQueryError as exc:
                hint = " (register the tables first: python -m jobs.catalog sync)" if "NOT_FOUND" in str(exc) else ""
                raise DeployError(f"{view.file_name}: Trino: {exc}{hint}") from None
            result = DeployResult(view.name, view.file_name, query_id, "SUCCEEDED", clock() - started)
            if progress:
                progress(result)
            results.append(result)
    finally:
        if own:
            engine.close()
    return results


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m jobs.athena",
        description="Create or replace the Athena views in sql/ (Trino SQL, deployed as written).",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    deploy = commands.add_parser(
        "deploy",
        help="create or replace every view, in dependency order, waiting for each",
        description=(
            "Create or replace every view through StartQueryExecution in glue.database, with athena.workgroup "
            "and athena.output_location; fail with Athena's error and the view's file name."
        ),
    )
    add_config_arguments(deploy)
    deploy.add_argument(
        "--view",
        dest="views",
        action="append",
        metavar="NAME",
        help="only this view and the views it reads (repeatable)",
    )
    deploy.add_argument(
        "--engine",
        choices=("athena", "trino"),
        default="athena",
        help="athena (default): StartQueryExecution; trino: the same statements on the local Trino "
        "(make up TRINO=1) in catalog trino.catalog, schema glue.database",
    )
    deploy.add_argument("--dry-run", action="store_true", help="print the statements in order, send nothing")
    deploy.add_argument("--sql-dir", default=str(SQL_DIR), help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = config_from_args(args)
        views = load_views(Path(args.sql_dir), args.views)
        if args.dry_run:
            check_windows(views, Windows(config.signals.sma_short, config.signals.sma_long))
            for view in views:
                print(f"-- {view.file_name} (database {config.glue.database}, workgroup {config.athena.workgroup})")
                print(f"{view.statement};\n")
            return 0
        deploy = deploy_views_trino if args.engine == "trino" else deploy_views
        deploy(
            config,
            views,
            progress=lambda r: print(f"{r.view:<18} {r.state} in {r.seconds:.1f}s ({r.query_execution_id})"),
        )
    except (ConfigError, ViewError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except DeployError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # AWS client errors (credentials, permissions, endpoint): one line
        print(f"error: deploy failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
