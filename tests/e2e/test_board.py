"""The live signal board in a real headless Chromium (Debian's chromium + chromium-driver, driven by selenium).

The tests build the job's Delta tables with deltalake (schemas from jobs/pipeline/tables.py), start
`python -m jobs.board` as a real process on a free port, and append commits while the page is open, as the
streaming job does: the page must follow them without a reload.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake
from pyspark.sql import types as T

from jobs.pipeline.tables import PIPELINE_METRICS, SIGNALS, TICKS_QUARANTINE, TableSpec

REPO_ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1500,1300",
]
T0 = datetime(2026, 11, 24, 9, 0, 0, tzinfo=UTC)
WAIT = 30.0


# -- the job's tables as Arrow ----------------------------------------------------------------------------------


def _arrow_type(data_type: T.DataType) -> pa.DataType:
    simple: dict[type, pa.DataType] = {
        T.StringType: pa.string(),
        T.TimestampType: pa.timestamp("us", tz="UTC"),
        T.DoubleType: pa.float64(),
        T.LongType: pa.int64(),
        T.IntegerType: pa.int32(),
        T.DateType: pa.date32(),
    }
    if isinstance(data_type, T.MapType):
        return pa.map_(_arrow_type(data_type.keyType), _arrow_type(data_type.valueType))
    return simple[type(data_type)]


def arrow_schema(spec: TableSpec) -> pa.Schema:
    return pa.schema([pa.field(f.name, _arrow_type(f.dataType), f.nullable) for f in spec.schema.fields])


def append(root: Path, spec: TableSpec, rows: list[dict[str, Any]]) -> None:
    table = pa.Table.from_pylist(rows, schema=arrow_schema(spec))
    write_deltalake(str(root / spec.name), table, mode="append", partition_by=list(spec.partition_by) or None)


def create_empty(root: Path, spec: TableSpec) -> None:
    DeltaTable.create(str(root / spec.name), arrow_schema(spec), partition_by=list(spec.partition_by) or None)


# -- signals computed with the definition in docs/design.md (SMA 9/21, volume rule, crossovers) ------------------


def signal_rows(symbol: str, closes: list[float], volumes: list[int], updated_at: datetime) -> list[dict[str, Any]]:
    def sma(index: int, n: int) -> float | None:
        return sum(closes[index - n + 1 : index + 1]) / n if index + 1 >= n else None

    rows: list[dict[str, Any]] = []
    for i, close in enumerate(closes):
        short, long = sma(i, 9), sma(i, 21)
        prev_volume = volumes[i - 1] if i else None
        rising = prev_volume is not None and volumes[i] > prev_volume
        signal_ = "Hold"
        if short is not None and long is not None and rising:
            signal_ = "Buy" if short > long else "Sell" if short < long else "Hold"
        crossover = None
        if i and short is not None and long is not None and rows[-1]["sma_long"] is not None:
            before = rows[-1]["sma_short"] - rows[-1]["sma_long"]
            if before <= 0 < short - long:
                crossover = "golden_cross"
            elif before >= 0 > short - long:
                crossover = "death_cross"
        when = T0 + timedelta(seconds=30 * i)
        rows.append(
            {
                "symbol": symbol,
                "event_time": when,
                "close": close,
                "volume": volumes[i],
                "sma_short": short,
                "sma_long": long,
                "prev_volume": prev_volume,
                "signal": signal_,
                "crossover": crossover,
                "revision": 0,
                "updated_at": updated_at,
                "batch_id": i // 10,
                "event_date": when.date(),
            }
        )
    return rows


def series(symbol_index: int, ticks: int) -> tuple[list[float], list[int]]:
    closes = [round(100 + 10 * math.sin(step / (4 + symbol_index)) + symbol_index, 2) for step in range(ticks)]
    volumes = [1000 + (step * 37 + symbol_index * 11) % 500 for step in range(ticks)]
    return closes, volumes


# -- the board process and the browser --------------------------------------------------------------------------


@dataclass
class Board:
    url: str
    root: Path
    process: subprocess.Popen[bytes]

    def state(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.url + "api/state", timeout=20) as response:
            return json.loads(response.read())


@pytest.fixture
def board(tmp_path: Path) -> Iterator[Board]:
    """`python -m jobs.board --port 0`: a free port, and the address it printed."""
    root = tmp_path / "delta"
    root.mkdir()
    env = {key: value for key, value in os.environ.items() if not key.startswith("MARKET_SIGNALS_")}
    log_path = tmp_path / "board.log"
    log = log_path.open("wb")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jobs.board",
            "--set",
            f"storage.root={root}",
            "--set",
            "board.refresh_seconds=0.5",
            "--port",
            "0",
        ],
        cwd=REPO_ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + WAIT
        url = None
        while True:
            if url is None:
                printed = re.search(r"signal board: (http://127\.0\.0\.1:(\d+)/) ", log_path.read_text())
                url = printed.group(1) if printed and int(printed.group(2)) > 0 else None
            try:
                if url is not None:
                    with urllib.request.urlopen(url + "healthz", timeout=2):
                        break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                log.flush()
                pytest.fail(f"board did not start: {log_path.read_text()}")
            time.sleep(0.2)
        yield Board(url, root, process)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        log.close()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.fail(
            "chromium and chromium-driver are needed: run `make setup` (apt-get install chromium chromium-driver)"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for flag in [*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(WAIT)
    driver.set_script_timeout(WAIT)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(tmp_path / "chromium-profile", ignore_errors=True)


def wait_for(driver: Any, condition: Callable[[Any], Any], what: str, timeout: float = WAIT) -> Any:
    from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(
            driver, timeout, poll_frequency=0.2, ignored_exceptions=[StaleElementReferenceException]
        ).until(condition)
    except WebDriverException as exc:
        raise AssertionError(
            f"timed out waiting for {what}; page text:\n{driver.find_element('tag name', 'body').text}"
        ) from exc


def table_rows(driver: Any) -> list[dict[str, Any]]:
    """The rows of the signals table as the browser shows them."""
    return driver.execute_script(
        """
        return [...document.querySelectorAll('#signals tbody tr')].map(tr => ({
          symbol: tr.dataset.symbol, signal: tr.dataset.signal, revision: Number(tr.dataset.revision),
          classes: [...tr.classList], cells: [...tr.cells].map(td => td.innerText.trim())}));
        """
    )


def text_of(driver: Any, element_id: str) -> str:
    return driver.find_element("id", element_id).text


# -- the tests ---------------------------------------------------------------------------------------------------


def test_the_page_loads_nothing_from_outside_the_board(board: Board) -> None:
    """No internet needed: every script, style and image the page names is served by the board itself, plotly.min.js
    as the installed plotly package ships it (the version the figures are built for)."""
    from jobs.lake.board.app import plotly_js_path

    with urllib.request.urlopen(board.url, timeout=20) as response:
        html = response.read().decode()
    sources = re.findall(r"<(?:script|link|img)\b[^>]*\b(?:src|href)=\"([^\"]+)\"", html)
    assert "/static/plotly.min.js" in sources
    assert not re.search(r"(https?:)?//", "".join(sources)), sources
    for source in sources:
        with urllib.request.urlopen(board.url + source.lstrip("/"), timeout=20) as response:
            body = response.read()
        assert response.status == 200 and body, source
        if source == "/static/plotly.min.js":
            assert body == plotly_js_path().read_bytes()
    for script in ("/static/board.js", "/static/board.css"):
        with urllib.request.urlopen(board.url + script.lstrip("/"), timeout=20) as response:
            assert not re.search(r"https?://", response.read().decode()), script


def test_missing_then_empty_tables_are_explained(board: Board, browser: Any) -> None:
    browser.get(board.url)
    wait_for(browser, lambda d: "No signals table yet at" in text_of(d, "signals-message"), "the missing-table message")
    assert str(board.root / "signals") in text_of(browser, "signals-message")
    assert "make demo" in text_of(browser, "signals-message")
    assert "No pipeline_metrics table yet" in text_of(browser, "health-message")
    assert "No ticks_quarantine table yet" in text_of(browser, "quarantine-message")
    assert table_rows(browser) == []

    for spec in (SIGNALS, TICKS_QUARANTINE, PIPELINE_METRICS):
        create_empty(board.root, spec)
    wait_for(browser, lambda d: "has no rows yet" in text_of(d, "signals-message"), "the empty-table message")
    assert text_of(browser, "signals-message") == (
        "The signals table has no rows yet: signals appear after the job's first micro-batch."
    )
    assert "pipeline_metrics table has no rows yet" in text_of(browser, "health-message")
    assert table_rows(browser) == []
    assert text_of(browser, "crossovers") == "no crossover yet"


def _first_index(rows: list[dict[str, Any]], kind: str, after: int) -> int:
    return next(i for i, row in enumerate(rows) if i > after and row["crossover"] == kind)


def test_board_follows_the_stream(board: Board, browser: Any) -> None:
    now = datetime.now(UTC)
    long_ago = now - timedelta(hours=2)
    symbols = ["SYM001", "SYM002", "SYM003"]
    full = {}
    for index, symbol in enumerate(symbols):
        closes, volumes = series(index, 90)
        full[symbol] = signal_rows(symbol, closes, volumes, long_ago)
    # SYM002's history stops right before one of its golden crosses; the stream will bring that tick later.
    cross_at = _first_index(full["SYM002"], "golden_cross", 40)
    initial = {symbol: rows[:60] for symbol, rows in full.items()}
    initial["SYM002"] = full["SYM002"][:cross_at]
    append(board.root, SIGNALS, [row for rows in initial.values() for row in rows])

    batch_start = now - timedelta(seconds=20)
    append(
        board.root,
        PIPELINE_METRICS,
        [
            {
                "batch_id": batch,
                "batch_started_at": batch_start + timedelta(seconds=5 * batch),
                "records_read": 500,
                "ticks_written": 490,
                "quarantined": 6 if batch == 0 else 0,
                "quarantined_by_reason": [("not_json", 3), ("too_late", 2), ("bad_type", 1)] if batch == 0 else [],
                "duplicates": 10 if batch else 4,
                "signals_emitted": 490,
                "signals_corrected": 0,
                "batch_duration_ms": 1000,
                "max_event_time_lag_ms": 2500 + batch,
            }
            for batch in range(4)
        ],
    )
    quarantined = [("not_json", 3, now - timedelta(minutes=10)), ("too_late", 2, now - timedelta(minutes=5))]
    quarantined.append(("bad_type", 1, now - timedelta(hours=2)))  # outside the one-hour window
    rows = []
    for reason, count, when in quarantined:
        for _ in range(count):
            rows.append(
                {
                    "reason": reason,
                    "detail": None,
                    "kafka_key": "SYM001",
                    "value": "x",
                    "topic": "stock-ticks",
                    "partition": 0,
                    "offset": len(rows),
                    "kafka_timestamp": when,
                    "symbol": None,
                    "event_time": None,
                    "ingest_time": when,
                    "ingest_date": when.date(),
                }
            )
    append(board.root, TICKS_QUARANTINE, rows)

    browser.get(board.url + "#SYM001")
    wait_for(browser, lambda d: len(table_rows(d)) == 3, "three symbols in the table")
    shown = {row["symbol"]: row for row in table_rows(browser)}
    for symbol in symbols:
        latest = initial[symbol][-1]
        assert shown[symbol]["signal"] == latest["signal"]
        cells = shown[symbol]["cells"]
        assert cells[3] == f"{latest['close']:.2f}"
        assert cells[4] == f"{latest['volume']:,}"
        assert cells[5] == latest["event_time"].strftime("%Y-%m-%d %H:%M:%S")
        assert cells[2] == (
            f"{latest['sma_short']:.3f} {'>' if latest['sma_short'] > latest['sma_long'] else '<'} "
            f"{latest['sma_long']:.3f}"
        )
        assert shown[symbol]["revision"] == 0 and "corrected" not in shown[symbol]["classes"]
        assert "new-crossover" not in shown[symbol]["classes"]  # crossovers written two hours ago are not new
    # Health: 4 batches of 500 records from batch_start to the end of the 4th (15 s + 1 s) -> 125 records/s.
    wait_for(browser, lambda d: text_of(d, "records-per-second").startswith("125\n"), "records/s")
    assert text_of(browser, "batch-duration").startswith("1,000 ms (1,000 ms)")
    assert text_of(browser, "lag").startswith("2.5 s")
    assert text_of(browser, "records-read").startswith("2,000")
    assert text_of(browser, "rejected").startswith("6 / 34")
    reasons = browser.execute_script(
        "return [...document.querySelectorAll('#quarantine tr[data-reason]')]"
        ".map(tr => [tr.dataset.reason, tr.cells[1].innerText]);"
    )
    assert reasons == [["not_json", "3"], ["too_late", "2"]]
    assert "last 60 min: 5" in text_of(browser, "quarantine-window")

    # The chart of the selected symbol: the same figure as jobs.report, with the symbol's Buy/Sell counts.
    wait_for(
        browser, lambda d: d.execute_script("return (document.getElementById('chart').data || []).length") > 0, "chart"
    )
    names = browser.execute_script("return document.getElementById('chart').data.map(t => t.name);")
    buys = sum(1 for row in initial["SYM001"] if row["signal"] == "Buy")
    sells = sum(1 for row in initial["SYM001"] if row["signal"] == "Sell")
    assert names[:5] == ["close", "SMA(9)", "SMA(21)", f"Buy ({buys})", f"Sell ({sells})"]
    closes = browser.execute_script("const d = document.getElementById('chart')._fullData[0]; return Array.from(d.y);")
    assert closes == pytest.approx([row["close"] for row in initial["SYM001"]])
    version_before = board.state()["tables"]["signals"]["version"]

    # The stream brings SYM002's crossing tick: the row updates, is highlighted, and the crossover is listed first.
    fresh = dict(full["SYM002"][cross_at], updated_at=datetime.now(UTC))
    append(board.root, SIGNALS, [fresh])
    wait_for(
        browser,
        lambda d: "new-crossover" in {r["symbol"]: r for r in table_rows(d)}["SYM002"]["classes"],
        "SYM002 highlighted as a new crossover",
    )
    sym002 = {r["symbol"]: r for r in table_rows(browser)}["SYM002"]
    assert sym002["cells"][5] == fresh["event_time"].strftime("%Y-%m-%d %H:%M:%S")
    assert sym002["signal"] == fresh["signal"]
    assert sym002["cells"][6].startswith("golden cross " + fresh["event_time"].strftime("%H:%M:%S"))
    first = browser.find_element("css selector", "#crossovers li")
    assert first.get_attribute("data-symbol") == "SYM002" and first.get_attribute("class") == "new"
    assert first.get_attribute("data-crossover") == "golden_cross"
    # The refresh read the one file that commit added, not the table.
    read = board.state()["tables"]["signals"]["last_change"]
    assert (read["version"], read["commits"], read["files_read"], read["rows_read"]) == (version_before + 1, 1, 1, 1)

    # A late tick corrects SYM001's latest row (a MERGE, as the job does): the row is marked as corrected.
    latest = initial["SYM001"][-1]
    corrected = dict(latest, signal="Sell" if latest["signal"] != "Sell" else "Buy", revision=1, updated_at=now)
    source = pa.Table.from_pylist([corrected], schema=arrow_schema(SIGNALS))
    (
        DeltaTable(str(board.root / "signals"))
        .merge(source, "t.symbol = s.symbol AND t.event_time = s.event_time", source_alias="s", target_alias="t")
        .when_matched_update_all()
        .execute()
    )
    wait_for(browser, lambda d: {r["symbol"]: r for r in table_rows(d)}["SYM001"]["revision"] == 1, "the correction")
    sym001 = {r["symbol"]: r for r in table_rows(browser)}["SYM001"]
    assert "corrected" in sym001["classes"] and sym001["cells"][7] == "corrected r1"
    assert sym001["signal"] == corrected["signal"]
    assert "corrected 1" in text_of(browser, "counts")
    # The chart follows too: the corrected tick moved from one marker series to the other.
    wait_for(
        browser,
        lambda d: d.execute_script("return document.body.dataset.chart") == f"SYM001@{version_before + 2}",
        "the chart redrawn at the new version",
    )


def test_sort_and_filter(board: Board, browser: Any) -> None:
    old = datetime.now(UTC) - timedelta(hours=1)
    rows = []
    for index, symbol in enumerate(["SYM010", "SYM002", "SYM030", "AAPL"]):
        closes, volumes = series(index, 40)
        rows += signal_rows(symbol, closes, volumes, old)
    append(board.root, SIGNALS, rows)
    latest = {row["symbol"]: row for row in rows}  # rows are in time order per symbol: the last one wins

    browser.get(board.url)
    wait_for(browser, lambda d: len(table_rows(d)) == 4, "four symbols")
    assert [r["symbol"] for r in table_rows(browser)] == ["AAPL", "SYM002", "SYM010", "SYM030"]
    header = browser.find_element("css selector", "#signals th[data-key='symbol']")
    header.click()
    assert [r["symbol"] for r in table_rows(browser)] == ["SYM030", "SYM010", "SYM002", "AAPL"]
    browser.find_element("css selector", "#signals th[data-key='close']").click()
    by_close = sorted(latest, key=lambda s: latest[s]["close"])
    assert [r["symbol"] for r in table_rows(browser)] == by_close

    browser.find_element("id", "filter").send_keys("sym0")
    wait_for(browser, lambda d: len(table_rows(d)) == 3, "the text filter")
    assert {r["symbol"] for r in table_rows(browser)} == {"SYM002", "SYM010", "SYM030"}
    browser.find_element("id", "filter").clear()
    browser.execute_script(
        "const s = document.getElementById('signal-filter'); s.value = arguments[0];"
        "s.dispatchEvent(new Event('change'));",
        "Sell",
    )
    sells = sorted(s for s, row in latest.items() if row["signal"] == "Sell")
    assert 0 < len(sells) < 4
    wait_for(browser, lambda d: sorted(r["symbol"] for r in table_rows(d)) == sells, "the signal filter")
    assert text_of(browser, "shown") == f"{len(sells)} of 4 symbols shown"
