"""Every command has a `--help` that explains: it exits 0 at once, without starting anything, and every command,
subcommand and option in it has a description or help text. The commands are found, not listed: each
`jobs/<command>.py`, the simulator, the benchmarks and the dev-stack tools."""

from __future__ import annotations

import argparse
import importlib
import io
import subprocess
import sys
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
COMMANDS = sorted(
    [f"jobs.{path.stem}" for path in (REPO_ROOT / "jobs").glob("*.py") if path.stem != "__init__"]
    + [f"bench.{path.stem}" for path in (REPO_ROOT / "bench").glob("bench_*.py")]
    + ["simulator", "jobs.devstack.class_archive", "jobs.devstack.spark_cluster"]
)


def test_every_command_answers_help_at_once() -> None:
    """As a user runs them (`python -m <command> --help`), all at once to keep the test short."""
    running = {
        command: subprocess.Popen(
            [sys.executable, "-m", command, "--help"],
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for command in COMMANDS
    }
    for command, process in running.items():
        stdout, stderr = process.communicate(timeout=120)
        assert process.returncode == 0, f"{command}: {stderr[-2000:]}"
        assert stdout.startswith("usage: "), f"{command}: {stdout[:300]}"
        assert stderr == "", f"{command} wrote to stderr on --help: {stderr[-2000:]}"


def _parser_of(command: str, monkeypatch: pytest.MonkeyPatch) -> argparse.ArgumentParser:
    """The parser `command`'s main() builds, caught when it parses `--help`."""
    module = importlib.import_module("simulator.cli" if command == "simulator" else command)
    parsers: list[argparse.ArgumentParser] = []
    parse = argparse.ArgumentParser.parse_known_args

    def recording(self: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> Any:
        parsers.append(self)
        return parse(self, *args, **kwargs)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_known_args", recording)
    with pytest.raises(SystemExit) as exit_info, redirect_stdout(io.StringIO()):
        module.main(["--help"])
    assert exit_info.value.code == 0
    return parsers[0]


def _undocumented(parser: argparse.ArgumentParser, path: str) -> list[str]:
    missing = [] if (parser.description or "").strip() else [f"{path}: no description"]
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        if isinstance(action, argparse._SubParsersAction):
            for name, subparser in action.choices.items():
                missing += _undocumented(subparser, f"{path} {name}")
        elif not action.help:
            missing.append(f"{path}: {'/'.join(action.option_strings) or action.dest} has no help")
    return missing


@pytest.mark.parametrize("command", COMMANDS)
def test_every_subcommand_and_option_is_explained(command: str, monkeypatch: pytest.MonkeyPatch) -> None:
    assert _undocumented(_parser_of(command, monkeypatch), f"python -m {command}") == []
