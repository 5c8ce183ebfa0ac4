"""Parsing and validation of tick messages: every record once, valid or with the first failing reason."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence

import pytest
from chispa import assert_df_equality
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from jobs.pipeline.tables import KAFKA_RECORD_SCHEMA, REJECT_REASONS, TICKS, TICKS_QUARANTINE
from jobs.pipeline.transforms.parse import PARSED_COLUMNS, parse_records, quarantine_rows, valid_ticks

MAX_BYTES = 4096
SOURCE_TZ = "Asia/Kolkata"
INGEST_TIME = "2026-12-01 03:04:05"  # UTC, the session time zone; after every event time of these cases
TS = "2026-11-24T09:15:00.123Z"
ISO_HINT = "ISO-8601 with offset or Z, e.g. 2026-11-24T09:15:00.123Z"
LEGACY_HINT = "yyyy-MM-dd HH:mm:ss (in Asia/Kolkata)"
SYMBOL_HINT = "1-16 characters of A-Z 0-9 . _ -"
INTEGER_HINT = "an integer (BIGINT range)"
RANGE_HINT = "a time from 1970-01-01T00:00:00Z to 9999-12-31T23:59:59Z"

OUTCOME_SCHEMA = T.StructType(
    [
        T.StructField("offset", T.LongType()),
        T.StructField("symbol", T.StringType()),
        T.StructField("event_time", T.StringType()),
        T.StructField("close", T.DoubleType()),
        T.StructField("volume", T.LongType()),
        T.StructField("message_format", T.StringType()),
        T.StructField("reject_reason", T.StringType()),
        T.StructField("reject_detail", T.StringType()),
    ]
)
REJECT_SCHEMA = T.StructType(
    [
        T.StructField("offset", T.LongType()),
        T.StructField("reject_reason", T.StringType()),
        T.StructField("reject_detail", T.StringType()),
    ]
)


def v1(**fields: object) -> str:
    """A valid v1 message with some fields replaced (None values are dropped, to remove a field)."""
    message = {"v": 1, "symbol": "SYM001", "ts": TS, "close": 187.23, "volume": 1200, **fields}
    return json.dumps({key: value for key, value in message.items() if value is not None}, ensure_ascii=False)


def legacy(**fields: object) -> str:
    """A valid legacy message with some fields replaced (Date_Time stands for Date-Time; None drops a field)."""
    overrides = {key.replace("_", "-"): value for key, value in fields.items()}
    message = {"symbol": "SYM001", "Date-Time": "2025-07-19 23:30:36", "Close": 525.6, "Volume": 4194, **overrides}
    return json.dumps({key: value for key, value in message.items() if value is not None}, ensure_ascii=False)


def records(spark: SparkSession, values: Sequence[str | None]) -> DataFrame:
    """Kafka records with the given values at offsets 0, 1, ... of partition 0 of topic stock-ticks."""
    rows = [("SYM001", value, "stock-ticks", 0, offset) for offset, value in enumerate(values)]
    coordinates = "kafka_key string, value string, topic string, partition int, offset long"
    frame = spark.createDataFrame(rows, coordinates).withColumns(
        {
            "kafka_timestamp": F.to_timestamp(F.lit(INGEST_TIME)),
            "ingest_time": F.to_timestamp(F.lit(INGEST_TIME)),
        }
    )
    return frame.select(*[F.col(field.name).cast(field.dataType) for field in KAFKA_RECORD_SCHEMA])


def parse(
    spark: SparkSession, values: Sequence[str | None], max_bytes: int = MAX_BYTES, tz: str = SOURCE_TZ
) -> DataFrame:
    return parse_records(records(spark, values), max_bytes, tz)


def outcome(parsed: DataFrame) -> DataFrame:
    """The parsed columns with event_time as UTC text, so the comparison does not depend on Python's zone."""
    return parsed.select(
        "offset",
        "symbol",
        F.date_format("event_time", "yyyy-MM-dd HH:mm:ss.SSSSSS").alias("event_time"),
        "close",
        "volume",
        "message_format",
        "reject_reason",
        "reject_detail",
    ).orderBy("offset")


def rejects(parsed: DataFrame) -> DataFrame:
    return parsed.select("offset", "reject_reason", "reject_detail").orderBy("offset")


