"""Tick messages as Kafka record values: version 1 and the original system's legacy JSON (see docs/design.md).

Encoding works on whole batches: timestamps are formatted by numpy in one call, and each value is one
f-string, which keeps the per-message cost far below the Kafka client's own.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Literal
from zoneinfo import ZoneInfo

import numpy as np

MessageFormat = Literal["v1", "legacy"]
FORMATS: tuple[MessageFormat, ...] = ("v1", "legacy")
SYMBOL_PATTERN = re.compile(r"^[A-Z0-9._-]{1,16}$")
_HOUR_MS = 3_600_000


@dataclass(frozen=True)
class Tick:
    symbol: str
    ts_ms: int
    close: float
    volume: int


@lru_cache(maxsize=64)
def _hour_offset_ms(hour: int, zone: ZoneInfo) -> int:
    offset = datetime.fromtimestamp(hour * 3600, zone).utcoffset()
    return int(offset.total_seconds() * 1000) if offset else 0


def local_offsets_ms(ts_ms: np.ndarray, zone: ZoneInfo) -> np.ndarray:
    """UTC offset of `zone` at each instant, in ms (looked up once per distinct hour: zones change on the hour)."""
    hours = ts_ms // _HOUR_MS
    unique, inverse = np.unique(hours, return_inverse=True)
    offsets = np.array([_hour_offset_ms(int(hour), zone) for hour in unique], dtype=np.int64)
    return offsets[inverse.reshape(-1)]


def format_v1_ts(ts_ms: np.ndarray) -> list[str]:
    return np.datetime_as_string(ts_ms.astype("datetime64[ms]"), unit="ms").tolist()


def format_legacy_ts(ts_ms: np.ndarray, zone: ZoneInfo) -> list[str]:
    """`YYYY-MM-DD HH:MM:SS` in `zone`; the legacy format has whole seconds, so milliseconds are dropped."""
    local = (ts_ms + local_offsets_ms(ts_ms, zone)).astype("datetime64[ms]").astype("datetime64[s]")
    return [text.replace("T", " ") for text in np.datetime_as_string(local, unit="s").tolist()]


class Encoder:
    """Turns ticks into record values of one format."""

    def __init__(self, message_format: MessageFormat, zone: ZoneInfo) -> None:
        if message_format not in FORMATS:
            raise ValueError(f"unknown message format {message_format!r} (use one of {', '.join(FORMATS)})")
        self.format = message_format
        self.zone = zone

    def encode_batch(
        self, symbols: Sequence[str], ts_ms: np.ndarray, close: np.ndarray, volume: np.ndarray
    ) -> list[bytes]:
        closes = close.tolist()
        volumes = volume.tolist()
        if self.format == "v1":
            stamps = format_v1_ts(ts_ms)
            return [
                f'{{"v":1,"symbol":"{s}","ts":"{t}Z","close":{c!r},"volume":{v}}}'.encode()
                for s, t, c, v in zip(symbols, stamps, closes, volumes, strict=True)
            ]
        stamps = format_legacy_ts(ts_ms, self.zone)
        return [
            f'{{"symbol":"{s}","Date-Time":"{t}","Close":{c!r},"Volume":{v}}}'.encode()
            for s, t, c, v in zip(symbols, stamps, closes, volumes, strict=True)
        ]

    def fields(self, tick: Tick) -> dict[str, object]:
        """One tick as an ordered dict of JSON fields (for building variants of a message)."""
        stamp = np.array([tick.ts_ms], dtype=np.int64)
        if self.format == "v1":
            return {
                "v": 1,
                "symbol": tick.symbol,
                "ts": format_v1_ts(stamp)[0] + "Z",
                "close": tick.close,
                "volume": tick.volume,
            }
        return {
            "symbol": tick.symbol,
            "Date-Time": format_legacy_ts(stamp, self.zone)[0],
            "Close": tick.close,
            "Volume": tick.volume,
        }

    def encode(self, tick: Tick) -> bytes:
        return dump(self.fields(tick))

    @property
    def close_field(self) -> str:
        return "close" if self.format == "v1" else "Close"

    @property
    def volume_field(self) -> str:
        return "volume" if self.format == "v1" else "Volume"


def dump(fields: dict[str, object]) -> bytes:
    # allow_nan: the NaN fault needs the non-standard `NaN` literal that some producers do send.
    return json.dumps(fields, separators=(",", ":"), allow_nan=True).encode()


class DecodeError(ValueError):
    """A record value that is not a valid tick."""


def _epoch_ms(moment: datetime) -> int:
    return round(moment.timestamp() * 1000)


def parse_legacy_time(text: str, zone: ZoneInfo) -> int:
    moment = datetime.strptime(text.strip(), "%Y-%m-%d %H:%M:%S").replace(tzinfo=zone)
    return _epoch_ms(moment)


def parse_iso_time(text: str) -> int:
    moment = datetime.fromisoformat(text.strip())
    if moment.tzinfo is None:
        raise ValueError(f"timestamp {text!r} has no offset (add Z or +HH:MM)")
    return _epoch_ms(moment)


def decode(value: bytes, zone: ZoneInfo) -> Tick:
    """Parse a record value of either format (used by tests and the replay round trip)."""
    try:
        record = json.loads(value)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DecodeError(f"not JSON: {exc}") from None
    if not isinstance(record, dict):
        raise DecodeError("not a JSON object")
    try:
        if "v" in record:
            if record["v"] != 1:
                raise DecodeError(f"unknown version {record['v']!r}")
            tick = Tick(record["symbol"], parse_iso_time(record["ts"]), record["close"], record["volume"])
        else:
            tick = Tick(
                record["symbol"], parse_legacy_time(record["Date-Time"], zone), record["Close"], record["Volume"]
            )
    except KeyError as exc:
        raise DecodeError(f"missing field {exc}") from None
    except (TypeError, ValueError, AttributeError) as exc:
        raise DecodeError(f"bad value: {exc}") from None
    if not isinstance(tick.close, (int, float)) or isinstance(tick.close, bool):
        raise DecodeError("close is not a number")
    if not math.isfinite(tick.close) or tick.close <= 0:
        raise DecodeError(f"close {tick.close} is not a positive finite number")
    if not isinstance(tick.volume, int) or isinstance(tick.volume, bool) or tick.volume < 0:
        raise DecodeError(f"volume {tick.volume!r} is not a non-negative integer")
    if not isinstance(tick.symbol, str) or not SYMBOL_PATTERN.match(tick.symbol):
        raise DecodeError(f"symbol {tick.symbol!r} is not 1-16 characters of [A-Z0-9._-]")
    return tick


def utc_iso(ts_ms: int) -> str:
    return datetime.fromtimestamp(ts_ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
