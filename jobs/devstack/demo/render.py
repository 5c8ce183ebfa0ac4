"""Rendering with rich: the live progress panel (or one line per update outside a terminal) and the result tables."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import JustifyMethod

    from jobs.devstack.demo.monitor import Progress

SIGNAL_COLOURS = {"Buy": "green", "Sell": "red", "Hold": "dim"}


def progress_table(progress: Progress, rates: tuple[float, float], elapsed: float, phase: str) -> Any:
    """A narrow key/value panel: fits an 80-column terminal."""
    from rich.panel import Panel
    from rich.table import Table

    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column(justify="right")
    grid.add_column()
    grid.add_row("simulator -> Kafka", f"{progress.produced:,}", f"records sent ({rates[0]:,.0f}/s)")
    grid.add_row("stream job", f"{progress.records_read:,}", f"records read ({rates[1]:,.0f} ticks/s)")
    grid.add_row(
        "micro-batches",
        f"{progress.batches:,}",
        f"the last took {progress.last_batch_ms / 1000:.1f} s" if progress.batches else "",
    )
    grid.add_row("ticks", f"{progress.ticks:,}", "valid, de-duplicated")
    grid.add_row(
        "signals", f"{progress.signals_emitted:,}", f"emitted (+{progress.signals_corrected:,} corrected by late ticks)"
    )
    grid.add_row(
        "quarantined", f"{progress.quarantined:,}", f"rejected records; {progress.duplicates:,} duplicates dropped"
    )
    return Panel(grid, title=f"market signals demo: {phase}, {elapsed:.0f} s", title_align="left", expand=False)


def progress_line(progress: Progress, rates: tuple[float, float], elapsed: float, phase: str) -> str:
    return (
        f"[{elapsed:5.0f} s] {phase}: sent {progress.produced:,} ({rates[0]:,.0f}/s), read by the job "
        f"{progress.records_read:,} ({rates[1]:,.0f} ticks/s), batches {progress.batches}, ticks {progress.ticks:,}, "
        f"signals {progress.signals_emitted:,} (+{progress.signals_corrected:,} corrected), "
        f"quarantined {progress.quarantined:,}, duplicates {progress.duplicates:,}"
    )


def _fmt(value: Any, digits: int = 4) -> str:
    import pandas as pd

    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return "NULL"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, pd.Timestamp):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return str(value)


def latest_signals_table(frame: Any, short: int, long: int) -> Any:
    from rich import box
    from rich.table import Table

    table = Table(
        title=f"Latest signal per symbol (v_latest_signals, {len(frame)} symbols)",
        title_justify="left",
        box=box.SIMPLE_HEAD,
    )
    columns: tuple[tuple[str, JustifyMethod], ...] = (
        ("symbol", "left"),
        ("event_time (UTC)", "left"),
        ("close", "right"),
        (f"sma_{short}", "right"),
        (f"sma_{long}", "right"),
        ("volume", "right"),
        ("signal", "left"),
        ("crossover", "left"),
    )
    for column, justify in columns:
        table.add_column(column, justify=justify, no_wrap=True)
    for row in frame.itertuples(index=False):
        colour = SIGNAL_COLOURS.get(row.signal, "")
        table.add_row(
            row.symbol,
            _fmt(row.event_time),
            _fmt(row.close, 2),
            _fmt(row.sma_short),
            _fmt(row.sma_long),
            _fmt(row.volume),
            f"[{colour}]{row.signal}[/]" if colour else row.signal,
            "" if row.crossover is None or row.crossover != row.crossover else row.crossover,
        )
    return table


def quarantine_table(
    observed: dict[str, int], expected: dict[str, int], progress: dict[str, Any], expected_totals: dict[str, Any]
) -> tuple[Any, bool]:
    from rich import box
    from rich.table import Table

    table = Table(title="Quarantine by reason vs injected", title_justify="left", box=box.SIMPLE_HEAD)
    table.add_column("reason")
    table.add_column("quarantined", justify="right")
    table.add_column("injected", justify="right")
    table.add_column("", justify="center")
    reconciled = True
    for reason in sorted(set(observed) | {k for k, v in expected.items() if v}):
        got, want = observed.get(reason, 0), expected.get(reason)
        ok = want is None or got == want
        reconciled &= ok
        table.add_row(reason, f"{got:,}", "-" if want is None else f"{want:,}", "ok" if ok else "[red]differs[/]")
    table.add_section()
    for label, got, want in (
        ("total quarantined", sum(observed.values()), expected_totals.get("quarantined")),
        ("duplicates (dropped)", progress.get("duplicates", 0), expected_totals.get("duplicates")),
        ("ticks accepted", progress.get("ticks", 0), expected_totals.get("ticks")),
    ):
        ok = want is None or got == want
        reconciled &= ok
        table.add_row(label, f"{got:,}", "-" if want is None else f"{want:,}", "ok" if ok else "[red]differs[/]")
    return table, reconciled