@pytest.fixture(scope="module")
def spark_utc(spark: SparkSession) -> Iterator[SparkSession]:
    assert spark.conf.get("spark.sql.session.timeZone") == "UTC"
    yield spark


def test_ansi_mode_is_on(spark: SparkSession) -> None:
    # The parsing must be safe under ANSI, so the tests run with it (the Spark 4 default) on.
    assert spark.conf.get("spark.sql.ansi.enabled").lower() == "true"


def test_output_is_the_input_plus_the_parsed_columns(spark_utc: SparkSession) -> None:
    parsed = parse(spark_utc, [v1()])
    assert parsed.columns == [*KAFKA_RECORD_SCHEMA.fieldNames(), *PARSED_COLUMNS]
    assert [(f.name, f.dataType) for f in parsed.schema.fields[-7:]] == [
        ("symbol", T.StringType()),
        ("event_time", T.TimestampType()),
        ("close", T.DoubleType()),
        ("volume", T.LongType()),
        ("message_format", T.StringType()),
        ("reject_reason", T.StringType()),
        ("reject_detail", T.StringType()),
    ]
    source = records(spark_utc, [v1()])
    assert_df_equality(parsed.select(*source.columns), source, ignore_nullable=True)


def test_valid_v1(spark_utc: SparkSession) -> None:
    values = [
        v1(),
        v1(ts="2026-11-24T09:15:00.123+05:30"),
        v1(ts="2026-11-24T09:15:00.123-04:00"),
        v1(ts="2026-11-24T09:15:00Z"),
        v1(ts="2026-11-24T09:15:00.123456Z"),
        v1(
            ts="2026-11-24T09:15:00.123456789Z"
        ),  # beyond milliseconds: truncated (every engine keys ticks by the millisecond)
        v1(ts="2026-11-24T09:15:00.5+0530"),
        v1(ts="2026-12-01T03:09:05Z"),  # exactly max_future_seconds after the Kafka timestamp: accepted
        v1(close=187),  # an integer price is a number
        v1(volume=0, close=1e-9),
        v1(volume=9223372036854775807),
        v1(symbol="ABCDEFGHIJ012._-"),  # 16 characters, every allowed class
        v1(extra="ignored", nested={"a": [1, 2]}, Close="also ignored"),
    ]
    expected = [
        (0, "SYM001", "2026-11-24 09:15:00.123000", 187.23, 1200),
        (1, "SYM001", "2026-11-24 03:45:00.123000", 187.23, 1200),
        (2, "SYM001", "2026-11-24 13:15:00.123000", 187.23, 1200),
        (3, "SYM001", "2026-11-24 09:15:00.000000", 187.23, 1200),
        (4, "SYM001", "2026-11-24 09:15:00.123000", 187.23, 1200),
        (5, "SYM001", "2026-11-24 09:15:00.123000", 187.23, 1200),
        (6, "SYM001", "2026-11-24 03:45:00.500000", 187.23, 1200),
        (7, "SYM001", "2026-12-01 03:09:05.000000", 187.23, 1200),
        (8, "SYM001", "2026-11-24 09:15:00.123000", 187.0, 1200),
        (9, "SYM001", "2026-11-24 09:15:00.123000", 1e-9, 0),
        (10, "SYM001", "2026-11-24 09:15:00.123000", 187.23, 9223372036854775807),
        (11, "ABCDEFGHIJ012._-", "2026-11-24 09:15:00.123000", 187.23, 1200),
        (12, "SYM001", "2026-11-24 09:15:00.123000", 187.23, 1200),
    ]
    assert_df_equality(
        outcome(parse(spark_utc, values)),
        spark_utc.createDataFrame([(*row, "v1", None, None) for row in expected], OUTCOME_SCHEMA),
        ignore_nullable=True,
    )


def test_valid_legacy_in_the_source_time_zone(spark_utc: SparkSession) -> None:
    values = [
        legacy(),
        legacy(Date_Time="2025-07-20 03:00:00"),  # before 05:30 in Kolkata: the previous day in UTC
        legacy(Close=525, Volume=0, extra=[1]),
    ]
    expected = [
        (0, "SYM001", "2025-07-19 18:00:36.000000", 525.6, 4194),
        (1, "SYM001", "2025-07-19 21:30:00.000000", 525.6, 4194),
        (2, "SYM001", "2025-07-19 18:00:36.000000", 525.0, 0),
    ]
    assert_df_equality(
        outcome(parse(spark_utc, values)),
        spark_utc.createDataFrame([(*row, "legacy", None, None) for row in expected], OUTCOME_SCHEMA),
        ignore_nullable=True,
    )


