"""notebooks/signals.ipynb runs top to bottom against tables the streaming job wrote, and draws its chart."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from jobs.stream_signals import run

REPO_ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = REPO_ROOT / "notebooks" / "signals.ipynb"
T0 = datetime(2026, 11, 24, 9, 0, 0, tzinfo=UTC)


def _records(symbols: int = 3, steps: int = 45) -> list[tuple[str | None, str]]:
    """Clean ticks on a sine wave (so the averages cross), plus a few records the job must quarantine."""
    records: list[tuple[str | None, str]] = []
    for step in range(steps):
        for index in range(symbols):
            symbol = f"SYM{index + 1:03d}"
            ts = (T0 + timedelta(seconds=30 * step)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
            close = round(100 + 10 * math.sin(step / (4 + index)) + index, 2)
            volume = 1000 + (step * 37 + index * 11) % 500
            records.append((symbol, json.dumps({"v": 1, "symbol": symbol, "ts": ts, "close": close, "volume": volume})))
    records += [
        ("SYM001", "not json at all"),
        ("SYM002", json.dumps({"v": 1, "symbol": "SYM002", "ts": "2026-11-24T09:00:00Z", "close": -1.0, "volume": 10})),
        (None, json.dumps({"v": 1, "symbol": "SYM003", "close": 1.0, "volume": 10})),
    ]
    return records


def test_committed_notebook_has_no_outputs() -> None:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"outputs left in {cell.id}"


def test_notebook_executes_against_the_job_tables(
    spark, make_config, kafka_broker, kafka_topic, produce, monkeypatch: pytest.MonkeyPatch
) -> None:
    topic = kafka_topic()
    config = make_config(f"kafka.bootstrap_servers={kafka_broker.address}", f"kafka.topic={topic}")
    produce(topic, _records())
    run(spark, config, once=True, timeout_seconds=300)

    # The kernel inherits the environment: the profile's own overrides point it at this test's tables.
    monkeypatch.setenv("MARKET_SIGNALS_STORAGE__ROOT", config.storage.root)
    monkeypatch.setenv("MARKET_SIGNALS_STORAGE__CHECKPOINT_ROOT", config.storage.checkpoint_root)
    monkeypatch.setenv("MARKET_SIGNALS_SPARK__DRIVER_MEMORY", "1g")
    monkeypatch.setenv("MARKET_SIGNALS_SPARK__SHUFFLE_PARTITIONS", "2")
    monkeypatch.setenv("MARKET_SIGNALS_CONFIG", str(REPO_ROOT / "conf" / "local.yaml"))
    monkeypatch.delenv("MARKET_SIGNALS_SYMBOL", raising=False)

    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(
        notebook, kernel_name="python3", timeout=300, resources={"metadata": {"path": str(NOTEBOOK.parent)}}
    )
    client.execute()  # raises CellExecutionError, with the cell and its traceback, on any error

    code_cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert not [out for cell in code_cells for out in cell.outputs if out.output_type == "error"]
    chart_cells = [cell for cell in code_cells if "signal_figure" in cell.source]
    assert len(chart_cells) == 1
    images = [out for out in chart_cells[0].outputs if "image/png" in out.get("data", {})]
    assert images, f"the chart cell produced no image: {chart_cells[0].outputs}"
    text = "".join(out.get("text", "") for cell in code_cells for out in cell.outputs)
    assert "135 signals for 3 symbols" in text
    for reason in ("not_json", "non_positive_price", "missing_field"):
        assert reason in text
