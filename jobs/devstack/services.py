"""Local services without Docker: a real Apache Kafka broker (KRaft, combined mode) and a moto server.

Used by `make up` / `make down` / `make status`, by the test fixtures and by the demo.

    python -m jobs.local_stack up [--kafka-port 9092] [--moto-port 5000] [--no-moto]
    python -m jobs.local_stack status
    python -m jobs.local_stack down

Each service runs as its own process group; its pid, port and log file are kept under
``services.state_dir`` so `down` and `status` work from another shell.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

from jobs.pipeline.config import (
    AppConfig,
    ConfigError,
    add_config_arguments,
    config_from_args,
    port_number,
    resolve_local_path,
)

LOCALHOST = "127.0.0.1"


class ServiceError(RuntimeError):
    """A service that could not start or stop; the message names the cause and the log file."""


@dataclass
class ServiceHandle:
    name: str
    pid: int
    port: int
    log_file: str
    data_dir: str

    @property
    def address(self) -> str:
        return f"localhost:{self.port}"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOCALHOST, 0))
        return int(sock.getsockname()[1])


def port_bind_error(port: int) -> str | None:
    """Why a server could not bind `port` on loopback now, or None when it could.

    Binds the way servers do (Kafka, moto, Trino: SO_REUSEADDR), so connections of a stopped server still in
    TIME_WAIT do not count as taken; a listener, or a socket bound without SO_REUSEADDR, still does.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((LOCALHOST, port))
        except OSError as exc:
            return exc.strerror or str(exc)
    return None


def ensure_port_free(port: int, service: str) -> None:
    reason = port_bind_error(port)
    if reason is not None:
        raise ServiceError(
            f"{service}: port {port} on {LOCALHOST} is already taken ({reason}); "
            f"stop what uses it (`make down`, or `ss -ltnp 'sport = :{port}'`) or choose another port"
        )


def port_accepts(port: int) -> bool:
    """Whether something accepts TCP connections on `port` of loopback (waits at most 0.5 s)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((LOCALHOST, port)) == 0


_port_accepts = port_accepts


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers kill(0); reap it if it is ours.
    try:
        finished, _ = os.waitpid(pid, os.WNOHANG)
        return finished == 0
    except ChildProcessError:
        return True


def log_tail(log_file: Path | str, lines: int = 15) -> str:
    """The last `lines` lines of a log file, for error messages."""
    try:
        content = Path(log_file).read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(content[-lines:])


_log_tail = log_tail


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def stop_process(pid: int, timeout: float = 20.0) -> None:
    """SIGTERM the process group, wait, then SIGKILL what is left, including descendants that left the group."""
    if not _alive(pid):
        return
    descendants = _descendants(pid)
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not _alive(pid):
                return
            time.sleep(0.2)
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        for _ in range(50):
            if not _alive(pid):
                return
            time.sleep(0.1)
    finally:
        for child in descendants:
            try:
                child.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(descendants, timeout=5)


def spawn(
    command: list[str], log_file: Path, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.Popen[bytes]:
    """Start `command` in its own process group (stopped as a whole, survives the launcher), output to `log_file`."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as log:
        return subprocess.Popen(
            command,
            cwd=cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env=env,
        )


_spawn = spawn


def _java() -> str:
    java_home = os.environ.get("JAVA_HOME")
    candidate = Path(java_home) / "bin" / "java" if java_home else None
    if candidate and candidate.is_file():
        return str(candidate)
    found = shutil.which("java")
    if not found:
        raise ServiceError("java not found: install a Java 17 runtime (e.g. `apt-get install openjdk-17-jre-headless`)")
    return found


_LOG4J2_CONFIG = """\
status = warn
appender.file.type = File
appender.file.name = file
appender.file.fileName = {log_file}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.file.ref = file
logger.kafka.name = kafka
logger.kafka.level = warn
logger.apache.name = org.apache.kafka
logger.apache.level = warn
"""