@pytest.mark.parametrize(
    ("tz", "utc"),
    [
        ("UTC", "2025-07-19 23:30:36"),
        ("America/New_York", "2025-07-20 03:30:36"),  # EDT, -04:00
        ("Europe/London", "2025-07-19 22:30:36"),  # BST, +01:00
        ("+05:30", "2025-07-19 18:00:36"),
    ],
)
def test_legacy_source_time_zone_is_configurable(spark_utc: SparkSession, tz: str, utc: str) -> None:
    row = outcome(parse(spark_utc, [legacy()], tz=tz)).first()
    assert row is not None
    assert (row.event_time, row.reject_reason) == (f"{utc}.000000", None)


def test_instants_and_dates_do_not_depend_on_the_session_time_zone(spark_utc: SparkSession) -> None:
    values = [v1(), v1(ts="2026-11-24T23:15:00.123-05:00"), legacy(), v1(ts="1970-01-01T00:00:00.001+00:00")]

    def instants_and_dates() -> list[tuple[int, str]]:
        ticks = valid_ticks(parse(spark_utc, values)).orderBy("offset")
        selected = ticks.select(F.unix_micros("event_time"), F.col("event_date").cast("string"))
        return [(row[0], row[1]) for row in selected.collect()]

    in_utc = instants_and_dates()
    spark_utc.conf.set("spark.sql.session.timeZone", "America/Los_Angeles")
    try:
        elsewhere = instants_and_dates()
    finally:
        spark_utc.conf.set("spark.sql.session.timeZone", "UTC")
    assert elsewhere == in_utc
    assert [date for _, date in in_utc] == ["2026-11-24", "2026-11-25", "2025-07-19", "1970-01-01"]


