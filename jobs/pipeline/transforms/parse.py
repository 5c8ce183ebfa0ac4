"""Parse and validate tick messages (v1 and legacy JSON) from Kafka records; pure DataFrame -> DataFrame.

Every record comes out exactly once, either valid (``reject_reason`` NULL) or with the first failing check's
reason code (see ``jobs.pipeline.tables.REJECT_REASONS``) and a human-readable detail. Nothing here can throw on bad
data under ANSI mode: JSON is parsed PERMISSIVE, and every conversion is a ``try_*`` form guarded by a check of
the value's JSON type.

Decisions (also in the unit tests):
- The value must be one JSON object; duplicate keys make it ambiguous, so it is ``not_json``. Extra keys are
  ignored. A JSON ``null`` field counts as missing.
- ``"v"`` present: the message is v1 only if ``v`` is the number 1, anything else is ``unknown_version``.
  No ``"v"``: legacy if any of ``Date-Time``/``Close``/``Volume`` is present (the others then are
  ``missing_field``), otherwise ``unknown_version`` (neither shape).
- Types are strict JSON types: a number in a string (``"close": "187.2"``) or a boolean is ``bad_type``.
  ``volume`` must be an integral number in the BIGINT range; an integral float such as ``1200.0`` or ``1.2e3``
  is accepted (pandas-based producers write whole numbers as floats), ``12.5`` is ``bad_type``.
- ``NaN``/``Infinity`` literals (what Python's json.dumps writes) and overflowing numbers (``1e400``) parse as
  doubles, so a non-finite ``close`` is ``non_finite``; a non-finite ``volume`` is ``bad_type``.
- v1 ``ts``: ``yyyy-MM-ddTHH:mm:ss[.f{1,9}]`` then ``Z``, ``+HH:MM`` or ``+HHMM``. Event times are stored
  with millisecond precision (finer fractions are truncated): Athena/Trino read Delta timestamps as
  ``timestamp(3)``, so every engine orders and keys ticks identically; two records of one symbol in the same
  millisecond are the same tick (a duplicate, or a conflicting one).
- Event times must lie in [1970-01-01T00:00:00Z, 9999-12-31T23:59:59.999Z] (what Spark, Python, delta-rs, Trino
  and Athena all represent; Kafka timestamps start at the epoch too), else ``bad_timestamp``; and no later than
  the Kafka record's timestamp plus ``max_future_seconds``, else ``future_timestamp`` (one bad clock must not
  move a symbol's newest time into the future and make every later tick too late).
- ``close`` must be below 1e9 (``price_out_of_range``): prices are compared as whole millionths in a BIGINT.
- Legacy ``Date-Time``: exactly ``yyyy-MM-dd HH:mm:ss`` in ``source_timezone`` (a wall-clock time skipped by a DST
  change resolves forward, as java.time does).
"""

from __future__ import annotations

import operator
from collections.abc import Iterable
from functools import lru_cache, reduce

from pyspark import SparkContext
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from jobs.pipeline.tables import TICKS, TICKS_QUARANTINE

V1 = "v1"
LEGACY = "legacy"

PARSED_COLUMNS: tuple[str, ...] = (
    "symbol",
    "event_time",
    "close",
    "volume",
    "message_format",
    "reject_reason",
    "reject_detail",
)

# VARIANT values keep each field's JSON type (string vs number vs boolean), which a STRING or typed schema
# would lose or silently coerce; the option lets NaN/Infinity literals through as doubles.
_JSON_OBJECT = T.MapType(T.StringType(), T.VariantType())
_JSON_OPTIONS = {"allowNonNumericNumbers": "true", "mode": "PERMISSIVE"}

# \A and \z, not ^ and $: Java's $ also matches before a trailing newline.
_SYMBOL_PATTERN = r"\A[A-Z0-9._-]{1,16}\z"
_ISO_TS_PATTERN = r"\A\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:?\d{2})\z"
_LEGACY_TS_PATTERN = r"\A\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\z"
_LEGACY_TS_FORMAT = "yyyy-MM-dd HH:mm:ss"
_SHOWN_CHARS = 64
_MICROS_PER_DAY = 86_400_000_000
# [1970-01-01T00:00:00Z, 10000-01-01T00:00:00Z) in microseconds since the epoch.
_MIN_EVENT_MICROS = 0
_END_EVENT_MICROS = 253_402_300_800_000_000
MAX_CLOSE = 1e9

