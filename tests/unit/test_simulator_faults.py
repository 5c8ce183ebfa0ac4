"""Fault injection: every injected record is what the summary says it is (checked by an independent classifier)."""

from __future__ import annotations

import json
import math
from collections import Counter
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from simulator.cli import execute, parse_args
from simulator.engine import MemorySink
from simulator.faults import FaultRates
from simulator.messages import parse_iso_time, parse_legacy_time

KOLKATA = ZoneInfo("Asia/Kolkata")
LATENESS_MS = 3_600_000
MAX_BYTES = 4096
FAULTS = [
    "--duplicates",
    "0.03",
    "--conflicts",
    "0.02",
    "--out-of-order",
    "0.04",
    "--max-delay",
    "90",
    "--too-late",
    "0.01",
    "--malformed",
    "0.05",
]


def classify(records: list[tuple[bytes, bytes]]) -> Counter:
    """What a consumer applying docs/design.md would conclude, record by record, in arrival order."""
    counts: Counter = Counter()
    first: dict[tuple[str, int], bytes] = {}
    latest: dict[str, int] = {}
    for key, value in records:
        if len(value) > MAX_BYTES:
            counts["oversized"] += 1
            continue
        try:
            record = json.loads(value)
        except ValueError:
            counts["not_json"] += 1
            continue
        if record.get("v", 1) != 1:
            counts["unknown_version"] += 1
            continue
        names = ("symbol", "ts", "close", "volume") if "v" in record else ("symbol", "Date-Time", "Close", "Volume")
        if any(name not in record for name in names):
            counts["missing_field"] += 1
            continue
        symbol, stamp, close, volume = (record[name] for name in names)
        if not isinstance(close, (int, float)) or not isinstance(volume, int):
            counts["bad_type"] += 1
            continue
        if not math.isfinite(close):
            counts["non_finite"] += 1
            continue
        if close <= 0:
            counts["non_positive_price"] += 1
            continue
        assert key == symbol.encode()
        ts = parse_iso_time(stamp) if "v" in record else parse_legacy_time(stamp, KOLKATA)
        if ts < latest.get(symbol, ts) - LATENESS_MS:
            counts["too_late"] += 1
            continue
        if (symbol, ts) in first:
            counts["duplicates" if first[(symbol, ts)] == value else "conflicts"] += 1
            continue
        if ts < latest.get(symbol, ts):
            counts["out_of_order"] += 1
        first[(symbol, ts)] = value
        latest[symbol] = max(latest.get(symbol, ts), ts)
        counts["clean"] += 1
    return counts


def run_dry(*argv: str) -> tuple[dict, list[tuple[bytes, bytes]]]:
    args, config = parse_args(["run", "--quiet", "--speed", "max", *argv])
    sink = MemorySink()
    return execute(args, config, sink=sink), sink.records


@pytest.mark.parametrize("fmt", ["v1", "legacy"])
def test_fault_counts_match_what_was_produced(fmt: str) -> None:
    summary, records = run_dry("--count", "30000", "--seed", "42", "--symbols", "50", "--format", fmt, *FAULTS)
    faults = summary["faults"]
    observed = classify(records)
    assert observed["clean"] == summary["ticks"] == 30_000
    for kind in ("duplicates", "conflicts", "out_of_order", "too_late"):
        assert observed[kind] == faults[kind], kind
    for kind, count in faults["malformed"].items():
        assert observed[kind] == count, kind
        assert count > 0, kind  # every kind occurs at these rates
    expected = summary["expected"]
    assert len(records) == summary["messages"] == expected["ticks"] + expected["duplicates"] + expected["quarantined"]
    # Rates land near the requested probabilities (binomial, 30k trials).
    assert faults["duplicates"] == pytest.approx(900, rel=0.2)
    assert sum(faults["malformed"].values()) == pytest.approx(1500, rel=0.2)


def test_faults_are_reproducible_and_do_not_change_the_clean_ticks() -> None:
    _, plain = run_dry("--count", "5000", "--seed", "8")
    summary_a, faulty_a = run_dry("--count", "5000", "--seed", "8", *FAULTS)
    summary_b, faulty_b = run_dry("--count", "5000", "--seed", "8", *FAULTS)
    assert faulty_a == faulty_b and summary_a["faults"] == summary_b["faults"]
    plain_values = {value for _, value in plain}
    delivered = [value for _, value in faulty_a if value in plain_values]
    assert set(delivered) == plain_values  # every clean tick is there, unchanged


def test_paced_and_unpaced_runs_are_byte_identical() -> None:
    _, fast = run_dry("--count", "400", "--seed", "5", "--symbols", "4", "--interval", "0.1", *FAULTS)
    args, config = parse_args(
        [
            "run",
            "--quiet",
            "--count",
            "400",
            "--seed",
            "5",
            "--symbols",
            "4",
            "--interval",
            "0.1",
            "--speed",
            "100",
            *FAULTS,
        ]
    )
    sink = MemorySink()
    execute(args, config, sink=sink)
    assert sink.records == fast


def test_rates_are_validated() -> None:
    with pytest.raises(ValueError, match="probability"):
        FaultRates(duplicates=1.5)
    with pytest.raises(ValueError, match="allowed lateness"):
        FaultRates(out_of_order=0.1, max_delay_ms=3_600_000, lateness_ms=3_600_000)
    assert not FaultRates().active and FaultRates(malformed=0.1).active


def test_oversized_and_not_json_records_really_are() -> None:
    summary, records = run_dry("--count", "2000", "--seed", "3", "--malformed", "1")
    sizes = [len(value) for _, value in records]
    assert summary["faults"]["malformed"]["oversized"] == sum(size > MAX_BYTES for size in sizes) > 0
    assert max(sizes) < MAX_BYTES + 200
    assert np.sum([value.startswith(b"{") for _, value in records]) == len(records)
