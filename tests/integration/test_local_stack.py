"""The services launcher behind `make up` / `make status` / `make down`, with real processes."""

from __future__ import annotations

import ipaddress
import os
import signal
import socket
import sys
import time
from pathlib import Path

import psutil
import pytest
from kafka import KafkaConsumer, KafkaProducer

from jobs.devstack import services as local_stack
from jobs.devstack.services import ServiceError, free_port, spawn, start_kafka, stop_process


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "Z" not in Path(f"/proc/{pid}/stat").read_text().split()[2]


def test_up_status_down(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = [f"--set=services.state_dir={tmp_path}", f"--set=services.kafka_controller_port={free_port()}"]
    kafka_port, moto_port = free_port(), free_port()
    try:
        assert local_stack.main(["up", "--kafka-port", str(kafka_port), "--moto-port", str(moto_port), *state]) == 0
        assert local_stack.main(["status", *state]) == 0
        printed = capsys.readouterr().out
        assert f"kafka  running  localhost:{kafka_port}" in printed
        assert f"moto   running  localhost:{moto_port}" in printed

        producer = KafkaProducer(bootstrap_servers=f"localhost:{kafka_port}", acks="all")
        producer.send("stack-check", key=b"SYM001", value=b"hello").get(timeout=30)
        producer.close()
        consumer = KafkaConsumer(
            "stack-check",
            bootstrap_servers=f"localhost:{kafka_port}",
            auto_offset_reset="earliest",
            consumer_timeout_ms=10000,
        )
        assert [(m.key, m.value) for m in consumer] == [(b"SYM001", b"hello")]
        consumer.close()

        # A second `up` keeps what runs.
        assert local_stack.main(["up", "--kafka-port", str(kafka_port), "--moto-port", str(moto_port), *state]) == 0
        capsys.readouterr()

        # A service that died is reported DOWN, with exit code 1 (`make status` fails).
        moto_pid = local_stack.status(_config(state))["moto"][0].pid
        os.kill(moto_pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while _alive(moto_pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert local_stack.main(["status", *state]) == 1
        printed = capsys.readouterr().out
        assert f"kafka  running  localhost:{kafka_port}" in printed
        assert f"moto   DOWN     localhost:{moto_port}" in printed
    finally:
        pids = [handle.pid for handle, _ in local_stack.status(_config(state)).values()]
        assert local_stack.main(["down", *state]) == 0
    assert pids and not any(_alive(pid) for pid in pids)
    capsys.readouterr()
    assert local_stack.main(["status", *state]) == 0
    assert "nothing is running" in capsys.readouterr().out


def _config(state: list[str]):
    from jobs.pipeline.config import load_config

    return load_config(None, [item.removeprefix("--set=") for item in state], environ={})


def test_taken_port_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        with pytest.raises(ServiceError, match=f"kafka: port {port} on 127.0.0.1 is already taken"):
            start_kafka(port, free_port(), tmp_path, Path(".jars/kafka-broker"))


def test_missing_jars_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ServiceError, match="no broker jars in .*run `make setup` first"):
        start_kafka(free_port(), free_port(), tmp_path, tmp_path / "no-jars")


def _time_wait_port() -> int:
    """A port whose only socket is in TIME_WAIT: the server side closed a connection first, then stopped listening.

    The listener sets SO_REUSEADDR as servers do (Kafka's acceptor, moto's werkzeug); its connections inherit it.
    """
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port), timeout=5)
        accepted, _ = listener.accept()
        accepted.close()  # the server closes first: its side of the connection ends in TIME_WAIT
        client.recv(1)  # wait for the FIN
        client.close()
    return port


def test_time_wait_sockets_do_not_make_a_port_look_taken() -> None:
    port = _time_wait_port()
    with socket.socket() as plain:  # what the check used to do: bind without SO_REUSEADDR
        with pytest.raises(OSError):
            plain.bind(("127.0.0.1", port))
    local_stack.ensure_port_free(port, "kafka")  # a broker binds it with SO_REUSEADDR, so the port is free


def test_a_listener_is_still_refused_even_with_reuseaddr() -> None:
    with socket.socket() as blocker:
        blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        with pytest.raises(ServiceError, match=f"kafka: port {port} on 127.0.0.1 is already taken"):
            local_stack.ensure_port_free(port, "kafka")


STUBBORN = """
import os, signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
# A child that left the process group (its own session) and ignores SIGTERM too.
child = subprocess.Popen(
    [sys.executable, "-c", "import os, signal, time; os.setsid(); signal.signal(signal.SIGTERM, signal.SIG_IGN); "
     "print(os.getpid(), flush=True); time.sleep(600)"],
    stdout=subprocess.PIPE, text=True,
)
print(child.stdout.readline().strip(), flush=True)
time.sleep(600)
"""


def test_stop_process_kills_what_ignores_sigterm_and_what_left_the_group(tmp_path: Path) -> None:
    """`make down`: SIGTERM, then SIGKILL after the timeout (20 s there, 1 s here); no process is left behind."""
    log = tmp_path / "stubborn.log"
    process = spawn([sys.executable, "-c", STUBBORN], log)
    deadline = time.monotonic() + 60
    while not log.read_text().strip() and time.monotonic() < deadline:
        time.sleep(0.05)
    child_pid = int(log.read_text().split()[0])
    assert _alive(process.pid) and _alive(child_pid)
    assert os.getpgid(child_pid) != os.getpgid(process.pid)
    began = time.monotonic()
    stop_process(process.pid, timeout=1)
    assert time.monotonic() - began < 15
    process.wait(timeout=5)
    deadline = time.monotonic() + 10
    while _alive(child_pid) and time.monotonic() < deadline:  # reaped by init once its parent is gone
        time.sleep(0.1)
    assert not _alive(child_pid)


def _listening_on(pid: int) -> set[str]:
    """The addresses the process and its descendants listen on (TCP; a JVM's IPv4-mapped IPv6 as IPv4)."""
    process = psutil.Process(pid)
    return {
        str(getattr(address, "ipv4_mapped", None) or address)
        for member in [process, *process.children(recursive=True)]
        for connection in member.net_connections(kind="tcp")
        if connection.status == psutil.CONN_LISTEN
        for address in [ipaddress.ip_address(connection.laddr.ip)]
    }


def test_kafka_and_moto_listen_on_127_0_0_1_only(kafka_broker, moto_server) -> None:
    """Nothing of the local stack is reachable from another machine."""
    assert _listening_on(kafka_broker.pid) == {"127.0.0.1"}
    assert _listening_on(moto_server.pid) == {"127.0.0.1"}
