"""Fuzzing of parse_records: whatever a Kafka record holds, nothing raises and every record comes out once, either
a valid tick or a quarantine row with a reason code.

Each example is a list of records (arbitrary bytes, arbitrary text, arbitrary JSON, and tick messages with fields
replaced by odd numbers, strings and timestamps), parsed in one Spark job. Alongside the invariants, records whose
outcome is known by construction are checked exactly: a well-formed tick is accepted with its values, a tick with
one field of the wrong JSON type is ``bad_type``, a value that is not JSON at all is ``not_json``.
"""

from __future__ import annotations

import json
import math
import re
import string
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyspark.sql import Row, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from jobs.pipeline.tables import KAFKA_RECORD_SCHEMA, REJECT_REASONS, TICKS
from jobs.pipeline.transforms.parse import MAX_CLOSE, parse_records

MAX_BYTES = 512
SOURCE_TZ = "Asia/Kolkata"
MAX_FUTURE_SECONDS = 300
KAFKA_TIME = datetime(2026, 11, 24, 10, 0, 0, tzinfo=UTC)
# Reasons decided after parsing (against stored ticks), never by parse_records.
PARSE_REASONS = frozenset(REJECT_REASONS) - {"conflicting_duplicate", "too_late"}
SYMBOL_PATTERN = re.compile(r"\A[A-Z0-9._-]{1,16}\Z")
FIRST_EVENT = datetime(1970, 1, 1, tzinfo=UTC)
LAST_EVENT = datetime(9999, 12, 31, 23, 59, 59, 999000, tzinfo=UTC)
# Where a message's kind is known: the exact outcome it must have.
ACCEPTED, BAD_TYPE, NOT_JSON, ANY = "accepted", "bad_type", "not_json", "any"

RECORD_SCHEMA = T.StructType(
    [
        T.StructField("kafka_key", T.StringType()),
        T.StructField("value", T.BinaryType()),
        T.StructField("topic", T.StringType()),
        T.StructField("partition", T.IntegerType()),
        T.StructField("offset", T.LongType()),
        T.StructField("kafka_timestamp", T.TimestampType()),
    ]
)


@dataclass(frozen=True)
class Case:
    value: bytes | None
    expect: str = ANY
    # For an accepted tick: (symbol, event_time truncated to the millisecond, close, volume).
    tick: tuple[str, datetime, float, int] | None = None


# --- strategies ----------------------------------------------------------------------------------------------------

