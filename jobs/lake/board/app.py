"""The live signal board: a small Flask app over the Delta tables, refreshed by following their versions.

    python -m jobs.board [--config conf/local.yaml] [--port 8050] [--set storage.root=.local/demo/delta]

Serves one page on board.host:board.port (127.0.0.1 by default) that polls two JSON endpoints:

- ``/api/state``: the latest signal per symbol, the newest crossovers, pipeline health (records/s, batch
  duration, event-time lag) and the quarantine by reason over the last hour;
- ``/api/chart/<SYMBOL>``: the plotly figure of one symbol, built by the same code as `jobs.report`.

Each poll reads only the Delta commits made since the previous one (jobs.lake.board.follow). Every asset,
plotly.min.js included (from the installed plotly package), is served locally: the page needs no internet.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from jobs.pipeline.config import (
    AppConfig,
    ConfigError,
    add_config_arguments,
    config_from_args,
    port_number,
    with_overrides,
)

STATIC_DIR = Path(__file__).resolve().parent / "static"


def plotly_js_path() -> Path:
    """plotly.min.js as shipped inside the installed plotly package (the version the figures are built for)."""
    import plotly

    path = Path(plotly.__file__).resolve().parent / "package_data" / "plotly.min.js"
    if not path.is_file():
        raise FileNotFoundError(f"plotly.min.js not found in the plotly package ({path}): reinstall plotly")
    return path


def create_app(config: AppConfig) -> Any:
    """The Flask application serving the board of `config`'s tables (no I/O until the first request)."""
    from flask import Flask, abort, jsonify, send_file, send_from_directory

    from jobs.lake.board.state import BoardState

    app = Flask(__name__, static_folder=None)
    state = BoardState(config)
    app.extensions["board_state"] = state
    plotly_js = plotly_js_path()

    @app.after_request
    def no_cache(response: Any) -> Any:
        response.headers["Cache-Control"] = "no-store"
        return response

    @app.get("/")
    def index() -> Any:
        return send_from_directory(STATIC_DIR, "index.html")

    @app.get("/static/plotly.min.js")
    def plotly_script() -> Any:
        return send_file(plotly_js, mimetype="text/javascript")

    @app.get("/static/<path:name>")
    def static_file(name: str) -> Any:
        return send_from_directory(STATIC_DIR, name)

    @app.get("/api/state")
    def api_state() -> Any:
        state.refresh_if_due()
        return jsonify(state.snapshot())

    @app.get("/api/chart/<symbol>")
    def api_chart(symbol: str) -> Any:
        state.refresh_if_due()
        chart = state.chart(symbol)
        if chart is None:
            abort(404, description=f"no signals for {symbol}")
        return jsonify(chart)

    @app.get("/healthz")
    def healthz() -> Any:
        return jsonify({"ok": True})

    return app


def _bind_problem(host: str, port: int) -> str | None:
    """Why the board could not listen on host:port (bound the way werkzeug binds), or None."""
    import socket

    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


class BoardServer:
    """The app on a threaded WSGI server in the background; `url` once started, `stop()` to shut it down."""

    def __init__(self, config: AppConfig) -> None:
        from werkzeug.serving import WSGIRequestHandler, make_server

        class QuietHandler(WSGIRequestHandler):
            def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
                if str(code).startswith("5"):  # only server errors reach the console
                    super().log_request(code, size)

        self.app = create_app(config)
        host, port = config.board.host, config.board.port
        problem = _bind_problem(host, port)
        if problem is None:
            try:
                self.server = make_server(host, port, self.app, threaded=True, request_handler=QuietHandler)
            except SystemExit:  # werkzeug exits when the bind fails (taken between the check and now)
                problem = "the port was taken meanwhile"
        if problem is not None:
            raise ConfigError(
                f"board: cannot listen on {host}:{port} ({problem}); "
                "choose another with --port or board.port (0 picks a free one)"
            )
        self.host = config.board.host
        self.port = int(self.server.server_port)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    def start(self) -> BoardServer:
        self._thread = threading.Thread(target=self.server.serve_forever, name="board", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self.server.serve_forever()

    def stop(self, timeout: float = 10.0) -> None:
        self.server.shutdown()
        self.server.server_close()
        if self._thread is not None:
            self._thread.join(timeout)


def start_board(config: AppConfig) -> tuple[BoardServer, str | None]:
    """A started board for another command (the demo): board.port, or a free port when that one is taken.

    Returns the server and, when it had to move, a note saying so.
    """
    try:
        return BoardServer(config).start(), None
    except ConfigError:
        if config.board.port == 0:
            raise
        server = BoardServer(with_overrides(config, ["board.port=0"])).start()
        return server, f"port {config.board.port} is taken: the board uses {server.port}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m jobs.board",
        description=(
            "Live signal board in the browser: the latest Buy/Sell/Hold signal per symbol (sortable, filterable, "
            "new crossovers highlighted, corrections by late ticks marked), a live chart of one symbol (close, "
            "SMA short and long, Buy/Sell markers, crossovers, volume) and pipeline health (records/s, batch "
            "duration, lag, quarantine by reason over the last hour). Reads the signals, ticks_quarantine and "
            "pipeline_metrics Delta tables under storage.root (local or S3) and follows their new commits."
        ),
        epilog=(
            "examples: python -m jobs.board; "
            "python -m jobs.board --set storage.root=.local/demo/delta --port 0 (a free port)"
        ),
    )
    add_config_arguments(parser)
    parser.add_argument("--host", default=None, help="address to listen on (default board.host, 127.0.0.1)")
    parser.add_argument(
        "--port", type=port_number, default=None, help="port (default board.port, 8050; 0 = a free port)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = config_from_args(args)
        extra = [f"board.host={args.host}"] if args.host else []
        extra += [f"board.port={args.port}"] if args.port is not None else []
        if extra:
            config = with_overrides(config, extra)
        server = BoardServer(config)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    def stop(signum: int, _frame: Any) -> None:
        threading.Thread(target=server.server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    print(f"signal board: {server.url} (tables under {config.storage.root}; Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