# (value, reason, detail): at least one per reason the parser can give, and the order of the checks.
REJECT_CASES: list[tuple[str | None, str, str]] = [
    # not_json
    (v1()[:40], "not_json", "not a JSON object"),  # truncated
    ("[1, 2]", "not_json", "not a JSON object"),
    ("42", "not_json", "not a JSON object"),
    ('"SYM001"', "not_json", "not a JSON object"),
    ("null", "not_json", "not a JSON object"),
    ("SYM001,187.23,1200", "not_json", "not a JSON object"),
    ("", "not_json", "value is empty"),
    ("  \n", "not_json", "value is empty"),
    (None, "not_json", "value is null"),
    (v1()[:-1] + ', "symbol": "SYM002"}', "not_json", "duplicate key in JSON object"),
    # unknown_version
    (v1(v=2), "unknown_version", 'unsupported version 2 (expected "v":1)'),
    (v1(v="1"), "unknown_version", 'unsupported version "1" (expected "v":1)'),
    ('{"v": null, "symbol": "SYM001"}', "unknown_version", 'unsupported version null (expected "v":1)'),
    (v1(v=2, close="abc"), "unknown_version", 'unsupported version 2 (expected "v":1)'),
    ("{}", "unknown_version", 'neither the v1 shape ("v":1) nor the legacy shape (Date-Time, Close, Volume)'),
    (
        '{"symbol": "SYM001", "ts": "' + TS + '", "close": 1.5, "volume": 1}',
        "unknown_version",
        'neither the v1 shape ("v":1) nor the legacy shape (Date-Time, Close, Volume)',
    ),
    (
        '{"foo": "bar"}',
        "unknown_version",
        'neither the v1 shape ("v":1) nor the legacy shape (Date-Time, Close, Volume)',
    ),
    # missing_field (a JSON null counts as missing)
    (v1(volume=None), "missing_field", "missing field(s): volume"),
    (
        '{"v": 1, "symbol": "SYM001", "ts": "' + TS + '", "close": null, "volume": 1}',
        "missing_field",
        "missing field(s): close",
    ),
    ('{"v": 1}', "missing_field", "missing field(s): symbol, ts, close, volume"),
    (legacy(Date_Time=None), "missing_field", "missing field(s): Date-Time"),
    (legacy(Close=None, close=525.6), "missing_field", "missing field(s): Close"),
    (v1(symbol=None, close="abc"), "missing_field", "missing field(s): symbol"),
    # bad_type
    (v1(close="abc"), "bad_type", 'field close: expected a number, got "abc"'),
    (v1(close="187.23"), "bad_type", 'field close: expected a number, got "187.23"'),
    (v1(close=True), "bad_type", "field close: expected a number, got true"),
    (v1(volume=12.5), "bad_type", f"field volume: expected {INTEGER_HINT}, got 12.5"),
    (v1(volume="abc"), "bad_type", f'field volume: expected {INTEGER_HINT}, got "abc"'),
    (v1(volume="1200"), "bad_type", f'field volume: expected {INTEGER_HINT}, got "1200"'),
    (v1(volume=False), "bad_type", f"field volume: expected {INTEGER_HINT}, got false"),
    (v1(volume=9223372036854775808), "bad_type", f"field volume: expected {INTEGER_HINT}, got 9223372036854775808"),
    (v1(volume=1e300), "bad_type", f"field volume: expected {INTEGER_HINT}, got 1.0E300"),
    (v1(symbol=123), "bad_type", "field symbol: expected a string, got 123"),
    (v1(symbol=["SYM001"]), "bad_type", 'field symbol: expected a string, got ["SYM001"]'),
    (v1(ts=1732439700000), "bad_type", "field ts: expected a string, got 1732439700000"),
    (legacy(Close="525.6"), "bad_type", 'field Close: expected a number, got "525.6"'),
    (v1(symbol="x" * 100, close={"a": 1}), "bad_type", 'field close: expected a number, got {"a":1}'),
    (v1(symbol=1, close="abc", ts="later"), "bad_type", "field symbol: expected a string, got 1"),
    (v1(close="y" * 100), "bad_type", f'field close: expected a number, got "{"y" * 63}...'),
    # bad_timestamp
    (
        v1(ts="2026-11-24T09:15:00.123"),
        "bad_timestamp",
        f'field ts: expected {ISO_HINT}, got "2026-11-24T09:15:00.123"',
    ),
    (v1(ts="2026-11-24 09:15:00Z"), "bad_timestamp", f'field ts: expected {ISO_HINT}, got "2026-11-24 09:15:00Z"'),
    (v1(ts="2026-02-30T09:15:00Z"), "bad_timestamp", f'field ts: expected {ISO_HINT}, got "2026-02-30T09:15:00Z"'),
    (v1(ts="2026-11-24T25:15:00Z"), "bad_timestamp", f'field ts: expected {ISO_HINT}, got "2026-11-24T25:15:00Z"'),
    (v1(ts="+12026-11-24T09:15:00Z"), "bad_timestamp", f'field ts: expected {ISO_HINT}, got "+12026-11-24T09:15:00Z"'),
    (v1(ts="2026-11-24T09:15:00Z\n"), "bad_timestamp", f'field ts: expected {ISO_HINT}, got "2026-11-24T09:15:00Z\\n"'),
    (v1(ts="24/11/2026 09:15"), "bad_timestamp", f'field ts: expected {ISO_HINT}, got "24/11/2026 09:15"'),
    (v1(ts=""), "bad_timestamp", f'field ts: expected {ISO_HINT}, got ""'),
    (
        legacy(Date_Time="2025-07-19T23:30:36"),
        "bad_timestamp",
        f'field Date-Time: expected {LEGACY_HINT}, got "2025-07-19T23:30:36"',
    ),
    (
        legacy(Date_Time="2025-07-19 23:30:36.5"),
        "bad_timestamp",
        f'field Date-Time: expected {LEGACY_HINT}, got "2025-07-19 23:30:36.5"',
    ),
    (
        legacy(Date_Time="2025-07-19 23:30"),
        "bad_timestamp",
        f'field Date-Time: expected {LEGACY_HINT}, got "2025-07-19 23:30"',
    ),
    (
        legacy(Date_Time="19-07-2025 23:30:36"),
        "bad_timestamp",
        f'field Date-Time: expected {LEGACY_HINT}, got "19-07-2025 23:30:36"',
    ),
    (
        legacy(Date_Time="2025-02-29 10:00:00"),
        "bad_timestamp",
        f'field Date-Time: expected {LEGACY_HINT}, got "2025-02-29 10:00:00"',
    ),
    (v1(ts="later", symbol="bad symbol"), "bad_timestamp", f'field ts: expected {ISO_HINT}, got "later"'),
    # bad_symbol
    (v1(symbol="sym001"), "bad_symbol", f'field symbol: expected {SYMBOL_HINT}, got "sym001"'),
    (v1(symbol="ABCDEFGHIJKLMNOPQ"), "bad_symbol", f'field symbol: expected {SYMBOL_HINT}, got "ABCDEFGHIJKLMNOPQ"'),
    (v1(symbol="SYM 001"), "bad_symbol", f'field symbol: expected {SYMBOL_HINT}, got "SYM 001"'),
    (v1(symbol=""), "bad_symbol", f'field symbol: expected {SYMBOL_HINT}, got ""'),
    (v1(symbol="SYM001\n"), "bad_symbol", f'field symbol: expected {SYMBOL_HINT}, got "SYM001\\n"'),
    (v1(symbol="SYMÉ"), "bad_symbol", f'field symbol: expected {SYMBOL_HINT}, got "SYMÉ"'),
    (legacy(symbol="sym001", Close=float("nan")), "bad_symbol", f'field symbol: expected {SYMBOL_HINT}, got "sym001"'),
    # non_finite: json.dumps writes NaN/Infinity literals, as Python producers do; 1e400 overflows to Infinity
    (v1(close=float("nan")), "non_finite", "field close: expected a finite number, got NaN"),
    (v1(close=float("inf")), "non_finite", "field close: expected a finite number, got Infinity"),
    (v1(close=float("-inf")), "non_finite", "field close: expected a finite number, got -Infinity"),
    (v1().replace("187.23", "1e400"), "non_finite", "field close: expected a finite number, got Infinity"),
    (legacy(Close=float("nan")), "non_finite", "field Close: expected a finite number, got NaN"),
    (v1(close=float("nan"), volume=-1), "non_finite", "field close: expected a finite number, got NaN"),
    # out of the range every reader represents: poison for Python and pandas, quarantined, event_time left NULL
    (
        v1(ts="9999-12-31T23:30:00-01:00"),
        "bad_timestamp",
        f'field ts: expected {RANGE_HINT}, got "9999-12-31T23:30:00-01:00"',
    ),
    (v1(ts="0000-06-01T00:00:00Z"), "bad_timestamp", f'field ts: expected {RANGE_HINT}, got "0000-06-01T00:00:00Z"'),
    (
        v1(ts="1969-12-31T23:59:59.999Z"),
        "bad_timestamp",
        f'field ts: expected {RANGE_HINT}, got "1969-12-31T23:59:59.999Z"',
    ),
    # future_timestamp: more than stream.max_future_seconds (300) after the Kafka timestamp (INGEST_TIME)
    (
        v1(ts="2026-12-01T03:09:05.001Z"),
        "future_timestamp",
        'field ts: "2026-12-01T03:09:05.001Z" is more than 300 s after the record\'s Kafka timestamp '
        "2026-12-01T03:04:05.000Z",
    ),
    (
        v1(ts="2126-11-24T09:15:00Z"),
        "future_timestamp",
        'field ts: "2126-11-24T09:15:00Z" is more than 300 s after the record\'s Kafka timestamp '
        "2026-12-01T03:04:05.000Z",
    ),
    # price_out_of_range: prices are compared as whole millionths in a BIGINT
    (v1(close=1e9), "price_out_of_range", "field close: expected a number below 1000000000, got 1.0E9"),
    # non_positive_price
    (v1(close=0), "non_positive_price", "field close: expected a number > 0, got 0.0"),
    (v1(close=-1.5), "non_positive_price", "field close: expected a number > 0, got -1.5"),
    (v1(close=-0.0), "non_positive_price", "field close: expected a number > 0, got 0.0"),  # a JSON decimal: no -0
    (legacy(Close=-525.6, Volume=-1), "non_positive_price", "field Close: expected a number > 0, got -525.6"),
    # negative_volume
    (v1(volume=-1), "negative_volume", "field volume: expected an integer >= 0, got -1"),
    (legacy(Volume=-4194), "negative_volume", "field Volume: expected an integer >= 0, got -4194"),
]