# The JSON key of each logical field, per message format.
_KEYS: dict[str, dict[str, str]] = {
    "symbol": {V1: "symbol", LEGACY: "symbol"},
    "time": {V1: "ts", LEGACY: "Date-Time"},
    "close": {V1: "close", LEGACY: "Close"},
    "volume": {V1: "volume", LEGACY: "Volume"},
}
_EXPECTED_TYPES = {"symbol": "a string", "time": "a string", "close": "a number", "volume": "an integer (BIGINT range)"}
_ISO_TS_HINT = "ISO-8601 with offset or Z, e.g. 2026-11-24T09:15:00.123Z"
_NUMBER_TYPES = ("BIGINT", "INT", "SMALLINT", "TINYINT", "DOUBLE", "FLOAT")


def _p(name: str) -> Column:
    """An intermediate column of this module (dropped before returning)."""
    return F.col(f"_p_{name}")


def _json_key(field: str) -> Column:
    return F.when(_p("format") == V1, F.lit(_KEYS[field][V1])).otherwise(F.lit(_KEYS[field][LEGACY]))


def _shown(raw: Column) -> Column:
    """A field's JSON text for a detail message, shortened."""
    text = F.to_json(raw)
    shortened = F.concat(F.substring(text, 1, _SHOWN_CHARS), F.lit("..."))
    return F.when(F.length(text) > _SHOWN_CHARS, shortened).otherwise(text)


def _is_number(json_type: Column) -> Column:
    return json_type.isin(*_NUMBER_TYPES) | json_type.startswith("DECIMAL")


def _any(conditions: Iterable[Column]) -> Column:
    return reduce(operator.or_, conditions)


def _is_missing(raw: Column) -> Column:
    return raw.isNull() | F.is_variant_null(raw)


def _format_columns() -> dict[str, Column]:
    fields = _p("fields")
    version = F.try_element_at(fields, F.lit("v"))
    is_version_one = F.coalesce(
        _is_number(F.schema_of_variant(version)) & (F.try_variant_get(version, "$", "double") == 1.0), F.lit(False)
    )
    has_legacy_key = _any(F.map_contains_key(fields, _KEYS[field][LEGACY]) for field in ("time", "close", "volume"))
    has_version = F.map_contains_key(fields, "v")
    return {
        "_p_version": version,
        "_p_format": F.when(has_version & is_version_one, F.lit(V1)).when(~has_version & has_legacy_key, F.lit(LEGACY)),
    }


def _raw_field_columns() -> list[dict[str, Column]]:
    """The raw VARIANT of each logical field for the detected format, then its JSON type."""
    raws = {
        f"_p_raw_{field}": F.when(_p("format") == V1, F.try_element_at(_p("fields"), F.lit(keys[V1]))).when(
            _p("format") == LEGACY, F.try_element_at(_p("fields"), F.lit(keys[LEGACY]))
        )
        for field, keys in _KEYS.items()
    }
    types = {f"_p_type_{field}": F.schema_of_variant(_p(f"raw_{field}")) for field in _KEYS}
    return [raws, types]


def _event_time(text: Column, source_timezone: str) -> Column:
    iso = F.when(text.rlike(_ISO_TS_PATTERN), text.try_cast("timestamp"))
    # The zone goes into the parsed text so the result does not depend on the session time zone.
    legacy = F.when(
        text.rlike(_LEGACY_TS_PATTERN),
        F.try_to_timestamp(F.concat(text, F.lit(f" {source_timezone}")), F.lit(f"{_LEGACY_TS_FORMAT} VV")),
    )
    parsed = F.when(_p("format") == V1, iso).when(_p("format") == LEGACY, legacy)
    return F.timestamp_millis(F.unix_millis(parsed))


def _typed_columns(source_timezone: str) -> list[dict[str, Column]]:
    """Each field converted to its column type, NULL where its JSON type is wrong or it does not fit."""
    volume_decimal = F.try_variant_get(_p("raw_volume"), "$", "decimal(38,18)")
    integral_volume = F.when(
        _is_number(_p("type_volume")) & (volume_decimal == F.floor(volume_decimal)), volume_decimal.try_cast("bigint")
    )
    typed = {
        "symbol": F.when(_p("type_symbol") == "STRING", F.try_variant_get(_p("raw_symbol"), "$", "string")),
        "_p_time_text": F.when(_p("type_time") == "STRING", F.try_variant_get(_p("raw_time"), "$", "string")),
        "close": F.when(_is_number(_p("type_close")), F.try_variant_get(_p("raw_close"), "$", "double")),
        "volume": integral_volume,
        "message_format": _p("format"),
    }
    # Out of range: kept out of event_time (a year-10000 value breaks Python, pandas and other readers).
    micros = F.unix_micros(_p("any_time"))
    in_range = (micros >= _MIN_EVENT_MICROS) & (micros < _END_EVENT_MICROS)
    return [
        typed,
        {"_p_any_time": _event_time(_p("time_text"), source_timezone)},
        {"event_time": F.when(in_range, _p("any_time"))},
    ]


