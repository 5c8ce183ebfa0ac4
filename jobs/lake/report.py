"""Charts of the signals table: price with SMA short/long, Buy/Sell markers, crossovers, volume beneath.

    python -m jobs.report --config conf/local.yaml --symbols SYM001,SYM002 [--out DIR] [--format png,html]

Reads the `signals` Delta table with deltalake (no Spark, works on a local root and on S3) and writes, per
symbol, a PNG (matplotlib) and a self-contained interactive HTML (plotly, the JavaScript embedded, so the file
opens offline). The same figure builders are used by the demo and the example notebook.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from jobs.pipeline.config import AppConfig, ConfigError, add_config_arguments, config_from_args, resolve_local_path

FORMATS = ("png", "html")
DEFAULT_OUT = ".local/charts"
COLUMNS = ["symbol", "event_time", "close", "volume", "sma_short", "sma_long", "signal", "crossover"]

# One palette for both renderers, so the PNG and the HTML read the same.
COLOURS = {
    "close": "#1f2937",
    "sma_short": "#2563eb",
    "sma_long": "#f59e0b",
    "Buy": "#16a34a",
    "Sell": "#dc2626",
    "golden_cross": "#ca8a04",
    "death_cross": "#6b21a8",
    "volume": "#94a3b8",
}


class ReportError(RuntimeError):
    """A chart that cannot be drawn: missing table, unknown symbol, bad option. The message says why."""


def load_signals(config: AppConfig, symbols: Sequence[str], last: int | None = None) -> pd.DataFrame:
    """The signals of `symbols` ordered by symbol and event_time (the last `last` ticks of each if given)."""
    import pyarrow.compute as pc

    from jobs.lake.delta_log import open_delta_table, read_delta_arrow

    table = open_delta_table(config, "signals")
    if table is None:
        raise ReportError(
            f"no signals table at {config.table_path('signals')}: run the streaming job (or `make demo`) first"
        )
    wanted = list(dict.fromkeys(symbols))
    frame = read_delta_arrow(table, columns=COLUMNS, filter=pc.field("symbol").isin(wanted)).to_pandas()
    missing = [symbol for symbol in wanted if symbol not in set(frame["symbol"])]
    if missing:
        known = sorted(set(read_delta_arrow(table, columns=["symbol"]).column("symbol").to_pylist()))
        hint = ", ".join(known[:8]) + (", ..." if len(known) > 8 else "") if known else "none: the table is empty"
        raise ReportError(f"no signals for {', '.join(missing)} in {config.table_path('signals')} (known: {hint})")
    frame = frame.sort_values(["symbol", "event_time"], kind="stable").reset_index(drop=True)
    if last:
        frame = frame.groupby("symbol", sort=False).tail(last).reset_index(drop=True)
    return frame


def _window_labels(config: AppConfig | None) -> tuple[str, str]:
    short, long = (config.signals.sma_short, config.signals.sma_long) if config else (9, 21)
    return f"SMA({short})", f"SMA({long})"


def _one_symbol(frame: pd.DataFrame, symbol: str) -> pd.DataFrame:
    rows = frame[frame["symbol"] == symbol]
    if rows.empty:
        raise ReportError(f"no signals for {symbol}")
    rows = rows.sort_values("event_time").copy()
    # Matplotlib and plotly both want naive or tz-aware consistently; keep UTC and say so in the axis label.
    rows["event_time"] = pd.to_datetime(rows["event_time"], utc=True).dt.tz_localize(None)
    return rows


def signal_figure(frame: pd.DataFrame, symbol: str, config: AppConfig | None = None) -> Any:
    """A matplotlib Figure (not registered with pyplot, so nothing leaks between calls)."""
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    rows = _one_symbol(frame, symbol)
    short_label, long_label = _window_labels(config)
    figure = Figure(figsize=(11, 6.2), dpi=100, layout="constrained")
    price, volume = figure.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    times = rows["event_time"]

    price.plot(times, rows["close"], color=COLOURS["close"], linewidth=1.1, label="close")
    price.plot(times, rows["sma_short"], color=COLOURS["sma_short"], linewidth=1.4, label=short_label)
    price.plot(times, rows["sma_long"], color=COLOURS["sma_long"], linewidth=1.4, label=long_label)
    for signal, marker in (("Buy", "^"), ("Sell", "v")):
        hits = rows[rows["signal"] == signal]
        price.scatter(
            hits["event_time"],
            hits["close"],
            marker=marker,
            s=56,
            color=COLOURS[signal],
            edgecolors="white",
            linewidths=0.6,
            zorder=3,
            label=f"{signal} ({len(hits)})",
        )
    handles, _ = price.get_legend_handles_labels()
    for kind, label in (("golden_cross", "golden cross"), ("death_cross", "death cross")):
        crossings = rows[rows["crossover"] == kind]
        for when in crossings["event_time"]:
            for axes in (price, volume):
                axes.axvline(when, color=COLOURS[kind], linestyle="--", linewidth=1.0, alpha=0.8)
        handles.append(Line2D([], [], color=COLOURS[kind], linestyle="--", label=f"{label} ({len(crossings)})"))
    price.legend(handles=handles, loc="upper left", fontsize=8, ncols=4, framealpha=0.85)
    price.set_ylabel("price")
    price.grid(alpha=0.25)
    price.set_title(f"{symbol}: close, {short_label}, {long_label}, Buy/Sell signals and crossovers")

    # Bar width: most of the typical gap between ticks, in days (matplotlib's date unit).
    gaps = times.diff().dropna()
    width = (gaps.median().total_seconds() / 86400 * 0.8) if not gaps.empty else 0.0003
    volume.bar(times, rows["volume"], width=width, color=COLOURS["volume"])
    volume.set_ylabel("volume")
    volume.grid(alpha=0.25)
    locator = AutoDateLocator()
    volume.xaxis.set_major_locator(locator)
    volume.xaxis.set_major_formatter(ConciseDateFormatter(locator))
    volume.set_xlabel("event time (UTC)")
    return figure


def signal_plotly_figure(frame: pd.DataFrame, symbol: str, config: AppConfig | None = None) -> Any:
    """The same chart as an interactive plotly Figure (hover shows every value)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    rows = _one_symbol(frame, symbol)
    short_label, long_label = _window_labels(config)
    figure = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.75, 0.25], vertical_spacing=0.03)
    times = rows["event_time"]
    for column, label, width in (
        ("close", "close", 1.2),
        ("sma_short", short_label, 1.8),
        ("sma_long", long_label, 1.8),
    ):
        figure.add_trace(
            go.Scatter(
                x=times, y=rows[column], name=label, mode="lines", line={"color": COLOURS[column], "width": width}
            ),
            row=1,
            col=1,
        )
    for signal, marker in (("Buy", "triangle-up"), ("Sell", "triangle-down")):
        hits = rows[rows["signal"] == signal]
        figure.add_trace(
            go.Scatter(
                x=hits["event_time"],
                y=hits["close"],
                mode="markers",
                name=f"{signal} ({len(hits)})",
                marker={"symbol": marker, "size": 11, "color": COLOURS[signal], "line": {"color": "white", "width": 1}},
                customdata=hits[["volume", "sma_short", "sma_long"]].to_numpy(),
                hovertemplate=(
                    f"{signal}<br>%{{x}}<br>close %{{y:.2f}}<br>volume %{{customdata[0]}}"
                    f"<br>{short_label} %{{customdata[1]:.4f}}<br>{long_label} "
                    "%{customdata[2]:.4f}<extra></extra>"
                ),
            ),
            row=1,
            col=1,
        )
    for kind, label in (("golden_cross", "golden cross"), ("death_cross", "death cross")):
        crossings = rows[rows["crossover"] == kind]
        for when in crossings["event_time"]:
            # Shapes only (no annotation): vline annotations on date axes are fragile across plotly versions.
            figure.add_vline(x=when, line={"color": COLOURS[kind], "dash": "dash", "width": 1}, row="all", col=1)
        # A marker trace so the crossovers have a legend entry and a hover label.
        figure.add_trace(
            go.Scatter(
                x=crossings["event_time"],
                y=crossings["sma_long"],
                mode="markers",
                name=f"{label} ({len(crossings)})",
                marker={"symbol": "diamond", "size": 9, "color": COLOURS[kind]},
                hovertemplate=f"{label}<br>%{{x}}<extra></extra>",
            ),
            row=1,
            col=1,
        )
    figure.add_trace(
        go.Bar(x=times, y=rows["volume"], name="volume", marker={"color": COLOURS["volume"]}, showlegend=False),
        row=2,
        col=1,
    )
    figure.update_layout(
        title=f"{symbol}: close, {short_label}, {long_label}, Buy/Sell signals and crossovers",
        template="plotly_white",
        hovermode="x unified",
        height=640,
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.02, "x": 0},
    )
    figure.update_yaxes(title_text="price", row=1, col=1)
    figure.update_yaxes(title_text="volume", row=2, col=1)
    figure.update_xaxes(title_text="event time (UTC)", row=2, col=1)
    return figure


