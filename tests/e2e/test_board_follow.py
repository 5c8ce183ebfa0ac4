"""The board's refresh follows Delta versions: it reads the files of new commits only, skips compactions, starts
over when a table is recreated, and works the same on S3 (moto). Real Delta tables written with deltalake."""

from __future__ import annotations

import shutil
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
from deltalake import DeltaTable, write_deltalake

from jobs.aws.clients import aws_client
from jobs.lake.board.follow import TableFollower
from jobs.lake.board.state import SIGNAL_COLUMNS, BoardState
from jobs.lake.delta_log import delta_storage_options, delta_uri
from jobs.pipeline.config import REPO_ROOT, AppConfig, load_config
from jobs.pipeline.tables import PIPELINE_METRICS, SIGNALS, TICKS_QUARANTINE
from tests.e2e.test_board import append, arrow_schema, series, signal_rows


def _config(root: Path | str, *overrides: str) -> AppConfig:
    return load_config(REPO_ROOT / "conf" / "local.yaml", [f"storage.root={root}", *overrides], environ={})


def _quarantine_rows(reason: str, offsets: range, when: datetime) -> list[dict[str, Any]]:
    return [
        {
            "reason": reason,
            "detail": None,
            "kafka_key": None,
            "value": "x",
            "topic": "stock-ticks",
            "partition": 1,
            "offset": offset,
            "kafka_timestamp": when,
            "symbol": None,
            "event_time": None,
            "ingest_time": when,
            "ingest_date": when.date(),
        }
        for offset in offsets
    ]


