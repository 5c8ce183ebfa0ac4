"""CSV input of `replay` and the command line's error handling (no broker involved)."""

from __future__ import annotations

import json
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from simulator.cli import execute, main, parse_args
from simulator.engine import MemorySink
from simulator.messages import decode, parse_iso_time
from simulator.replay import CsvError, read_csv

KOLKATA = ZoneInfo("Asia/Kolkata")
LEGACY = """Date-Time,symbol,Close,Volume,sma_9,sma_21,signal
2025-07-19 23:30:36,AAPL1,525.6,4194,1000.66,959.04,Hold
2025-07-19 23:30:06,AAPL1,1245.22,9620,1052.88,954.19,Buy
2025-07-19 23:30:06,MSFT2,88.5,10,,,
2025-07-19 23:29:36,AAPL1,1115.43,1083,992.74,949.54,Hold
"""
V1 = """symbol,ts,close,volume
SYM002,2026-11-24T09:15:00.250Z,10.5,7
SYM001,2026-11-24T09:15:00.000Z,187.23,1200
SYM001,2026-11-24T14:45:30.000+05:30,187.3,0
"""


def write(tmp_path: Path, text: str, name: str = "ticks.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_legacy_csv_is_read_in_time_order_with_extra_columns_ignored(tmp_path: Path) -> None:
    data = read_csv(write(tmp_path, LEGACY), KOLKATA)
    assert data.format == "legacy"
    ticks = data.ticks
    assert ticks.symbols == ["AAPL1", "AAPL1", "MSFT2", "AAPL1"]  # equal times keep the file order
    assert ticks.close.tolist() == [1115.43, 1245.22, 88.5, 525.6]
    assert ticks.volume.tolist() == [1083, 9620, 10, 4194]
    assert ticks.ts_ms[0] == parse_iso_time("2025-07-19T23:29:36+05:30")


def test_v1_csv_is_read_in_time_order(tmp_path: Path) -> None:
    data = read_csv(write(tmp_path, V1), KOLKATA)
    assert data.format == "v1"
    assert data.ticks.symbols == ["SYM001", "SYM002", "SYM001"]
    assert data.ticks.ts_ms.tolist() == [
        parse_iso_time(t) for t in ("2026-11-24T09:15:00Z", "2026-11-24T09:15:00.250Z", "2026-11-24T09:15:30Z")
    ]


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        ("Date-Time,symbol,Close,Volume\n2025-07-19 23:30:36,A,1,1\n2025-07-19 23:30:66,A,1,1\n", 3, "time"),
        ("Date-Time,symbol,Close,Volume\n2025-07-19 23:30:36,A,-1,1\n", 2, "positive"),
        ("Date-Time,symbol,Close,Volume\n2025-07-19 23:30:36,A,nan,1\n", 2, "positive finite"),
        ("Date-Time,symbol,Close,Volume\n2025-07-19 23:30:36,A,abc,1\n", 2, "not a number"),
        ("Date-Time,symbol,Close,Volume\n2025-07-19 23:30:36,A,1,1.5\n", 2, "not an integer"),
        ("Date-Time,symbol,Close,Volume\n2025-07-19 23:30:36,A,1,-3\n", 2, "negative"),
        ("Date-Time,symbol,Close,Volume\n2025-07-19 23:30:36,bad sym,1,1\n", 2, "symbol"),
        ("Date-Time,symbol,Close,Volume\n2025-07-19 23:30:36,A,1\n", 2, "3 fields"),
        ("symbol,ts,close,volume\nA,2026-11-24T09:15:00,1,1\n", 2, "no offset"),
        ("time,sym,price\n1,2,3\n", 1, "neither the legacy columns"),
    ],
)
def test_bad_rows_name_the_file_line_and_reason(tmp_path: Path, text: str, line: int, reason: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(CsvError) as error:
        read_csv(path, KOLKATA)
    assert error.value.line == line
    assert reason in error.value.reason
    assert str(error.value).startswith(f"{path}:{line}: ")


def test_empty_and_missing_files(tmp_path: Path) -> None:
    with pytest.raises(CsvError, match="empty"):
        read_csv(write(tmp_path, ""), KOLKATA)
    with pytest.raises(CsvError, match="no data rows"):
        read_csv(write(tmp_path, "symbol,ts,close,volume\n"), KOLKATA)
    with pytest.raises(CsvError, match="cannot open"):
        read_csv(tmp_path / "absent.csv", KOLKATA)


def test_replay_command_rejects_a_bad_csv_before_contacting_kafka(tmp_path: Path, capsys) -> None:
    path = write(tmp_path, "Date-Time,symbol,Close,Volume\n2025-07-19 23:30:36,A,1,1\n2025-07-19 23:30:37,A,0,1\n")
    # An unreachable broker would take connect_timeout_seconds: the answer comes first, from the CSV.
    code = main(["replay", "--csv", str(path), "--bootstrap-servers", "localhost:1"])
    assert code == 2
    assert capsys.readouterr().err.strip() == f"error: {path}:3: close '0' must be a positive finite number"


def test_replay_converts_between_formats(tmp_path: Path) -> None:
    args, config = parse_args(["replay", "--csv", str(write(tmp_path, LEGACY)), "--format", "v1", "--quiet"])
    sink = MemorySink()
    summary = execute(args, config, sink=sink)
    assert summary["format"] == "v1" and summary["ticks"] == 4
    assert sink.records[0] == (
        b"AAPL1",
        b'{"v":1,"symbol":"AAPL1","ts":"2025-07-19T17:59:36.000Z","close":1115.43,"volume":1083}',
    )
    args, config = parse_args(["replay", "--csv", str(write(tmp_path, V1)), "--format", "legacy", "--quiet"])
    sink = MemorySink()
    execute(args, config, sink=sink)
    assert [decode(value, KOLKATA).ts_ms for _, value in sink.records] == [
        parse_iso_time("2026-11-24T09:15:00Z"),
        parse_iso_time("2026-11-24T09:15:00Z"),  # legacy: whole seconds
        parse_iso_time("2026-11-24T09:15:30Z"),
    ]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run", "--symbols", "AAPL,bad"], "--symbols"),
        (["run", "--rate", "1000000", "--symbols", "2"], "less than 1 ms"),
        (["run", "--start", "yesterday"], "--start"),
        (["run", "--out-of-order", "0.1", "--max-delay", "7200"], "allowed lateness"),
        (["run", "--set", "simulator.volume_tail=0.5"], "volume_tail"),
    ],
)
def test_bad_arguments_exit_2_with_a_message(argv: list[str], message: str, capsys) -> None:
    assert main([*argv, "--dry-run", "--count", "1"]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


@pytest.mark.parametrize("argv", [["--help"], ["run", "--help"], ["replay", "--help"]])
def test_every_command_has_help(argv: list[str], capsys) -> None:
    with pytest.raises(SystemExit) as done:
        main(argv)
    assert done.value.code == 0
    assert "usage: python -m simulator" in capsys.readouterr().out


def test_summary_json_and_seeded_default_start(tmp_path: Path) -> None:
    out = tmp_path / "summary.json"
    assert (
        main(
            [
                "run",
                "--dry-run",
                "--count",
                "240",
                "--seed",
                "1",
                "--quiet",
                "--speed",
                "max",
                "--summary-json",
                str(out),
            ]
        )
        == 0
    )
    summary = json.loads(out.read_text())
    assert summary["ticks"] == summary["sent"] == 240 and summary["failed"] == 0
    assert summary["first_event_time"] == "2026-01-05T03:45:00.000Z"  # 09:15 in Asia/Kolkata
    assert summary["last_event_time"] == "2026-01-05T03:45:59.750Z"  # 120 symbols, 30 s, 2 rounds


def test_duration_bounds_simulated_time() -> None:
    args, config = parse_args(
        ["run", "--duration", "1h", "--symbols", "3", "--interval", "60", "--seed", "2", "--quiet", "--speed", "max"]
    )
    sink = MemorySink()
    assert execute(args, config, sink=sink)["ticks"] == 180


def test_an_unseeded_run_prints_what_repeats_it_byte_for_byte(capsys) -> None:
    """Without a seed the run starts now with a fresh seed; the summary names both, and a run with them sends the
    same records, faults included."""
    common = ["run", "--count", "300", "--quiet", "--speed", "max", "--duplicates", "0.05", "--malformed", "0.05"]
    first = MemorySink()
    args, config = parse_args(common)
    summary = execute(args, config, sink=first)
    assert summary["seed"] is not None and summary["start"].endswith("Z")
    repeat = ["--seed", str(summary["seed"]), "--start", summary["start"]]
    again = MemorySink()
    args, config = parse_args([*common, *repeat])
    execute(args, config, sink=again)
    assert again.records == first.records and len(first.records) > 300

    # What a user reads: the printed line gives exactly those arguments.
    assert main([*common, "--dry-run"]) == 0
    printed = capsys.readouterr().out
    (hint,) = [line for line in printed.splitlines() if "to repeat this run" in line]
    seed, start = hint.split("--seed ")[1].split(" --start ")
    args, config = parse_args([*common, "--seed", seed, "--start", start.strip()])
    assert execute(args, config, sink=MemorySink())["start"] == start.strip()


@pytest.mark.parametrize(
    ("text", "seconds"), [("90", 90), ("90s", 90), ("1.5s", 1.5), ("15m", 900), ("6h", 21600), ("2d", 172800)]
)
def test_durations_in_each_unit(text: str, seconds: float) -> None:
    args, _ = parse_args(["run", "--duration", text])
    assert args.duration == seconds


@pytest.mark.parametrize("text", ["0", "0s", "-5m", "15 minutes", "2w", "m", ""])
def test_a_bad_duration_exits_2_naming_it(text: str, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "--dry-run", f"--duration={text}"])
    assert exit_info.value.code == 2
    assert f"{text!r} is not a positive duration (e.g. 90, 90s, 15m, 6h, 2d)" in capsys.readouterr().err
