"""The results after the run: latest signal per symbol, quarantine reconciliation, charts."""

from __future__ import annotations

from typing import Any

from jobs.devstack.demo.plan import LATEST_SQL, QUARANTINE_SQL, Plan
from jobs.devstack.demo.render import latest_signals_table, quarantine_table
from jobs.pipeline.config import AppConfig


def chart_symbols(config: AppConfig, count: int) -> list[str]:
    """The symbols with the most crossovers (then the most Buy/Sell signals): the liveliest charts."""
    from jobs.lake.query import run_query

    frame = run_query(
        config,
        (
            "SELECT symbol, "
            "COUNT(crossover) AS crossovers, "
            "SUM(CASE WHEN signal <> 'Hold' THEN 1 ELSE 0 END) AS actions "
            "FROM signals GROUP BY symbol ORDER BY crossovers DESC, actions DESC, symbol LIMIT " + str(int(count))
        ),
    )
    return list(frame["symbol"])


def show_results(plan: Plan, run: dict[str, Any], console: Any) -> dict[str, Any]:
    from jobs.lake.query import run_query
    from jobs.lake.report import write_charts

    config = plan.config
    latest = run_query(config, LATEST_SQL)
    latest_csv = plan.data_dir / "latest_signals.csv"
    # Full precision next to the rounded table: data, not presentation.
    latest.to_csv(latest_csv, index=False, date_format="%Y-%m-%dT%H:%M:%S.%fZ", float_format="%.17g")
    console.print()
    console.print(latest_signals_table(latest, config.signals.sma_short, config.signals.sma_long))
    counts = latest["signal"].value_counts().to_dict()
    console.print(
        f"latest signals: Buy {counts.get('Buy', 0)}, Sell {counts.get('Sell', 0)}, "
        f"Hold {counts.get('Hold', 0)}  (full precision: {latest_csv})"
    )

    quarantine = run_query(config, QUARANTINE_SQL)
    observed = {str(row.reason): int(row.records) for row in quarantine.itertuples(index=False)}
    expected_block = run["simulator"].get("expected", {})
    table, reconciled = quarantine_table(
        observed, expected_block.get("quarantined_by_reason", {}), run["progress"], expected_block
    )
    console.print()
    console.print(table)
    read, sent = run["progress"].get("records_read", 0), run["simulator"].get("sent")
    if reconciled:
        console.print("counts reconcile: records read = ticks + quarantined + duplicates, as injected")
    elif sent is not None and read < sent:
        console.print(
            f"[yellow]partial counts: the job had read {read:,} of the {sent:,} records sent when it "
            "was stopped (raise --drain on a busy machine)[/]"
        )
    else:
        console.print("[yellow]counts differ from the simulator's summary (see the table)[/]")

    symbols = chart_symbols(config, plan.chart_count)
    charts = write_charts(config, symbols, plan.data_dir / "charts") if symbols else []
    console.print()
    console.print(f"charts ({', '.join(symbols)}):")
    for path in charts:
        console.print(f"  {path}", soft_wrap=True)
    return {
        "latest_signals_csv": str(latest_csv),
        "latest_signals_rows": len(latest),
        "quarantine": observed,
        "reconciled": reconciled,
        "chart_symbols": symbols,
        "charts": [str(path) for path in charts],
    }
