"""Adversarial streams (out-of-order, late, too-late, duplicate and conflicting ticks, across batches): after every
micro-batch run, the Athena views on Trino, read through the Glue catalog, equal the streamed `signals` table."""

from __future__ import annotations

import pandas as pd
import pytest

from jobs.aws.athena import deploy_views_trino
from jobs.aws.glue import sync_catalog
from jobs.lake.delta_log import open_delta_table, read_delta_arrow
from jobs.lake.query import arrow_to_pandas, run_query
from jobs.pipeline.config import AppConfig
from jobs.pipeline.transforms.signals import SIGNAL_COLUMNS
from jobs.stream_signals import run
from tests.integration.test_stream_signals import _close, legacy, v1

COLUMNS = [*SIGNAL_COLUMNS, "event_date"]


def table(config: AppConfig, name: str) -> pd.DataFrame:
    return arrow_to_pandas(read_delta_arrow(open_delta_table(config, name)))


def assert_views_equal_the_signals_table(config: AppConfig, rows_equal) -> pd.DataFrame:
    signals = table(config, "signals")
    rows_equal(run_query(config, "SELECT * FROM v_signals", engine_name="trino"), signals, COLUMNS)
    latest = signals[signals["event_time"] == signals.groupby("symbol")["event_time"].transform("max")]
    rows_equal(run_query(config, "SELECT * FROM v_latest_signals", engine_name="trino"), latest, COLUMNS)
    return signals


@pytest.mark.timeout(1500)  # three stream runs on Spark, plus the session's Trino start when it runs first
def test_views_on_trino_follow_late_duplicate_and_conflicting_ticks_across_batches(
    spark, trino_lake, kafka_broker, kafka_topic, produce, rows_equal
) -> None:
    topic = kafka_topic()
    config = trino_lake(
        f"kafka.bootstrap_servers={kafka_broker.address}",
        f"kafka.topic={topic}",
        "signals.allowed_lateness_seconds=1200",
    )
    # Batch 1: AAA out of order with gaps, BBB in the legacy format every 2 minutes, a re-send and a conflict
    # (inside the lateness: an older repeat is too_late, whatever it repeats).
    aaa = [m for m in range(40) if m not in (12, 25, 30)]
    aaa = [m for pair in zip(aaa[1::2], aaa[::2], strict=False) for m in pair] + aaa[len(aaa) - len(aaa) % 2 :]
    produce(
        topic,
        [v1("AAA", m) for m in aaa]
        + [legacy("BBB", m) for m in range(0, 40, 2) if m != 20]
        + [v1("AAA", 35), v1("AAA", 36, close=_close(36) + 3)],
    )
    run(spark, config, once=True, timeout_seconds=300)
    sync_catalog(config)
    assert [result.view for result in deploy_views_trino(config)][0] == "v_signals"
    first = assert_views_equal_the_signals_table(config, rows_equal)
    assert len(first) == 37 + 19

    # Batch 2: late ticks inside the horizon (AAA 30 and 25, BBB 20), one too late (AAA 12), a re-send of a stored
    # tick and a conflict with one (both inside the horizon), new ticks.
    produce(
        topic,
        [v1("AAA", 30), v1("AAA", 12), v1("AAA", 25), v1("AAA", 37), v1("AAA", 38, close=_close(38) + 1)]
        + [legacy("BBB", 20)]
        + [legacy("BBB", m) for m in range(40, 46)],
    )
    run(spark, config, once=True, timeout_seconds=300)
    second = assert_views_equal_the_signals_table(config, rows_equal)
    assert len(second) == len(first) + 2 + 1 + 6
    assert (second["revision"] > 0).any(), "late ticks corrected rows after them"

    # Batch 3: a tick between two stored minutes, a new symbol, more ticks; the views still read the latest commit.
    produce(
        topic,
        [v1("AAA", 33.5, close=180.0)] + [v1("AAA", m) for m in range(40, 46)] + [v1("CCC", m) for m in range(25)],
    )
    run(spark, config, once=True, timeout_seconds=300)
    third = assert_views_equal_the_signals_table(config, rows_equal)
    assert len(third) == len(second) + 1 + 6 + 25

    quarantine = table(config, "ticks_quarantine")
    assert sorted(quarantine["reason"]) == ["conflicting_duplicate", "conflicting_duplicate", "too_late"]
    reasons = run_query(
        config,
        "SELECT reason, count(*) AS n FROM ticks_quarantine GROUP BY reason ORDER BY reason",
        engine_name="trino",
    )
    assert reasons.to_dict("records") == [{"reason": "conflicting_duplicate", "n": 2}, {"reason": "too_late", "n": 1}]