def test_every_reject_case_gets_its_reason_and_detail(spark_utc: SparkSession) -> None:
    parsed = parse(spark_utc, [value for value, _, _ in REJECT_CASES])
    expected = [(offset, reason, detail) for offset, (_, reason, detail) in enumerate(REJECT_CASES)]
    assert_df_equality(rejects(parsed), spark_utc.createDataFrame(expected, REJECT_SCHEMA), ignore_nullable=True)


def test_the_cases_cover_every_reason_the_parser_gives() -> None:
    parser_reasons = [reason for reason in REJECT_REASONS if reason not in {"conflicting_duplicate", "too_late"}]
    covered = {reason for _, reason, _ in REJECT_CASES} | {"oversized"}  # oversized: see its own test
    assert covered == set(parser_reasons)


def test_rejected_rows_keep_the_fields_that_parsed(spark_utc: SparkSession) -> None:
    values = [v1(symbol="sym001"), v1(close="abc"), v1(ts="later"), "[]", legacy(Volume=-1)]
    expected = [
        (0, "sym001", "2026-11-24 09:15:00.123000", 187.23, 1200, "v1"),
        (1, "SYM001", "2026-11-24 09:15:00.123000", None, 1200, "v1"),
        (2, "SYM001", None, 187.23, 1200, "v1"),
        (3, None, None, None, None, None),
        (4, "SYM001", "2025-07-19 18:00:36.000000", 525.6, -1, "legacy"),
    ]
    assert_df_equality(
        outcome(parse(spark_utc, values)).drop("reject_reason", "reject_detail"),
        spark_utc.createDataFrame(expected, T.StructType(OUTCOME_SCHEMA.fields[:6])),
        ignore_nullable=True,
    )


