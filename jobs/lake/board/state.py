"""What the board shows, kept up to date from the rows that new Delta commits added.

Everything held here is bounded: the newest `board.chart_ticks` signals per symbol, the newest crossovers,
the quarantined records of the last `board.quarantine_window_seconds` and the last metrics rows. A refresh
costs what the job committed since the previous one (see jobs.lake.board.follow).
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

from jobs.lake.board.follow import TableFollower
from jobs.pipeline.config import AppConfig
from jobs.pipeline.transforms.signals import SIGNAL_COLUMNS as SIGNAL_DEFINITION_COLUMNS

# The signal definition's columns, and the bookkeeping the board shows (corrections, freshness).
SIGNAL_COLUMNS = [*SIGNAL_DEFINITION_COLUMNS, "revision", "updated_at"]
QUARANTINE_COLUMNS = ["reason", "topic", "partition", "offset", "ingest_time", "ingest_date"]
METRIC_COLUMNS = [
    "batch_id",
    "batch_started_at",
    "records_read",
    "ticks_written",
    "quarantined",
    "duplicates",
    "signals_emitted",
    "signals_corrected",
    "batch_duration_ms",
    "max_event_time_lag_ms",
]
METRICS_KEPT = 240
TOTALS = ("records_read", "ticks_written", "quarantined", "duplicates", "signals_corrected")
THROUGHPUT_BATCHES = 12
CROSSOVERS_KEPT = 1000

MISSING_HINT = "start the streaming job (make stream) or the demo (make demo ARGS=--board)"


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _number(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else value


def _rows(table: pa.Table) -> list[dict[str, Any]]:
    return table.to_pylist() if table.num_rows else []


class BoardState:
    """The board's picture of the three tables; `refresh()` follows them, `snapshot()` describes them."""

    def __init__(self, config: AppConfig, clock: Any = time.time) -> None:
        self.config = config
        self.board = config.board
        self.clock = clock
        self.lock = threading.Lock()
        self.signals = TableFollower(config, "signals", SIGNAL_COLUMNS, "event_date", self.board.initial_days)
        self.quarantine = TableFollower(
            config,
            "ticks_quarantine",
            QUARANTINE_COLUMNS,
            "ingest_date",
            math.ceil(self.board.quarantine_window_seconds / 86400) + 1,
        )
        self.metrics = TableFollower(config, "pipeline_metrics", METRIC_COLUMNS)
        self._reset_signals()
        self._quarantined: dict[tuple[Any, ...], tuple[datetime, str]] = {}
        self._reset_metrics()
        self._last_refresh = 0.0
        self.refreshes = 0

    # -- following the tables -------------------------------------------------------------------------------

    def _reset_signals(self) -> None:
        self._history: dict[str, dict[datetime, dict[str, Any]]] = {}
        self._latest: dict[str, dict[str, Any]] = {}
        self._crossovers: dict[tuple[str, datetime], dict[str, Any]] = {}
        self._symbol_changed: dict[str, int] = {}

    def refresh_if_due(self) -> bool:
        """Refresh unless the previous refresh is younger than board.refresh_seconds; True if it ran."""
        with self.lock:
            now = time.monotonic()
            if self.refreshes and now - self._last_refresh < self.board.refresh_seconds * 0.8:
                return False
            self._refresh_locked()
            self._last_refresh = now
            return True

    def refresh(self) -> None:
        with self.lock:
            self._refresh_locked()
            self._last_refresh = time.monotonic()

    def _refresh_locked(self) -> None:
        self.refreshes += 1
        rows = self.signals.refresh()
        if self.signals.last.reset:
            self._reset_signals()
        if rows is not None:
            self._apply_signals(_rows(rows))
        rows = self.quarantine.refresh()
        if self.quarantine.last.reset:
            self._quarantined = {}
        if rows is not None:
            self._apply_quarantine(_rows(rows))
        self._prune_quarantine()
        rows = self.metrics.refresh()
        if self.metrics.last.reset:
            self._reset_metrics()
        if rows is not None:
            self._apply_metrics(_rows(rows))

    def _apply_signals(self, rows: list[dict[str, Any]]) -> None:
        keep = self.board.chart_ticks
        touched: set[str] = set()
        for row in rows:
            symbol, when = row["symbol"], row["event_time"]
            history = self._history.setdefault(symbol, {})
            old = history.get(when)
            if old is not None and old["revision"] > row["revision"]:
                continue  # never go back to an older revision of a row
            history[when] = row
            touched.add(symbol)
            key = (symbol, when)
            if row["crossover"]:
                self._crossovers[key] = row
            else:
                self._crossovers.pop(key, None)
        for symbol in touched:
            history = self._history[symbol]
            if len(history) > keep:
                for when in sorted(history)[: len(history) - keep]:
                    del history[when]
            self._latest[symbol] = history[max(history)]
            self._symbol_changed[symbol] = self.refreshes
        if len(self._crossovers) > CROSSOVERS_KEPT:
            for key in sorted(self._crossovers, key=lambda k: k[1])[: len(self._crossovers) - CROSSOVERS_KEPT]:
                del self._crossovers[key]

    def _apply_quarantine(self, rows: list[dict[str, Any]]) -> None:
        # Kafka coordinates identify a record: a file read twice (rewritten by a compaction) counts once.
        for row in rows:
            key = (row["topic"], row["partition"], row["offset"])
            self._quarantined[key] = (row["ingest_time"], row["reason"])

    def _prune_quarantine(self) -> None:
        horizon = self.clock() - self.board.quarantine_window_seconds
        stale = [key for key, (when, _) in self._quarantined.items() if when is None or when.timestamp() < horizon]
        for key in stale:
            del self._quarantined[key]

    def _reset_metrics(self) -> None:
        self._metrics: dict[int, dict[str, Any]] = {}
        self._totals: dict[str, int] = dict.fromkeys(TOTALS, 0)
        self._dropped_upto = -1  # batches up to this id were counted, then dropped from memory

    def _apply_metrics(self, rows: list[dict[str, Any]]) -> None:
        # Running totals over every batch; a row read again (a rewritten file) replaces its first reading.
        for row in rows:
            batch_id = row["batch_id"]
            if batch_id <= self._dropped_upto:
                continue
            old = self._metrics.get(batch_id)
            for key in TOTALS:
                self._totals[key] += (row[key] or 0) - ((old[key] or 0) if old else 0)
            self._metrics[batch_id] = row
        if len(self._metrics) > METRICS_KEPT:
            for batch_id in sorted(self._metrics)[: len(self._metrics) - METRICS_KEPT]:
                del self._metrics[batch_id]
                self._dropped_upto = max(self._dropped_upto, batch_id)

    # -- what the page gets ---------------------------------------------------------------------------------

    def _message(self, follower: TableFollower, what: str) -> str | None:
        if follower.status == "error":
            return follower.error
        if follower.status == "missing":
            return f"No {follower.name} table yet at {follower.location}: {MISSING_HINT}."
        if follower.status == "empty":
            return f"The {follower.name} table has no rows yet: {what} appear after the job's first micro-batch."
        return None

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {
                "generated_at": _iso(datetime.fromtimestamp(self.clock(), UTC)),
                "refresh_seconds": self.board.refresh_seconds,
                "windows": {"short": self.config.signals.sma_short, "long": self.config.signals.sma_long},
                "storage_root": self.config.storage.root,
                "signals": self._signals_snapshot(),
                "crossovers": self._crossovers_snapshot(),
                "health": self._health_snapshot(),
                "quarantine": self._quarantine_snapshot(),
                "tables": {
                    follower.name: {
                        "status": follower.status,
                        "error": follower.error,
                        "version": follower.version,
                        "last_refresh": follower.last.as_dict(),
                        "last_change": follower.last_change.as_dict(),
                    }
                    for follower in (self.signals, self.quarantine, self.metrics)
                },
            }

    def _is_new(self, row: dict[str, Any]) -> bool:
        updated = row.get("updated_at")
        return bool(updated) and updated.timestamp() >= self.clock() - self.board.highlight_seconds

    def _last_crossovers(self) -> dict[str, dict[str, Any]]:
        last: dict[str, dict[str, Any]] = {}
        for (symbol, when), row in self._crossovers.items():
            if symbol not in last or when > last[symbol]["event_time"]:
                last[symbol] = row
        return last

    def _signals_snapshot(self) -> dict[str, Any]:
        last_cross = self._last_crossovers()
        rows = []
        for symbol in sorted(self._latest):
            row = self._latest[symbol]
            cross = last_cross.get(symbol)
            rows.append(
                {
                    "symbol": symbol,
                    "signal": row["signal"],
                    "sma_short": _number(row["sma_short"]),
                    "sma_long": _number(row["sma_long"]),
                    "close": _number(row["close"]),
                    "volume": row["volume"],
                    "prev_volume": row["prev_volume"],
                    "event_time": _iso(row["event_time"]),
                    "updated_at": _iso(row["updated_at"]),
                    "revision": row["revision"],
                    "corrected": row["revision"] >= 1,
                    "crossover": row["crossover"],
                    "last_crossover": cross["crossover"] if cross else None,
                    "last_crossover_time": _iso(cross["event_time"]) if cross else None,
                    "new_crossover": bool(cross) and self._is_new(cross),
                }
            )
        counts = Counter(row["signal"] for row in rows)
        return {
            "message": self._message(self.signals, "signals"),
            "version": self.signals.version,
            "rows": rows,
            "counts": {name: counts.get(name, 0) for name in ("Buy", "Sell", "Hold")},
            "corrected": sum(1 for row in rows if row["corrected"]),
        }

    def _crossovers_snapshot(self) -> list[dict[str, Any]]:
        newest = sorted(self._crossovers.values(), key=lambda r: (r["event_time"], r["symbol"]), reverse=True)
        return [
            {
                "symbol": row["symbol"],
                "event_time": _iso(row["event_time"]),
                "crossover": row["crossover"],
                "close": _number(row["close"]),
                "signal": row["signal"],
                "revision": row["revision"],
                "new": self._is_new(row),
            }
            for row in newest[: self.board.crossovers_shown]
        ]

    def _health_snapshot(self) -> dict[str, Any]:
        batches = [self._metrics[key] for key in sorted(self._metrics)]
        health: dict[str, Any] = {"message": self._message(self.metrics, "batch metrics"), "batches": len(batches)}
        if not batches:
            return health
        last = batches[-1]
        recent = batches[-THROUGHPUT_BATCHES:]
        started = recent[0]["batch_started_at"].timestamp()
        ended = last["batch_started_at"].timestamp() + last["batch_duration_ms"] / 1000
        span = max(ended - started, 1e-3)
        records = sum(row["records_read"] for row in recent)
        health.update(
            {
                "last_batch_id": last["batch_id"],
                "last_batch_at": _iso(last["batch_started_at"]),
                "last_batch_age_seconds": round(self.clock() - ended, 1),
                "records_per_second": round(records / span, 1),
                "batch_duration_ms": last["batch_duration_ms"],
                "avg_batch_duration_ms": round(sum(row["batch_duration_ms"] for row in recent) / len(recent), 1),
                "lag_ms": last["max_event_time_lag_ms"],
                "recent": [
                    {
                        "batch_id": row["batch_id"],
                        "at": _iso(row["batch_started_at"]),
                        "records_read": row["records_read"],
                        "duration_ms": row["batch_duration_ms"],
                        "lag_ms": row["max_event_time_lag_ms"],
                    }
                    for row in batches[-60:]
                ],
                "totals": dict(self._totals),
            }
        )
        return health

    def _quarantine_snapshot(self) -> dict[str, Any]:
        counts = Counter(reason for _, reason in self._quarantined.values())
        return {
            "message": self._message(self.quarantine, "rejected records"),
            "window_seconds": self.board.quarantine_window_seconds,
            "total": sum(counts.values()),
            "by_reason": [{"reason": reason, "records": n} for reason, n in sorted(counts.items(), key=_by_count)],
        }

    # -- the chart ------------------------------------------------------------------------------------------

    def chart(self, symbol: str) -> dict[str, Any] | None:
        """The plotly figure of `symbol` (the same builder as jobs.report), or None if the symbol is unknown."""
        import pandas as pd

        from jobs.lake.report import signal_plotly_figure

        with self.lock:
            history = self._history.get(symbol)
            if not history:
                return None
            rows = [history[when] for when in sorted(history)]
            version = self._symbol_changed.get(symbol)
        frame = pd.DataFrame(rows)
        figure = signal_plotly_figure(frame, symbol, self.config)
        figure.update_layout(height=560, margin={"l": 50, "r": 20, "t": 70, "b": 40}, uirevision=symbol)
        figure_json = json.loads(figure.to_json())
        return {"symbol": symbol, "changed": version, "ticks": len(rows), "figure": figure_json}


def _by_count(item: tuple[str, int]) -> tuple[int, str]:
    return (-item[1], item[0])