def _project(rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return sorted(tuple(row[c] for c in SIGNAL_COLUMNS) for row in rows)


def test_refresh_reads_only_the_files_of_new_commits(tmp_path: Path) -> None:
    config = _config(tmp_path / "delta")
    follower = TableFollower(config, "signals", SIGNAL_COLUMNS, identity_check_seconds=0)
    assert follower.refresh() is None and follower.status == "missing"

    updated = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
    closes, volumes = series(0, 40)
    rows = signal_rows("SYM001", closes, volumes, updated)
    for start in range(0, 30, 10):  # three commits
        append(tmp_path / "delta", SIGNALS, rows[start : start + 10])
    first = follower.refresh()
    assert first is not None and _project(first.to_pylist()) == _project(rows[:30])
    assert (follower.last.version, follower.last.files_read, follower.last.rows_read) == (2, 3, 30)

    append(tmp_path / "delta", SIGNALS, rows[30:32])
    new = follower.refresh()
    assert new is not None and _project(new.to_pylist()) == _project(rows[30:32])
    assert (follower.last.version, follower.last.commits, follower.last.files_read) == (3, 1, 1)

    assert follower.refresh() is None and follower.last.files_read == 0  # nothing committed: nothing read

    DeltaTable(str(tmp_path / "delta" / "signals")).optimize.compact()
    compacted = follower.refresh()
    assert compacted is not None and compacted.num_rows == 0
    assert (follower.last.version, follower.last.skipped_commits, follower.last.files_read) == (4, 1, 0)

    append(tmp_path / "delta", SIGNALS, rows[32:33])
    new = follower.refresh()
    assert new is not None and _project(new.to_pylist()) == _project(rows[32:33])
    assert follower.last.files_read == 1

    # The table is deleted and written anew (a reset of the job): the follower starts over from the new table.
    shutil.rmtree(tmp_path / "delta" / "signals")
    append(tmp_path / "delta", SIGNALS, rows[:5])
    fresh = follower.refresh()
    assert follower.last.reset and fresh is not None and _project(fresh.to_pylist()) == _project(rows[:5])


def test_quarantine_counts_stay_exact_across_compaction(tmp_path: Path) -> None:
    now = datetime.now(UTC)
    config = _config(tmp_path / "delta", "board.refresh_seconds=0.1")
    state = BoardState(config)
    append(tmp_path / "delta", TICKS_QUARANTINE, _quarantine_rows("not_json", range(0, 3), now))
    append(tmp_path / "delta", TICKS_QUARANTINE, _quarantine_rows("too_late", range(3, 5), now))
    state.refresh()
    assert state.snapshot()["quarantine"]["by_reason"] == [
        {"reason": "not_json", "records": 3},
        {"reason": "too_late", "records": 2},
    ]
    # A compaction and an append between two refreshes: the compacted file is read again, counted once.
    DeltaTable(str(tmp_path / "delta" / "ticks_quarantine")).optimize.compact()
    append(tmp_path / "delta", TICKS_QUARANTINE, _quarantine_rows("bad_type", range(5, 6), now))
    state.refresh()
    quarantine = state.snapshot()["quarantine"]
    assert quarantine["total"] == 6
    assert quarantine["by_reason"][0] == {"reason": "not_json", "records": 3}
    assert state.snapshot()["signals"]["message"].startswith("No signals table yet at ")


def test_first_read_keeps_the_newest_days(tmp_path: Path) -> None:
    updated = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
    closes, volumes = series(1, 10)
    rows = []
    for day in range(10):  # one tick per day, ten daily partitions
        row = signal_rows("SYM001", closes, volumes, updated)[day]
        when = datetime(2026, 11, 1, 9, 0, tzinfo=UTC) + timedelta(days=day)
        rows.append(dict(row, event_time=when, event_date=when.date()))
    append(tmp_path / "delta", SIGNALS, rows)
    config = _config(tmp_path / "delta", "board.initial_days=3")
    state = BoardState(config)
    state.refresh()
    assert state.signals.last.files_read == 3
    latest = state.snapshot()["signals"]["rows"]
    assert [(row["symbol"], row["event_time"]) for row in latest] == [("SYM001", "2026-11-10T09:00:00Z")]
    assert state.chart("SYM001")["ticks"] == 3


def test_board_state_on_s3(local_config: AppConfig, moto_server: Any) -> None:
    bucket = f"board-{uuid.uuid4().hex[:12]}"
    config = _config(
        f"s3a://{bucket}/lake/delta",
        f"s3.endpoint={local_config.s3.endpoint}",
        "s3.path_style_access=true",
        "s3.use_test_credentials=true",
    )
    aws_client(config, "s3").create_bucket(Bucket=bucket)
    options = {**delta_storage_options(config), "AWS_S3_ALLOW_UNSAFE_RENAME": "true"}
    uri = delta_uri(config.table_path("signals"))
    updated = datetime.now(UTC) - timedelta(hours=1)
    closes, volumes = series(2, 30)
    rows = signal_rows("SYM007", closes, volumes, updated)

    def write(part: list[dict[str, Any]]) -> None:
        table = pa.Table.from_pylist(part, schema=arrow_schema(SIGNALS))
        write_deltalake(uri, table, mode="append", partition_by=["event_date"], storage_options=options)

    write(rows[:25])
    state = BoardState(config)
    state.refresh()
    snapshot = state.snapshot()["signals"]
    assert snapshot["message"] is None and snapshot["version"] == 0
    assert [(r["symbol"], r["close"], r["signal"]) for r in snapshot["rows"]] == [
        ("SYM007", rows[24]["close"], rows[24]["signal"])
    ]
    write(rows[25:])
    state.refresh()
    assert (state.signals.last.files_read, state.signals.last.rows_read) == (1, 5)
    assert state.snapshot()["signals"]["rows"][0]["event_time"] == rows[-1]["event_time"].isoformat().replace(
        "+00:00", "Z"
    )


def test_taken_port_is_a_one_line_error(tmp_path: Path) -> None:
    import socket
    import subprocess
    import sys

    from jobs.lake.board.app import start_board

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "jobs.board", "--port", str(port), "--set", f"storage.root={tmp_path}"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 2
        assert result.stderr == (
            f"error: board: cannot listen on 127.0.0.1:{port} (Address already in use); "
            "choose another with --port or board.port (0 picks a free one)\n"
        )
        # The demo's way: the configured port is taken, so the board moves to a free one and says so.
        server, note = start_board(_config(tmp_path, f"board.port={port}"))
        try:
            assert server.port != port and note == f"port {port} is taken: the board uses {server.port}"
        finally:
            server.stop()


def test_health_totals_count_every_batch_once(tmp_path: Path) -> None:
    start = datetime.now(UTC) - timedelta(hours=1)

    def batches(ids: range) -> list[dict[str, Any]]:
        return [
            {
                "batch_id": batch,
                "batch_started_at": start + timedelta(seconds=2 * batch),
                "records_read": batch + 1,
                "ticks_written": batch,
                "quarantined": 1,
                "quarantined_by_reason": [("not_json", 1)],
                "duplicates": 0,
                "signals_emitted": batch,
                "signals_corrected": batch % 2,
                "batch_duration_ms": 1000,
                "max_event_time_lag_ms": 100 * batch,
            }
            for batch in ids
        ]

    config = _config(tmp_path / "delta")
    state = BoardState(config)
    append(tmp_path / "delta", PIPELINE_METRICS, batches(range(0, 200)))
    append(tmp_path / "delta", PIPELINE_METRICS, batches(range(200, 300)))
    state.refresh()
    # More batches than the board keeps (240): the totals still count all of them, once.
    DeltaTable(str(tmp_path / "delta" / "pipeline_metrics")).optimize.compact()
    append(tmp_path / "delta", PIPELINE_METRICS, batches(range(300, 301)))
    state.refresh()
    health = state.snapshot()["health"]
    assert health["totals"] == {
        "records_read": sum(range(1, 302)),
        "ticks_written": sum(range(301)),
        "quarantined": 301,
        "duplicates": 0,
        "signals_corrected": 150,
    }
    assert (health["batches"], health["last_batch_id"], health["lag_ms"]) == (240, 300, 30000)
    # The last 12 batches: 2 s apart, 1 s long -> 23 s; records 290..301.
    assert health["records_per_second"] == round(sum(range(290, 302)) / 23, 1)


def test_an_unreadable_table_is_reported_and_the_board_recovers_once_it_reads_again(tmp_path: Path) -> None:
    """A table that cannot be read (here a commit that is not JSON) gives the page its error, in place of the
    table's message; the board keeps what it showed, and the next refresh after the table is whole goes on."""
    config = _config(tmp_path / "delta")
    updated = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
    rows = signal_rows("SYM001", *series(0, 30), updated)
    append(tmp_path / "delta", SIGNALS, rows[:20])
    state = BoardState(config)
    state.refresh()
    assert state.snapshot()["signals"]["message"] is None

    broken = tmp_path / "delta" / "signals" / "_delta_log" / f"{1:020d}.json"
    broken.write_text("{not json\n")
    state.refresh()
    snapshot = state.snapshot()
    message = snapshot["signals"]["message"]
    assert message.startswith(f"cannot read signals at {config.table_path('signals')}: "), message
    assert "\n" not in message
    assert snapshot["tables"]["signals"]["status"] == "error"
    # What the board showed stays: the newest row read before the error.
    assert [row["event_time"] for row in snapshot["signals"]["rows"]] == [
        rows[19]["event_time"].isoformat().replace("+00:00", "Z")
    ]

    broken.unlink()
    append(tmp_path / "delta", SIGNALS, rows[20:])
    state.refresh()
    snapshot = state.snapshot()
    assert snapshot["signals"]["message"] is None and snapshot["tables"]["signals"]["status"] == "ok"
    assert [row["event_time"] for row in snapshot["signals"]["rows"]] == [
        rows[29]["event_time"].isoformat().replace("+00:00", "Z")
    ]
    assert state.chart("SYM001")["ticks"] == 30


def test_the_chart_and_the_crossover_list_keep_only_the_newest(tmp_path: Path) -> None:
    """`board.chart_ticks` newest signals per symbol in the chart, `board.crossovers_shown` newest crossovers."""
    updated = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
    rows = [row for index in range(3) for row in signal_rows(f"SYM00{index + 1}", *series(index, 120), updated)]
    append(tmp_path / "delta", SIGNALS, rows[:200])
    config = _config(tmp_path / "delta", "board.chart_ticks=10", "board.crossovers_shown=3")
    state = BoardState(config)
    state.refresh()
    append(tmp_path / "delta", SIGNALS, rows[200:])  # the same again when the rows come in later commits
    state.refresh()
    for symbol in ("SYM001", "SYM002", "SYM003"):
        chart = state.chart(symbol)
        assert chart is not None and chart["ticks"] == 10
        newest = sorted(row["event_time"] for row in rows if row["symbol"] == symbol)[-10:]
        plotted = [trace for trace in chart["figure"]["data"] if trace.get("name") == "close"]
        assert [datetime.fromisoformat(x).replace(tzinfo=UTC) for x in plotted[0]["x"]] == newest
    crossings = sorted(((row["event_time"], row["symbol"]) for row in rows if row["crossover"]), reverse=True)
    assert len(crossings) > 3
    shown = state.snapshot()["crossovers"]
    assert [(row["event_time"], row["symbol"]) for row in shown] == [
        (when.isoformat().replace("+00:00", "Z"), symbol) for when, symbol in crossings[:3]
    ]
