"""The entry point: start the services, run the pipeline, show the results, stop everything it started."""

from __future__ import annotations

import json
import signal
import sys
import time
from datetime import UTC, datetime
from typing import Any

from jobs.devstack.demo.monitor import run_pipeline
from jobs.devstack.demo.plan import STATE_FILE, DemoError, build_parser, plan_from_args
from jobs.devstack.demo.processes import (
    Processes,
    create_topic,
    delete_topic,
    ensure_kafka,
    ensure_s3,
    reset_data_dir,
    stop_leftovers,
)
from jobs.devstack.demo.results import show_results
from jobs.devstack.services import ServiceError
from jobs.pipeline.config import ConfigError, is_remote, load_config


class Interrupted(BaseException):
    """Ctrl-C or SIGTERM: stop what was started, then exit 130.

    A BaseException, as KeyboardInterrupt is: the signal lands wherever the demo waits, also inside code that
    catches a poll's own errors (`except Exception`), which must not swallow it."""


def raise_interrupted(signum: int, _frame: Any) -> None:
    """The demo's SIGINT and SIGTERM handler."""
    raise Interrupted(signal.Signals(signum).name)


def main(argv: list[str] | None = None) -> int:
    from rich.console import Console

    args = build_parser().parse_args(argv)
    # Outside a terminal (CI, tests, `| tee`) rich would wrap the tables at 80 columns.
    console = Console() if sys.stdout.isatty() else Console(width=140, soft_wrap=False)
    errors = Console(stderr=True, highlight=False)
    try:
        plan = plan_from_args(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    began = time.monotonic()
    state_file = plan.data_dir / STATE_FILE
    processes = Processes(state_file)
    bootstrap = ""
    board: Any = None
    previous = {sig: signal.signal(sig, raise_interrupted) for sig in (signal.SIGINT, signal.SIGTERM)}
    code = 0
    try:
        leftovers = stop_leftovers(state_file)
        if leftovers:
            console.print(f"stopped what an interrupted earlier demo left running: {', '.join(leftovers)}")
        reset_data_dir(plan.data_dir)
        services_dir = plan.data_dir / "services"
        say = console.print
        port = plan.config.services.kafka_port if args.kafka_port is None else args.kafka_port
        bootstrap = ensure_kafka(plan.config, port, services_dir, processes, say)
        # A topic of its own per run: a reused broker may still hold the ticks of an earlier demo.
        topic = f"demo-ticks-{datetime.now(UTC):%Y%m%d%H%M%S}"
        extra = [f"kafka.bootstrap_servers={bootstrap}", f"kafka.topic={topic}"]
        plan.overrides += extra
        plan.config = load_config(args.config, plan.overrides)
        if is_remote(plan.config.storage.root):
            ensure_s3(plan.config, services_dir, processes, say)
        create_topic(plan.config)
        console.print(f"kafka: topic {topic} on {bootstrap}")
        if args.board:
            from jobs.lake.board.app import start_board

            board, note = start_board(plan.config)
            console.print(f"[bold]signal board: {board.url}[/]" + (f" ({note})" if note else ""))

        run = run_pipeline(plan, processes, console)
        results = show_results(plan, run, console)
        summary = {
            "bootstrap_servers": bootstrap,
            "topic": topic,
            "storage_root": plan.config.storage.root,
            "data_dir": str(plan.data_dir),
            **run,
            **results,
            "wall_seconds": round(time.monotonic() - began, 1),
        }
        summary_file = plan.data_dir / "demo-summary.json"
        summary_file.write_text(json.dumps(summary, indent=2, default=str) + "\n")
        console.print(f"\nsummary: {summary_file}")
        if board is not None and sys.stdin.isatty() and sys.stdout.isatty():
            console.print(f"signal board still at {board.url} with the final tables: Ctrl-C stops it")
            try:
                while True:
                    time.sleep(1)
            except Interrupted:
                pass
    except Interrupted as exc:
        console.print(f"\n[yellow]{exc}: stopping what the demo started[/]")
        code = 130
    except (DemoError, ServiceError, ConfigError) as exc:
        errors.print(f"[red]error:[/] {exc}")
        code = 1
    except Exception as exc:  # noqa: BLE001 - a demo should end with one line and the logs, not a traceback
        errors.print(f"[red]error:[/] {type(exc).__name__}: {exc}\nlogs: {plan.data_dir / 'logs'}")
        code = 1
    finally:
        # A second Ctrl-C while stopping would leave processes behind: ignore it until done.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            if board is not None:
                board.stop()
            stopped = processes.stop_all()
            if bootstrap and "kafka" not in stopped:
                delete_topic(bootstrap, plan.config.kafka.topic)
            if stopped:
                console.print(f"stopped: {', '.join(stopped)}")
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    if code == 0:
        console.print(f"demo finished in {time.monotonic() - began:.0f} s")
    return code


if __name__ == "__main__":
    sys.exit(main())