def _about(field: str, expected: str | Column, got: Column) -> Column:
    """A detail message about one field, named by its JSON key."""
    expectation = F.lit(expected) if isinstance(expected, str) else expected
    return F.format_string("field %s: expected %s, got %s", _json_key(field), expectation, got)


def _bad_type_detail(typed: dict[str, Column]) -> Column:
    """About the first field (in message order) whose JSON type is wrong."""
    detail = F.lit(None).cast("string")
    for field in reversed(typed):
        detail = F.when(
            typed[field].isNull(), _about(field, _EXPECTED_TYPES[field], _shown(_p(f"raw_{field}")))
        ).otherwise(detail)
    return detail


def _checks(max_message_bytes: int, source_timezone: str, max_future_seconds: int) -> list[tuple[str, Column, Column]]:
    """(reason, failed condition, detail) in the order the checks run; the first failing one wins."""
    value, fields = F.col("value"), _p("fields")
    size = F.octet_length(value)
    not_json_detail = (
        F.when(value.isNull(), F.lit("value is null"))
        .when(value.rlike(r"\A\s*\z"), F.lit("value is empty"))
        .when(fields.isNull(), F.lit("not a JSON object"))
        .otherwise(F.lit("duplicate key in JSON object"))
    )
    unknown_detail = F.when(
        F.map_contains_key(fields, "v"),
        F.format_string('unsupported version %s (expected "v":1)', _shown(_p("version"))),
    ).otherwise(F.lit('neither the v1 shape ("v":1) nor the legacy shape (Date-Time, Close, Volume)'))
    missing = F.array(*[F.when(_is_missing(_p(f"raw_{field}")), _json_key(field)) for field in _KEYS])
    typed = {"symbol": F.col("symbol"), "time": _p("time_text"), "close": F.col("close"), "volume": F.col("volume")}
    expected_time = F.when(_p("format") == V1, F.lit(_ISO_TS_HINT)).otherwise(
        F.lit(f"{_LEGACY_TS_FORMAT} (in {source_timezone})")
    )
    close, volume = F.col("close"), F.col("volume")
    event_micros = F.unix_micros(F.col("event_time"))
    # The record's own clock: Kafka's timestamp, else (none given) when the job read it.
    record_time = F.coalesce(F.col("kafka_timestamp"), F.col("ingest_time"))
    latest_allowed = F.unix_micros(record_time) + F.lit(max_future_seconds * 1_000_000)
    return [
        (
            "oversized",
            F.coalesce(size > max_message_bytes, F.lit(False)),
            F.format_string("value is %d bytes, limit %d", size, F.lit(max_message_bytes)),
        ),
        (
            "not_json",
            fields.isNull() | (F.size(F.array_distinct(F.map_keys(fields))) < F.size(fields)),
            not_json_detail,
        ),
        ("unknown_version", _p("format").isNull(), unknown_detail),
        (
            "missing_field",
            F.size(F.array_compact(missing)) > 0,
            F.concat(F.lit("missing field(s): "), F.concat_ws(", ", missing)),
        ),
        ("bad_type", _any(column.isNull() for column in typed.values()), _bad_type_detail(typed)),
        ("bad_timestamp", _p("any_time").isNull(), _about("time", expected_time, _shown(_p("raw_time")))),
        (
            "bad_timestamp",
            F.col("event_time").isNull(),
            _about("time", "a time from 1970-01-01T00:00:00Z to 9999-12-31T23:59:59Z", _shown(_p("raw_time"))),
        ),
        (
            "future_timestamp",
            event_micros > latest_allowed,
            F.format_string(
                "field %s: %s is more than %d s after the record's Kafka timestamp %s",
                _json_key("time"),
                _shown(_p("raw_time")),
                F.lit(max_future_seconds),
                F.date_format(record_time, "yyyy-MM-dd'T'HH:mm:ss.SSS'Z'"),
            ),
        ),
        (
            "bad_symbol",
            ~F.col("symbol").rlike(_SYMBOL_PATTERN),
            _about("symbol", "1-16 characters of A-Z 0-9 . _ -", _shown(_p("raw_symbol"))),
        ),
        (
            "non_finite",
            F.isnan(close) | (F.abs(close) == F.lit(float("inf"))),
            _about("close", "a finite number", close.cast("string")),
        ),
        ("non_positive_price", close <= 0, _about("close", "a number > 0", close.cast("string"))),
        (
            "price_out_of_range",
            close >= MAX_CLOSE,
            _about("close", "a number below 1000000000", close.cast("string")),
        ),
        ("negative_volume", volume < 0, _about("volume", "an integer >= 0", volume.cast("string"))),
    ]