def start_kafka(
    port: int,
    controller_port: int,
    state_dir: Path,
    jars_dir: Path,
    timeout: float = 60.0,
) -> ServiceHandle:
    """Format KRaft storage (once per data dir), start a combined broker+controller, wait for clients."""
    jars = sorted(jars_dir.glob("*.jar"))
    if not any(jar.name.startswith("kafka_") for jar in jars):
        raise ServiceError(f"kafka: no broker jars in {jars_dir}: run `make setup` first")
    ensure_port_free(port, "kafka")
    ensure_port_free(controller_port, "kafka controller")
    service_dir = state_dir / f"kafka-{port}"
    data_dir = service_dir / "data"
    log_file = service_dir / "kafka.log"
    service_dir.mkdir(parents=True, exist_ok=True)
    properties = service_dir / "server.properties"
    properties.write_text(
        "\n".join(
            [
                "process.roles=broker,controller",
                "node.id=1",
                f"controller.quorum.voters=1@{LOCALHOST}:{controller_port}",
                f"listeners=PLAINTEXT://{LOCALHOST}:{port},CONTROLLER://{LOCALHOST}:{controller_port}",
                f"advertised.listeners=PLAINTEXT://localhost:{port}",
                "controller.listener.names=CONTROLLER",
                "inter.broker.listener.name=PLAINTEXT",
                "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
                f"log.dirs={data_dir}",
                "num.partitions=3",
                "offsets.topic.replication.factor=1",
                "transaction.state.log.replication.factor=1",
                "transaction.state.log.min.isr=1",
                "share.coordinator.state.topic.replication.factor=1",
                "share.coordinator.state.topic.min.isr=1",
                "group.initial.rebalance.delay.ms=0",
                "auto.create.topics.enable=true",
                "log.retention.hours=168",
                "",
            ]
        )
    )
    log4j = service_dir / "log4j2.properties"
    log4j.write_text(_LOG4J2_CONFIG.format(log_file=log_file))
    classpath = os.pathsep.join(str(jar) for jar in jars)
    java = _java()
    jvm_options = [
        "-Xms256m",
        "-Xmx768m",
        "-XX:+UseG1GC",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={log4j}",
    ]
    if not (data_dir / "meta.properties").exists():
        cluster_id = _kafka_cluster_id()
        format_command = [
            java,
            *jvm_options,
            "-cp",
            classpath,
            "kafka.tools.StorageTool",
            "format",
            f"--cluster-id={cluster_id}",
            "-c",
            str(properties),
            "--ignore-formatted",
        ]
        result = subprocess.run(format_command, capture_output=True, text=True, timeout=timeout)
        if result.returncode != 0:
            with open(log_file, "a") as log:
                log.write(result.stdout + result.stderr)
            raise ServiceError(
                f"kafka: formatting storage in {data_dir} failed; see {log_file}:\n"
                f"{(result.stdout + result.stderr)[-2000:]}"
            )
    process = _spawn([java, *jvm_options, "-cp", classpath, "kafka.Kafka", str(properties)], log_file)
    handle = ServiceHandle("kafka", process.pid, port, str(log_file), str(data_dir))
    try:
        _wait_for_kafka(process, port, timeout, log_file)
    except BaseException:
        stop_process(process.pid)
        raise
    return handle


def _kafka_cluster_id() -> str:
    """A KRaft cluster id: a base64url-encoded UUID without padding.

    Like Kafka's own Uuid.randomUuid(), never one starting with "-": the storage tool would read it as an option.
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def _wait_for_kafka(process: subprocess.Popen[bytes], port: int, timeout: float, log_file: Path) -> None:
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    deadline = time.monotonic() + timeout
    last_error = "port not open"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServiceError(
                f"kafka: broker exited with code {process.returncode}; see {log_file}:\n{_log_tail(log_file)}"
            )
        if _port_accepts(port):
            try:
                admin = KafkaAdminClient(bootstrap_servers=f"localhost:{port}", request_timeout_ms=5000)
                try:
                    admin.list_topics()
                    return
                finally:
                    admin.close()
            except (KafkaError, OSError, ValueError) as exc:
                last_error = repr(exc)
        time.sleep(0.5)
    raise ServiceError(
        f"kafka: broker did not accept clients on port {port} within {timeout:.0f}s "
        f"({last_error}); see {log_file}:\n{_log_tail(log_file)}"
    )


def start_moto(port: int, state_dir: Path, timeout: float = 30.0) -> ServiceHandle:
    """moto's server (S3, Glue, Athena, EMR emulation), bound to loopback only."""
    ensure_port_free(port, "moto")
    service_dir = state_dir / f"moto-{port}"
    service_dir.mkdir(parents=True, exist_ok=True)
    log_file = service_dir / "moto.log"
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    process = _spawn([sys.executable, "-m", "moto.server", "-H", LOCALHOST, "-p", str(port)], log_file, env)
    handle = ServiceHandle("moto", process.pid, port, str(log_file), str(service_dir))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServiceError(
                f"moto: server exited with code {process.returncode}; see {log_file}:\n{_log_tail(log_file)}"
            )
        try:
            with urllib.request.urlopen(f"http://{LOCALHOST}:{port}/moto-api/", timeout=2):
                return handle
        except OSError:
            time.sleep(0.3)
    stop_process(process.pid)
    raise ServiceError(f"moto: server did not answer on port {port} within {timeout:.0f}s; see {log_file}")


# --- state for `make up` / `make down` / `make status` -------------------------------------------------


def _state_file(state_dir: Path) -> Path:
    return state_dir / "services.json"


def _read_state(state_dir: Path) -> dict[str, ServiceHandle]:
    path = _state_file(state_dir)
    if not path.exists():
        return {}
    raw = json.loads(path.read_text())
    return {name: ServiceHandle(**handle) for name, handle in raw.items()}


def _write_state(state_dir: Path, handles: dict[str, ServiceHandle]) -> None:
    state_dir.mkdir(parents=True, exist_ok=True)
    _state_file(state_dir).write_text(json.dumps({name: asdict(h) for name, h in handles.items()}, indent=2))


