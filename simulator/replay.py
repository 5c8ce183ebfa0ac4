"""CSV input for `replay`: the legacy columns (Date-Time,symbol,Close,Volume; extra columns ignored, e.g. the
original system's Athena output) or the v1 columns (symbol,ts,close,volume). Every row is validated before
anything is sent; the first bad row stops the replay with the file, the line and the reason."""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np

from simulator.market import TickBatch
from simulator.messages import SYMBOL_PATTERN, MessageFormat, parse_iso_time, parse_legacy_time

LEGACY_COLUMNS = ("Date-Time", "symbol", "Close", "Volume")
V1_COLUMNS = ("symbol", "ts", "close", "volume")


class CsvError(ValueError):
    """A CSV that cannot be replayed; str() is `file:line: reason`."""

    def __init__(self, path: Path | str, line: int | None, reason: str) -> None:
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {reason}")
        self.path, self.line, self.reason = str(path), line, reason


@dataclass
class CsvTicks:
    format: MessageFormat
    ticks: TickBatch  # sorted by time; rows with equal times keep the file order


def _detect_format(header: list[str], path: Path) -> tuple[MessageFormat, tuple[int, ...]]:
    names = [name.strip() for name in header]
    for message_format, columns in (("legacy", LEGACY_COLUMNS), ("v1", V1_COLUMNS)):
        if all(column in names for column in columns):
            return message_format, tuple(names.index(column) for column in columns)  # type: ignore[return-value]
    raise CsvError(
        path,
        1,
        f"header {','.join(names)!r} has neither the legacy columns "
        f"({','.join(LEGACY_COLUMNS)}) nor the v1 columns ({','.join(V1_COLUMNS)})",
    )


def _parse_close(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"close {text!r} is not a number") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"close {text!r} must be a positive finite number")
    return value


def _parse_volume(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"volume {text!r} is not an integer") from None
    if value < 0:
        raise ValueError(f"volume {text!r} is negative")
    return value


def _parse_symbol(text: str) -> str:
    if not SYMBOL_PATTERN.match(text):
        raise ValueError(f"symbol {text!r} is not 1-16 characters of [A-Z0-9._-]")
    return text


def read_csv(path: str | Path, zone: ZoneInfo) -> CsvTicks:
    """Read and validate the whole file. Raises CsvError naming the first bad line."""
    path = Path(path)
    try:
        handle = path.open(newline="", encoding="utf-8")
    except OSError as exc:
        raise CsvError(path, None, f"cannot open: {exc.strerror or exc}") from None
    symbols: list[str] = []
    stamps: list[int] = []
    closes: list[float] = []
    volumes: list[int] = []
    with handle:
        reader = csv.reader(handle)
        try:
            header = next(reader)
        except StopIteration:
            raise CsvError(path, None, "the file is empty") from None
        except (csv.Error, UnicodeDecodeError) as exc:
            raise CsvError(path, 1, f"not a readable CSV: {exc}") from None
        message_format, (time_col, symbol_col, close_col, volume_col) = _order(header, path)
        width = len(header)
        line = 1
        try:
            for row in reader:
                line = reader.line_num
                if not row:
                    continue
                if len(row) != width:
                    raise ValueError(f"{len(row)} fields, the header has {width}")
                symbols.append(_parse_symbol(row[symbol_col].strip()))
                text = row[time_col]
                try:
                    stamps.append(parse_legacy_time(text, zone) if message_format == "legacy" else parse_iso_time(text))
                except ValueError as exc:
                    expected = "YYYY-MM-DD HH:MM:SS" if message_format == "legacy" else "ISO-8601 with offset"
                    raise ValueError(f"time {text!r} is not {expected} ({exc})") from None
                closes.append(_parse_close(row[close_col].strip()))
                volumes.append(_parse_volume(row[volume_col].strip()))
        except ValueError as exc:
            raise CsvError(path, line, str(exc)) from None
        except (csv.Error, UnicodeDecodeError) as exc:
            raise CsvError(path, reader.line_num, f"not a readable CSV: {exc}") from None
    if not symbols:
        raise CsvError(path, None, "no data rows after the header")
    ts = np.array(stamps, dtype=np.int64)
    order = np.argsort(ts, kind="stable")
    batch = TickBatch(
        [symbols[i] for i in order.tolist()],
        ts[order],
        np.array(closes)[order],
        np.array(volumes, dtype=np.int64)[order],
    )
    return CsvTicks(message_format, batch)


def _order(header: list[str], path: Path) -> tuple[MessageFormat, tuple[int, int, int, int]]:
    message_format, (first, second, third, fourth) = _detect_format(header, path)
    if message_format == "legacy":  # Date-Time, symbol, Close, Volume
        return message_format, (first, second, third, fourth)
    return message_format, (second, first, third, fourth)  # symbol, ts, close, volume -> time first