def _reject_columns(max_message_bytes: int, source_timezone: str, max_future_seconds: int) -> list[dict[str, Column]]:
    first_failure: Column | None = None
    for reason, failed, detail in _checks(max_message_bytes, source_timezone, max_future_seconds):
        outcome = F.struct(F.lit(reason).alias("reason"), detail.alias("detail"))
        first_failure = F.when(failed, outcome) if first_failure is None else first_failure.when(failed, outcome)
    assert first_failure is not None, "no checks"
    return [{"_p_reject": first_failure}, {"reject_reason": _p("reject.reason"), "reject_detail": _p("reject.detail")}]


@lru_cache(maxsize=8)
def _parse_stages(
    context: SparkContext, max_message_bytes: int, source_timezone: str, max_future_seconds: int
) -> tuple[dict[str, Column], ...]:
    """The columns parse_records adds, stage by stage (each stage reads the ones before it).

    Built once per Spark context and settings: the expressions are the same for every batch, and building them
    costs ~4,500 py4j calls (~0.3-0.5 s of the driver per micro-batch). `context` is part of the key only: a
    Column belongs to the JVM it was built in.
    """
    # Oversized values are not parsed at all: the limit bounds the parsing cost too.
    fields = F.when(
        F.octet_length("value") <= max_message_bytes,
        F.from_json(F.col("value"), _JSON_OBJECT, _JSON_OPTIONS),  # type: ignore[arg-type]  # a MapType works; the stubs omit it
    )
    return (
        {"_p_fields": fields},
        _format_columns(),
        *_raw_field_columns(),
        *_typed_columns(source_timezone),
        *_reject_columns(max_message_bytes, source_timezone, max_future_seconds),
    )


def parse_records(
    records: DataFrame, max_message_bytes: int, source_timezone: str, max_future_seconds: int = 300
) -> DataFrame:
    """Every input record once: its columns plus the parsed tick fields and reject_reason/reject_detail.

    ``records`` has the columns of ``jobs.pipeline.tables.KAFKA_RECORD_SCHEMA``. Rejected rows keep whatever fields did
    parse (``symbol`` when it is a string, ``event_time`` when it parsed) for the quarantine table.
    """
    context = records.sparkSession.sparkContext
    parsed = reduce(
        DataFrame.withColumns,
        _parse_stages(context, max_message_bytes, source_timezone, max_future_seconds),
        records,
    )
    return _optimizer_barrier(parsed, records.columns)


def _optimizer_barrier(df: DataFrame, passthrough: list[str]) -> DataFrame:
    """The parsed columns through a one-row generator, which the optimizer does not push filters below.

    Without it a filter on reject_reason (valid_ticks, quarantine_rows) is pushed down through the projections
    and every reference is inlined: the plan then held ~1800 copies of the JSON parse and ran 10-80x slower.
    """
    return df.select(*passthrough, F.inline(F.array(F.struct(*PARSED_COLUMNS))))


def utc_date(timestamp: Column) -> Column:
    """The UTC calendar date of a timestamp, whatever the session time zone (to_date would follow it)."""
    return F.date_from_unix_date(F.floor(F.unix_micros(timestamp) / _MICROS_PER_DAY).cast("int"))


def valid_ticks(parsed: DataFrame) -> DataFrame:
    """The valid rows of ``parse_records`` in the columns of TICKS; event_date is the UTC date of event_time."""
    return (
        parsed.where(F.col("reject_reason").isNull())
        .withColumn("event_date", utc_date(F.col("event_time")))
        .select(*TICKS.schema.fieldNames())
    )


def quarantine_rows(parsed: DataFrame) -> DataFrame:
    """The rejected rows of ``parse_records`` in the columns of TICKS_QUARANTINE; ingest_date is UTC."""
    return (
        parsed.where(F.col("reject_reason").isNotNull())
        .withColumns(
            {
                "reason": F.col("reject_reason"),
                "detail": F.col("reject_detail"),
                "ingest_date": utc_date(F.col("ingest_time")),
            }
        )
        .select(*TICKS_QUARANTINE.schema.fieldNames())
    )