def up(
    config: AppConfig, with_moto: bool = True, with_trino: bool = False, with_spark_cluster: bool = False
) -> dict[str, ServiceHandle]:
    services = config.services
    state_dir = resolve_local_path(services.state_dir)
    handles = {name: h for name, h in _read_state(state_dir).items() if _alive(h.pid)}
    try:
        if "kafka" not in handles:
            handles["kafka"] = start_kafka(
                services.kafka_port or free_port(),
                services.kafka_controller_port or free_port(),
                state_dir,
                resolve_local_path(services.kafka_jars_dir),
                services.start_timeout_seconds,
            )
        if with_moto and "moto" not in handles:
            handles["moto"] = start_moto(services.moto_port or free_port(), state_dir, services.start_timeout_seconds)
        if with_trino and "trino" not in handles:
            from jobs.devstack.trino import start_trino

            moto = handles.get("moto")
            endpoint = f"http://{LOCALHOST}:{moto.port}" if moto else None
            handles["trino"] = start_trino(config, config.trino.port, state_dir, moto_endpoint=endpoint)
        if with_spark_cluster and "spark-master" not in handles:
            from jobs.devstack.spark_cluster import start_cluster

            handles.update(start_cluster(state_dir, timeout=services.start_timeout_seconds)[0])
    finally:
        _write_state(state_dir, handles)
    return handles


def down(config: AppConfig) -> list[str]:
    state_dir = resolve_local_path(config.services.state_dir)
    stopped = []
    for name, handle in _read_state(state_dir).items():
        stop_process(handle.pid)
        stopped.append(f"{name} (pid {handle.pid}, port {handle.port})")
    _write_state(state_dir, {})
    return stopped


def status(config: AppConfig) -> dict[str, tuple[ServiceHandle, bool]]:
    state_dir = resolve_local_path(config.services.state_dir)
    return {name: (h, _alive(h.pid) and _port_accepts(h.port)) for name, h in _read_state(state_dir).items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m jobs.local_stack",
        description="Start, stop and inspect the local Kafka broker (KRaft) and moto (S3/Glue) server.",
    )
    common = argparse.ArgumentParser(add_help=False)
    add_config_arguments(common)
    commands = parser.add_subparsers(dest="command", required=True)
    up_parser = commands.add_parser(
        "up",
        parents=[common],
        help="start Kafka and moto (already running ones are kept)",
        description=(
            "Start a Kafka broker (KRaft, from the jars of make setup) and a moto server for S3 and Glue on "
            "127.0.0.1, optionally Trino and a Spark standalone cluster; what already runs is kept. Their state "
            "and logs are in services.state_dir."
        ),
    )
    up_parser.add_argument(
        "--kafka-port", type=port_number, help="broker port (default services.kafka_port; 0 = free port)"
    )
    up_parser.add_argument(
        "--moto-port", type=port_number, help="moto port (default services.moto_port; 0 = free port)"
    )
    up_parser.add_argument("--no-moto", action="store_true", help="start the Kafka broker only")
    up_parser.add_argument("--trino", action="store_true", help="also start Trino on moto's Glue and S3 (Athena views)")
    up_parser.add_argument("--trino-port", type=port_number, help="Trino port (default trino.port; 0 = free port)")
    up_parser.add_argument(
        "--spark-cluster", action="store_true", help="also start a Spark standalone master and two workers"
    )
    commands.add_parser(
        "down",
        parents=[common],
        help="stop every service started by `up`",
        description="Stop every service `up` started (SIGTERM, then SIGKILL after 20 s); nothing else is touched.",
    )
    commands.add_parser(
        "status",
        parents=[common],
        help="show what runs, on which port, and where it logs",
        description="Show each service `up` started: whether it runs, its port and its log file.",
    )
    args = parser.parse_args(argv)
    try:
        config = config_from_args(args)
        if args.command == "up":
            if args.kafka_port is not None:
                config.services.kafka_port = args.kafka_port
            if args.moto_port is not None:
                config.services.moto_port = args.moto_port
            if args.trino_port is not None:
                config.trino.port = args.trino_port or free_port()
            trino = args.trino or args.trino_port is not None
            for name, handle in up(
                config, with_moto=not args.no_moto, with_trino=trino, with_spark_cluster=args.spark_cluster
            ).items():
                print(f"{name:6} running  {handle.address:16} pid {handle.pid:<7} log {handle.log_file}")
        elif args.command == "down":
            stopped = down(config)
            print("stopped: " + ", ".join(stopped) if stopped else "nothing was running")
        else:
            current = status(config)
            if not current:
                print("nothing is running (start with `make up`)")
            for name, (handle, healthy) in current.items():
                state = "running" if healthy else "DOWN"
                print(f"{name:6} {state:8} {handle.address:16} pid {handle.pid:<7} log {handle.log_file}")
            return 0 if all(healthy for _, healthy in current.values()) else 1
    except (ServiceError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