symbols = st.from_regex(r"\A[A-Z0-9._-]{1,16}\Z", fullmatch=True)
odd_strings = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["", " ", "\n", "\u0000", "null", "NaN", "187.2", "1e400", "SYM\u00e9", "a" * 300, "\ud7ff\ue000"]),
)
odd_numbers = st.one_of(
    st.integers(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, -0.0, 1e-320, 5e-324, 2**63 - 1, 2**63, -(2**63), 1e9, 999_999_999.999999, 1200.0, 12.5]),
)
json_scalars = st.one_of(st.none(), st.booleans(), odd_numbers, odd_strings)
json_values = st.recursive(
    json_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
# Event times from the epoch to year 9999 (kept away from the bounds, where the zone offset decides), and
# around them.
event_times = st.datetimes(
    min_value=datetime(1970, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(UTC)
) | st.sampled_from(
    [
        FIRST_EVENT,
        LAST_EVENT,
        KAFKA_TIME + timedelta(seconds=MAX_FUTURE_SECONDS),
        KAFKA_TIME + timedelta(seconds=MAX_FUTURE_SECONDS, milliseconds=1),
    ]
)
offsets = st.sampled_from(["Z", "+00:00", "+05:30", "-08:00", "+0530", "+14:00", "-12:00"])


def _iso(moment: datetime, offset: str, fraction_digits: int) -> str:
    """`moment` written as ISO-8601 in the zone `offset`, with 0-9 fraction digits."""
    if offset == "Z":
        local, suffix = moment, "Z"
    else:
        sign = 1 if offset[0] == "+" else -1
        hours, minutes = int(offset[1:3]), int(offset[-2:])
        local, suffix = moment + sign * timedelta(hours=hours, minutes=minutes), offset
    text = f"{local.year:04d}-{local.month:02d}-{local.day:02d}T{local.hour:02d}:{local.minute:02d}:{local.second:02d}"
    if fraction_digits:
        nanos = f"{local.microsecond:06d}000"
        text += "." + nanos[:fraction_digits]
    return text + suffix


@st.composite
def valid_v1(draw: st.DrawFn) -> Case:
    """A well-formed v1 tick: accepted with exactly these values."""
    symbol = draw(symbols)
    moment = draw(event_times)
    offset = draw(offsets)
    digits = draw(st.integers(0, 9))
    # The written text, read back: what the job sees when the zone takes the time out of the supported range.
    written = _iso(moment, offset, digits)
    if not written[:4].isdigit() or int(written[:4]) < 1 or len(written.split("T")[0]) != 10:
        offset, written = "Z", _iso(moment, "Z", digits)
    truncated_micros = int(("0" if digits == 0 else f"{moment.microsecond:06d}000"[:digits]).ljust(6, "0")[:6])
    event_time = moment.replace(microsecond=truncated_micros // 1000 * 1000)
    close = draw(st.floats(min_value=1e-6, max_value=MAX_CLOSE, exclude_max=True, allow_nan=False))
    volume = draw(st.integers(min_value=0, max_value=2**63 - 1))
    body = {"v": 1, "symbol": symbol, "ts": written, "close": close, "volume": volume}
    extra = draw(st.dictionaries(st.text(max_size=6).filter(lambda k: k not in body), json_values, max_size=2))
    items = list({**body, **extra}.items())
    order = draw(st.permutations(range(len(items))))
    text = json.dumps(dict(items[i] for i in order), ensure_ascii=draw(st.booleans()))
    in_range = FIRST_EVENT <= event_time <= LAST_EVENT
    not_future = event_time <= KAFKA_TIME + timedelta(seconds=MAX_FUTURE_SECONDS)
    fits = len(text.encode()) <= MAX_BYTES
    if not (in_range and not_future and fits):
        return Case(text.encode(), ANY)
    return Case(text.encode(), ACCEPTED, (symbol, event_time, close, volume))


@st.composite
def wrong_type_v1(draw: st.DrawFn) -> Case:
    """A v1 tick with one field of the wrong JSON type (a string for a number, a number for a string...)."""
    field = draw(st.sampled_from(["symbol", "ts", "close", "volume"]))
    body: dict[str, object] = {"v": 1, "symbol": "SYM001", "ts": "2026-11-24T09:15:00Z", "close": 1.5, "volume": 3}
    if field in ("symbol", "ts"):
        body[field] = draw(st.one_of(st.booleans(), st.integers(), st.floats(allow_nan=False), st.lists(st.none())))
    elif field == "close":
        body[field] = draw(st.one_of(st.booleans(), odd_strings, st.lists(st.integers(), max_size=2)))
    else:
        body[field] = draw(
            st.one_of(
                st.booleans(),
                odd_strings,
                st.floats(allow_nan=False, allow_infinity=False).filter(lambda x: not x.is_integer()),
                st.integers(min_value=2**63),
                st.integers(max_value=-(2**63) - 1),
            )
        )
    return Case(json.dumps(body).encode(), BAD_TYPE)


@st.composite
def fuzzed_message(draw: st.DrawFn) -> Case:
    """A v1 or legacy message whose fields (and version) are replaced, removed or added at random."""
    legacy = draw(st.booleans())
    keys = ["symbol", "Date-Time", "Close", "Volume"] if legacy else ["v", "symbol", "ts", "close", "volume"]
    body: dict[str, object] = {}
    for key in keys:
        choice = draw(st.integers(0, 9))
        if choice == 0:
            continue  # missing
        if choice <= 3:
            body[key] = draw(json_scalars)
        elif key in ("ts", "Date-Time"):
            moment = draw(event_times)
            body[key] = (
                moment.strftime("%Y-%m-%d %H:%M:%S") if legacy else _iso(moment, draw(offsets), draw(st.integers(0, 9)))
            )
            if draw(st.booleans()):
                body[key] = draw(st.sampled_from(["", "2026-02-30 10:00:00", "2026-11-24T25:00:00Z", "+10000-01-01"]))
        elif key == "symbol":
            body[key] = draw(symbols | odd_strings)
        elif key == "v":
            body[key] = draw(st.sampled_from([1, 1.0, 2, "1", True, None, 1.0000001]))
        else:
            body[key] = draw(odd_numbers)
    body.update(draw(st.dictionaries(st.text(max_size=6), json_values, max_size=2)))
    return Case(json.dumps(body, allow_nan=True).encode())


@st.composite
def odd_json_text(draw: st.DrawFn) -> Case:
    """JSON-ish text written by hand: duplicate keys, odd number literals, trailing data, other top-level types."""
    literal = draw(
        st.sampled_from(["1e400", "-1e400", "NaN", "Infinity", "-Infinity", "1.0e-400", "00012", "-0", "1E3", "0x10"])
    )
    template = draw(
        st.sampled_from(
            [
                '{"v":1,"symbol":"AB","ts":"2026-11-24T09:15:00Z","close":%s,"volume":1}',
                '{"v":1,"symbol":"AB","ts":"2026-11-24T09:15:00Z","close":1,"volume":%s}',
                '{"v":%s,"symbol":"AB","ts":"2026-11-24T09:15:00Z","close":1,"volume":1}',
                '{"v":1,"symbol":"AB","symbol":"AB","ts":"2026-11-24T09:15:00Z","close":%s,"volume":1}',
                '{"v":1,"symbol":"AB","ts":"2026-11-24T09:15:00Z","close":1,"volume":1} %s',
                '[{"v":1,"symbol":"AB","ts":"2026-11-24T09:15:00Z","close":%s,"volume":1}]',
                '{"Date-Time":"2026-11-24 09:15:00","symbol":"AB","Close":%s,"Volume":7}',
                "%s",
            ]
        )
    )
    return Case((template % literal).encode())


not_json_texts = st.sampled_from(["", "   ", "{", "}", '{"v":1', "v=1", "\u0000", "{,}"]).map(
    lambda text: Case(text.encode(), NOT_JSON)
)
cases = st.one_of(
    st.binary(max_size=80).map(Case),
    st.text(max_size=80).map(lambda text: Case(text.encode())),
    st.text(alphabet=string.printable, max_size=MAX_BYTES + 40).map(lambda text: Case(text.encode())),
    json_values.map(lambda value: Case(json.dumps(value, allow_nan=True).encode())),
    st.just(Case(None)),
    not_json_texts,
    odd_json_text(),
    fuzzed_message(),
    wrong_type_v1(),
    valid_v1(),
)
kafka_timestamps = st.sampled_from([KAFKA_TIME, None])


# --- the test ------------------------------------------------------------------------------------------------------


def _check_tick(row: Row, kafka_timestamp: datetime | None, ingest_time: datetime) -> None:
    values = row.asDict()
    for name in TICKS.schema.fieldNames():
        if name in values and not TICKS.schema[name].nullable:
            assert values[name] is not None, f"accepted tick without {name}: {row}"
    assert row.reject_detail is None
    assert SYMBOL_PATTERN.match(row.symbol), row
    assert math.isfinite(row.close) and 0 < row.close < MAX_CLOSE, row
    assert row.volume >= 0, row
    assert row.message_format in ("v1", "legacy"), row
    event_time = row.event_time.replace(tzinfo=UTC)
    assert FIRST_EVENT <= event_time <= LAST_EVENT, row
    assert event_time.microsecond % 1000 == 0, row
    clock = kafka_timestamp if kafka_timestamp is not None else ingest_time
    assert event_time <= clock + timedelta(seconds=MAX_FUTURE_SECONDS), row


@settings(
    max_examples=30,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(batch=st.lists(st.tuples(cases, kafka_timestamps), min_size=1, max_size=25))
def test_every_record_is_a_tick_or_a_quarantine_row_with_a_reason(
    spark: SparkSession, batch: list[tuple[Case, datetime | None]]
) -> None:
    """The session time zone is UTC (build_spark), so naive datetimes in and out are UTC."""
    rows = [
        ("K", case.value, "stock-ticks", offset % 3, offset, kafka_time.replace(tzinfo=None) if kafka_time else None)
        for offset, (case, kafka_time) in enumerate(batch)
    ]
    ingest_time = KAFKA_TIME + timedelta(seconds=1)
    records = (
        spark.createDataFrame(rows, RECORD_SCHEMA)
        .withColumn("value", F.col("value").cast("string"))  # as jobs.pipeline.kafka_io reads Kafka's bytes
        .withColumn("ingest_time", F.lit(ingest_time.replace(tzinfo=None)).cast("timestamp"))
        .select(*[F.col(field.name).cast(field.dataType) for field in KAFKA_RECORD_SCHEMA])
    )
    parsed = parse_records(records, MAX_BYTES, SOURCE_TZ, MAX_FUTURE_SECONDS)
    out = parsed.select("offset", "symbol", "event_time", "close", "volume", "message_format", "reject_reason",
                        "reject_detail").collect()  # fmt: skip

    assert sorted(row.offset for row in out) == list(range(len(batch))), "a record was lost or doubled"
    for row in out:
        case, kafka_time = batch[row.offset]
        where = f"record {case.value!r}: {row}"
        if row.reject_reason is None:
            _check_tick(row, kafka_time, ingest_time)
        else:
            assert row.reject_reason in PARSE_REASONS, where
            assert row.reject_detail, where
        if case.expect == ACCEPTED:
            assert case.tick is not None
            symbol, event_time, close, volume = case.tick
            assert row.reject_reason is None, where
            assert (row.symbol, row.event_time.replace(tzinfo=UTC), row.volume) == (symbol, event_time, volume), where
            assert row.close == pytest.approx(close, rel=1e-15), where
        elif case.expect == BAD_TYPE:
            assert row.reject_reason == "bad_type", where
        elif case.expect == NOT_JSON:
            assert row.reject_reason == "not_json", where
