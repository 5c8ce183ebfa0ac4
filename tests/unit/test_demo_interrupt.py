"""Ctrl-C reaches the demo wherever it is waiting: also inside a progress poll that catches the poll's own
errors (a broker that does not answer blocks there for up to 30 s)."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from jobs.devstack.demo.main import Interrupted, raise_interrupted
from jobs.devstack.demo.monitor import Monitor
from jobs.devstack.services import free_port
from jobs.pipeline.config import load_config

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_ctrl_c_during_a_progress_poll_stops_the_demo() -> None:
    # Nothing listens on the port: the poll retries the connection and reports 0 when it gives up.
    config = load_config(
        REPO_ROOT / "conf" / "local.yaml", [f"kafka.bootstrap_servers=127.0.0.1:{free_port()}"], environ={}
    )
    monitor = Monitor(config)
    previous = signal.signal(signal.SIGINT, raise_interrupted)
    ctrl_c = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT))
    began = time.monotonic()
    try:
        ctrl_c.start()
        with pytest.raises(Interrupted, match="SIGINT"):
            monitor.produced()
    finally:
        ctrl_c.cancel()
        signal.signal(signal.SIGINT, previous)
    assert time.monotonic() - began < 10, "the interrupt waited for the poll to give up"
