"""Follow one Delta table version by version, reading only the data files that new commits added.

A refresh asks delta-rs for the commits after the last version seen (``update_incremental``), takes the
add actions of the new snapshot that the previous one did not have, and reads only those Parquet files. The
cost of a refresh is therefore bounded by what the writer committed since, like the stream's own batches:
an append brings its new files, a MERGE the files it rewrote. Commits that do not change data (OPTIMIZE,
auto-compaction) are recognised from the table history and their files are not read at all.

Readers of the returned rows must be idempotent (upsert on a key): a file rewritten by a MERGE also
carries rows that did not change.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

import pyarrow as pa

from jobs.lake.delta_log import error_line, open_delta_table, read_delta_arrow
from jobs.pipeline.config import AppConfig

# Operations that rewrite files without changing the rows they hold.
NO_DATA_CHANGE = {"OPTIMIZE", "VACUUM START", "VACUUM END", "SET TBLPROPERTIES", "UPGRADE PROTOCOL", "CHECKPOINT"}


@dataclass
class RefreshStats:
    """What one refresh of one table did (the board shows it; the tests check the cost is bounded)."""

    version: int | None = None
    commits: int = 0
    files_read: int = 0
    rows_read: int = 0
    skipped_commits: int = 0
    seconds: float = 0.0
    reset: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "commits": self.commits,
            "files_read": self.files_read,
            "rows_read": self.rows_read,
            "skipped_commits": self.skipped_commits,
            "ms": round(self.seconds * 1000, 1),
            "reset": self.reset,
        }


@dataclass
class TableFollower:
    """The Delta table `name` under storage.root, followed from one refresh to the next."""

    config: AppConfig
    name: str
    columns: list[str]
    # For the first read only: keep the files of the newest N days of this date partition column.
    initial_partition: str | None = None
    initial_days: int | None = None
    # How often the table's identity is checked: a table deleted or written anew (a reset of the job) is
    # followed from its start. A reopen reads the log from its last checkpoint, never data files.
    identity_check_seconds: float = 10.0
    _table: Any = None
    _checked_at: float = 0.0
    _table_id: str | None = None
    _version: int | None = None
    _files: set[str] = field(default_factory=set)
    last: RefreshStats = field(default_factory=RefreshStats)
    # The latest refresh that found new commits (what following the table costs per change).
    last_change: RefreshStats = field(default_factory=RefreshStats)
    status: str = "missing"  # missing | empty | ok | error
    error: str | None = None

    @property
    def location(self) -> str:
        return self.config.table_path(self.name)

    @property
    def version(self) -> int | None:
        return self._version

    def refresh(self) -> pa.Table | None:
        """Rows added since the previous refresh (all rows of interest on the first one), or None if nothing new.

        After a reset (the table was deleted or recreated) `last.reset` is True and the rows are a fresh start.
        """
        started = time.perf_counter()
        stats = RefreshStats(version=self._version)
        try:
            rows = self._refresh(stats)
            self.error = None
        except Exception as exc:  # a table being replaced under us: report it, retry from scratch next time
            self.status = "error"
            self.error = f"cannot read {self.name} at {self.location}: {error_line(exc)}"
            self._table = None
            rows = None
        stats.seconds = time.perf_counter() - started
        self.last = stats
        if stats.commits or stats.reset:
            self.last_change = stats
        return rows

    def _refresh(self, stats: RefreshStats) -> pa.Table | None:
        if self._table is not None and time.monotonic() - self._checked_at >= self.identity_check_seconds:
            self._table = None  # reopen below, comparing the table's id with the one followed so far
        if self._table is None:
            self._checked_at = time.monotonic()
            table = open_delta_table(self.config, self.name)
            if table is None:
                if self._version is not None:
                    stats.reset = True
                self._forget()
                self.status = "missing"
                return _empty(self.columns) if stats.reset else None
            table_id = table.metadata().id
            if self._table_id is not None and (table_id != self._table_id or table.version() < (self._version or 0)):
                stats.reset = True
                self._forget()
            self._table, self._table_id = table, table_id
        else:
            self._table.update_incremental()
        table = self._table
        version = table.version()
        stats.version = version
        if version == self._version:
            return None
        actions = pa.table(table.get_add_actions(flatten=True))
        paths = actions.column("path").to_pylist()
        current = set(paths)
        first = self._version is None
        new_paths = [path for path in paths if path not in self._files]
        if first:
            stats.commits = version + 1
            new_paths = self._initial_selection(actions, new_paths)
        else:
            stats.commits = version - (self._version or 0)
            operations = [entry.get("operation", "") for entry in table.history(stats.commits)]
            if operations and all(op in NO_DATA_CHANGE for op in operations):
                stats.skipped_commits = stats.commits
                new_paths = []
        self._version, self._files = version, current
        counts = actions.column("num_records").to_pylist()
        self.status = "ok" if any(count is None or count > 0 for count in counts) else "empty"
        rows = self._read(table, new_paths)
        stats.files_read, stats.rows_read = len(new_paths), rows.num_rows
        return rows

    def _initial_selection(self, actions: pa.Table, paths: list[str]) -> list[str]:
        column = f"partition.{self.initial_partition}" if self.initial_partition else None
        if not self.initial_days or column is None or column not in actions.column_names or not paths:
            return paths
        days = [day for day in actions.column(column).to_pylist() if isinstance(day, date)]
        if not days:
            return paths
        since = max(days) - timedelta(days=self.initial_days - 1)
        return [
            path
            for path, day in zip(actions.column("path").to_pylist(), actions.column(column).to_pylist(), strict=True)
            if day is None or day >= since
        ]

    def _read(self, table: Any, paths: list[str]) -> pa.Table:
        if not paths:
            return _empty(self.columns)
        import pyarrow.dataset as ds

        dataset = table.to_pyarrow_dataset()
        wanted = set(paths)
        fragments = [fragment for fragment in dataset.get_fragments() if fragment.path in wanted]
        subset = ds.FileSystemDataset(fragments, dataset.schema, dataset.format, dataset.filesystem)
        return read_delta_arrow(table, columns=[c for c in self.columns if c in dataset.schema.names], dataset=subset)

    def _forget(self) -> None:
        self._table, self._table_id, self._version, self._files = None, None, None, set()


def _empty(columns: list[str]) -> pa.Table:
    return pa.table({name: pa.array([], pa.null()) for name in columns})
