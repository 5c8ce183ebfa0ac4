"""The view files in sql/: strict Trino, faithful DuckDB translation, window lengths, file conventions."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlglot
from sqlglot.errors import ErrorLevel

from jobs.lake.sql_views import (
    SQL_DIR,
    ViewError,
    WindowMismatch,
    Windows,
    check_windows,
    deployable_text,
    load_views,
    parse_view,
    translate_query,
    translate_view,
)
from jobs.pipeline.config import REPO_ROOT, load_config

VIEW_FILES = sorted(SQL_DIR.glob("*.sql"))
EXPECTED_VIEWS = {"v_signals", "v_latest_signals", "v_crossovers", "v_signal_summary"}


def test_the_four_views_exist() -> None:
    assert {path.stem for path in VIEW_FILES} == EXPECTED_VIEWS


@pytest.mark.parametrize("path", VIEW_FILES, ids=lambda p: p.name)
def test_view_parses_as_strict_trino_and_round_trips(path: Path) -> None:
    statement = deployable_text(path.read_text())
    parsed = sqlglot.parse(statement, read="trino", error_level=ErrorLevel.RAISE)
    assert len(parsed) == 1
    regenerated = parsed[0].sql(dialect="trino", unsupported_level=ErrorLevel.RAISE)
    # Trino -> Trino is stable: what sqlglot understood is what the file says.
    assert sqlglot.parse_one(regenerated, read="trino") == parsed[0]


@pytest.mark.parametrize("path", VIEW_FILES, ids=lambda p: p.name)
def test_view_translates_to_duckdb_without_unsupported_constructs(path: Path) -> None:
    view = parse_view(path)
    duckdb_sql = translate_view(view)
    assert duckdb_sql.startswith(f"CREATE OR REPLACE VIEW {view.name} AS")


@pytest.mark.parametrize("path", VIEW_FILES, ids=lambda p: p.name)
def test_view_reads_only_known_tables_and_views_unqualified(path: Path) -> None:
    view = parse_view(path)
    assert view.references <= {"ticks"} | EXPECTED_VIEWS
    for table in view.expression.expression.find_all(sqlglot.exp.Table):
        assert not table.db, f"{path.name}: {table.sql('trino')} must be unqualified (Athena resolves the database)"


def test_deployed_statement_is_the_file_without_header_and_semicolon() -> None:
    text = "-- header\n-- more header\n\nCREATE OR REPLACE VIEW v AS\n-- kept\nSELECT 1 AS x;\n"
    assert deployable_text(text) == "CREATE OR REPLACE VIEW v AS\n-- kept\nSELECT 1 AS x"


def test_views_load_in_dependency_order() -> None:
    names = [view.name for view in load_views()]
    assert names[0] == "v_signals"
    assert set(names) == EXPECTED_VIEWS
    assert [view.name for view in load_views(names=["v_crossovers"])] == ["v_signals", "v_crossovers"]


def test_window_lengths_appear_once_and_match_every_profile() -> None:
    (signals,) = [view for view in load_views() if view.name == "v_signals"]
    assert signals.windows == Windows(9, 21)
    assert signals.statement.count("9 AS short_window") == 1 and signals.statement.count("21 AS long_window") == 1
    assert [view.windows for view in load_views() if view.name != "v_signals"] == [None, None, None]
    for profile in ("local.yaml", "aws.yaml"):
        environ = {"MARKET_SIGNALS_BUCKET": "b", "MSK_BOOTSTRAP_SERVERS": "k:9092"}
        config = load_config(REPO_ROOT / "conf" / profile, environ=environ)
        check_windows(load_views(), Windows(config.signals.sma_short, config.signals.sma_long))


def test_window_mismatch_is_refused_naming_the_file() -> None:
    with pytest.raises(
        WindowMismatch, match=r"v_signals\.sql computes sma_short=9, sma_long=21 .* sma_short=5, sma_long=20"
    ):
        check_windows(load_views(), Windows(5, 20))


def test_substituted_windows_replace_only_the_params_literals() -> None:
    (signals,) = [view for view in load_views() if view.name == "v_signals"]
    translated = translate_view(signals, windows=Windows(3, 5))
    assert "3 AS short_window" in translated and "5 AS long_window" in translated
    assert "9 AS short_window" not in translated
    assert signals.windows == Windows(9, 21)  # the loaded view is untouched


@pytest.mark.parametrize("windows", [None, Windows(3, 5)], ids=["as deployed", "substituted"])
def test_local_v_signals_has_constant_frames_and_lag_offsets(windows: Windows | None) -> None:
    # DuckDB evaluates a frame whose bounds are column values per row (about twice as slow at 10M ticks).
    (signals,) = [view for view in load_views() if view.name == "v_signals"]
    local = sqlglot.parse_one(translate_view(signals, windows=windows), read="duckdb")
    specs = list(local.find_all(sqlglot.exp.WindowSpec))
    lags = list(local.find_all(sqlglot.exp.Lag))
    assert len(specs) >= 4 and len(lags) >= 3
    for node in [*(spec.args.get("start") for spec in specs), *(lag.args.get("offset") for lag in lags)]:
        if node is not None and not isinstance(node, str):
            assert node.find(sqlglot.exp.Column) is None, node.sql("duckdb")
    expected = windows or Windows(9, 21)
    frames = {spec.sql("duckdb") for spec in specs if spec.args.get("start") not in (None, "UNBOUNDED")}
    assert frames == {
        f"ROWS BETWEEN {expected.sma_short} - 1 PRECEDING AND CURRENT ROW",
        f"ROWS BETWEEN {expected.sma_long} - 1 PRECEDING AND CURRENT ROW",
    }
    # The deployed text still names the lengths once, in params.
    assert "short_window - 1 PRECEDING" in signals.statement


def _write(tmp_path: Path, name: str, body: str) -> Path:
    path = tmp_path / f"{name}.sql"
    path.write_text(body)
    return path


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("CREATE OR REPLACE VIEW v_bad AS SELECT FROM WHERE", r"v_bad\.sql: not valid Trino SQL"),
        ("SELECT 1", r"v_bad\.sql: expected a CREATE OR REPLACE VIEW"),
        ("CREATE OR REPLACE VIEW v_other AS SELECT 1 AS x", r"v_bad\.sql: creates view 'v_other'"),
        ("CREATE OR REPLACE VIEW db.v_bad AS SELECT 1 AS x", r"v_bad\.sql: the view name must be unqualified"),
        ("CREATE OR REPLACE VIEW v_bad AS SELECT a / b AS x FROM ticks", r"v_bad\.sql: uses '/'"),
        ("CREATE OR REPLACE VIEW v_bad AS SELECT a FROM ticks FETCH FIRST 1 ROWS WITH TIES", r"v_bad\.sql: uses FETCH"),
        (
            "CREATE OR REPLACE VIEW v_bad AS SELECT approx_percentile(a, w, 0.5) AS p FROM ticks",
            r"v_bad\.sql: uses APPROX",
        ),
        ("CREATE OR REPLACE VIEW v_bad AS SELECT my_udf(a) AS p FROM ticks", r"v_bad\.sql: uses function my_udf\(\)"),
        (
            "CREATE OR REPLACE VIEW v_bad AS WITH params AS (SELECT 9 AS short_window) SELECT 1 AS x",
            r"v_bad\.sql: the params CTE must define both",
        ),
    ],
)
def test_a_view_that_does_not_translate_faithfully_is_an_error_naming_it(
    tmp_path: Path, body: str, message: str
) -> None:
    with pytest.raises(ViewError, match=message):
        load_views(_write(tmp_path, "v_bad", body).parent)


def test_dependency_cycle_is_an_error(tmp_path: Path) -> None:
    _write(tmp_path, "v_a", "CREATE OR REPLACE VIEW v_a AS SELECT * FROM v_b")
    _write(tmp_path, "v_b", "CREATE OR REPLACE VIEW v_b AS SELECT * FROM v_a")
    with pytest.raises(ViewError, match="cycle"):
        load_views(tmp_path)


def test_ad_hoc_queries_are_translated_or_refused() -> None:
    assert (
        translate_query("SELECT MIN_BY(close, event_time) FROM ticks") == "SELECT ARG_MIN(close, event_time) FROM ticks"
    )
    with pytest.raises(ValueError, match="--dialect duckdb"):
        translate_query("SELECT volume / 2 FROM ticks")
    with pytest.raises(ValueError, match="not valid trino SQL"):
        translate_query("SELEC 1")