def test_integral_float_volume_is_accepted(spark_utc: SparkSession) -> None:
    # Decision: a whole number written as a float (pandas writes 1200.0) is an integer volume; 12.5 is not.
    parsed = parse(spark_utc, [v1(volume=1200.0), v1().replace("1200", "1.2e3"), legacy(Volume=4194.0)])
    rows = parsed.orderBy("offset").select("volume", "reject_reason").collect()
    assert [(row.volume, row.reject_reason) for row in rows] == [(1200, None), (1200, None), (4194, None)]


def test_version_must_be_the_number_one(spark_utc: SparkSession) -> None:
    parsed = parse(spark_utc, [v1(v=1.0), v1(v=True), v1(v=[1])])
    rows = parsed.orderBy("offset").select("message_format", "reject_reason").collect()
    assert [tuple(row) for row in rows] == [("v1", None), (None, "unknown_version"), (None, "unknown_version")]


def test_oversized_counts_utf8_bytes_and_comes_first(spark_utc: SparkSession) -> None:
    at_limit = v1(pad="é" * 20)
    limit = len(at_limit.encode())
    assert limit > len(at_limit)  # é is two bytes: the limit is in bytes, not characters
    over = v1(pad="é" * 20 + "x")
    values = [at_limit, over, "x" * (limit + 1), "[" * (limit + 5), v1(v=2, pad="é" * 21)]
    expected = [
        (0, None, None),
        (1, "oversized", f"value is {limit + 1} bytes, limit {limit}"),
        (2, "oversized", f"value is {limit + 1} bytes, limit {limit}"),
        (3, "oversized", f"value is {limit + 5} bytes, limit {limit}"),
        (4, "oversized", f"value is {limit + 2} bytes, limit {limit}"),
    ]
    assert_df_equality(
        rejects(parse(spark_utc, values, max_bytes=limit)),
        spark_utc.createDataFrame(expected, REJECT_SCHEMA),
        ignore_nullable=True,
    )


def test_a_mixed_batch_keeps_every_row_once(spark_utc: SparkSession) -> None:
    values = [v1(), legacy()] + [value for value, _, _ in REJECT_CASES] + [v1(pad="x" * MAX_BYTES)]
    parsed = parse(spark_utc, values)
    valid, rejected = valid_ticks(parsed), quarantine_rows(parsed)
    assert parsed.count() == len(values)
    assert (valid.count(), rejected.count()) == (2, len(values) - 2)
    offsets = sorted(row.offset for row in valid.select("offset").union(rejected.select("offset")).collect())
    assert offsets == list(range(len(values)))


def _single_character_deletions(message: str) -> list[str]:
    return [message[:index] + message[index + 1 :] for index in range(len(message))]