def write_charts(
    config: AppConfig,
    symbols: Sequence[str],
    out_dir: Path,
    formats: Sequence[str] = FORMATS,
    last: int | None = None,
) -> list[Path]:
    """Write <symbol>.png / <symbol>.html into out_dir for every symbol; returns the paths written."""
    unknown = [fmt for fmt in formats if fmt not in FORMATS]
    if unknown or not formats:
        raise ReportError(f"unknown format {', '.join(unknown) or '(none)'} (choose from {', '.join(FORMATS)})")
    frame = load_signals(config, symbols, last)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for symbol in dict.fromkeys(symbols):
        if "png" in formats:
            path = out_dir / f"{symbol}.png"
            signal_figure(frame, symbol, config).savefig(path)
            written.append(path)
        if "html" in formats:
            path = out_dir / f"{symbol}.html"
            signal_plotly_figure(frame, symbol, config).write_html(path, include_plotlyjs=True, full_html=True)
            written.append(path)
    return written


def _split(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m jobs.report",
        description=(
            "Chart the signals of some symbols: close with SMA short and long, Buy (^) and Sell (v) markers, "
            "golden/death crossovers as dashed vertical lines, volume bars beneath. Writes <SYMBOL>.png "
            "(matplotlib) and a self-contained interactive <SYMBOL>.html (plotly) per symbol. Reads the "
            "signals Delta table with deltalake: no Spark needed."
        ),
        epilog="example: python -m jobs.report --symbols SYM001,SYM002 --out .local/charts --format png,html",
    )
    add_config_arguments(parser)
    parser.add_argument(
        "--symbols",
        required=True,
        type=_split,
        metavar="SYM[,SYM...]",
        help="comma-separated symbols to chart, e.g. SYM001,SYM002",
    )
    parser.add_argument("--out", default=None, metavar="DIR", help=f"output folder (default {DEFAULT_OUT} in the repo)")
    parser.add_argument(
        "--format",
        default=",".join(FORMATS),
        type=_split,
        metavar="png,html",
        help="which files to write: png, html or both (default png,html)",
    )
    parser.add_argument(
        "--last", type=int, default=None, metavar="N", help="only the N most recent ticks of each symbol (default: all)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.symbols:
        parser.error("--symbols needs at least one symbol")
    if args.last is not None and args.last < 1:
        parser.error("--last must be at least 1")
    try:
        config = config_from_args(args)
        out_dir = Path(args.out).resolve() if args.out else resolve_local_path(DEFAULT_OUT)
        paths = write_charts(config, args.symbols, out_dir, args.format, args.last)
    except (ConfigError, ReportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        from jobs.lake.delta_log import error_line

        print(f"error: cannot read the signals table or write the charts: {error_line(exc)}", file=sys.stderr)
        return 1
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