def test_damaged_messages_never_raise_and_never_yield_incomplete_ticks(spark_utc: SparkSession) -> None:
    message = v1()
    values = (
        [message[:length] for length in range(len(message))]
        + _single_character_deletions(message)
        + _single_character_deletions(legacy())
        + ['{"v": 1, "symbol": ' + "[" * 5000 + "]" * 5000 + "}", '{"v":1,"symbol":"\\u0000"}', "\ufeff" + message]
    )
    parsed = parse(spark_utc, values, max_bytes=20_000)
    summary = parsed.groupBy("reject_reason").count().collect()
    assert sum(row["count"] for row in summary) == len(values)
    assert {row.reject_reason for row in summary} <= {None, *REJECT_REASONS}
    truncated = parsed.where(F.col("offset") < len(message)).select("reject_reason").distinct().collect()
    assert [row.reject_reason for row in truncated] == ["not_json"]
    incomplete = valid_ticks(parsed).where(
        F.exists(F.array(*[F.col(name).isNull() for name in TICKS.schema.fieldNames()]), lambda null: null)
    )
    assert incomplete.count() == 0
    assert quarantine_rows(parsed).where(F.col("reason").isNull() | F.col("detail").isNull()).count() == 0


def _names_and_types(frame: DataFrame) -> list[tuple[str, T.DataType]]:
    return [(field.name, field.dataType) for field in frame.schema.fields]


def test_valid_ticks_are_the_ticks_table_columns(spark_utc: SparkSession) -> None:
    parsed = parse(spark_utc, [v1(), legacy(Date_Time="2025-07-20 03:00:00"), v1(close=-1)])
    ticks = valid_ticks(parsed)
    assert _names_and_types(ticks) == [(field.name, field.dataType) for field in TICKS.schema.fields]
    expected = spark_utc.createDataFrame(
        [
            ("SYM001", "2026-11-24 09:15:00.123", 187.23, 1200, "v1", "stock-ticks", 0, 0, INGEST_TIME, "2026-11-24"),
            ("SYM001", "2025-07-19 21:30:00", 525.6, 4194, "legacy", "stock-ticks", 0, 1, INGEST_TIME, "2025-07-19"),
        ],
        "symbol string, event_time string, close double, volume long, message_format string, topic string, "
        "partition int, offset long, ingest_time string, event_date string",
    ).select(*[F.col(field.name).cast(field.dataType) for field in TICKS.schema.fields])
    assert_df_equality(ticks.orderBy("offset"), expected, ignore_nullable=True)


def test_quarantine_rows_are_the_quarantine_table_columns(spark_utc: SparkSession) -> None:
    bad = v1(symbol="sym001")
    parsed = parse(spark_utc, [v1(), bad, "oops"])
    quarantine = quarantine_rows(parsed)
    assert _names_and_types(quarantine) == [(field.name, field.dataType) for field in TICKS_QUARANTINE.schema.fields]
    expected = spark_utc.createDataFrame(
        [
            (
                "bad_symbol",
                f'field symbol: expected {SYMBOL_HINT}, got "sym001"',
                "SYM001",
                bad,
                "stock-ticks",
                0,
                1,
                INGEST_TIME,
                "sym001",
                "2026-11-24 09:15:00.123",
                INGEST_TIME,
                "2026-12-01",
            ),
            (
                "not_json",
                "not a JSON object",
                "SYM001",
                "oops",
                "stock-ticks",
                0,
                2,
                INGEST_TIME,
                None,
                None,
                INGEST_TIME,
                "2026-12-01",
            ),
        ],
        "reason string, detail string, kafka_key string, value string, topic string, partition int, offset long, "
        "kafka_timestamp string, symbol string, event_time string, ingest_time string, ingest_date string",
    ).select(*[F.col(field.name).cast(field.dataType) for field in TICKS_QUARANTINE.schema.fields])
    assert_df_equality(quarantine.orderBy("offset"), expected, ignore_nullable=True)


@pytest.mark.parametrize("select", [valid_ticks, quarantine_rows], ids=["valid_ticks", "quarantine_rows"])
def test_the_json_is_parsed_once_per_record(spark_utc: SparkSession, select: Callable[[DataFrame], DataFrame]) -> None:
    # A filter pushed down through the projections would inline the parse into every reference (~1800 copies).
    plan = select(parse(spark_utc, [v1()]))._jdf.queryExecution().optimizedPlan().toString()
    assert plan.count("from_json(") == 1
