"""A real multi-JVM Spark cluster on this machine: a standalone master and workers on 127.0.0.1.

They are started with the pinned pyspark's own launcher (`bin/spark-class org.apache.spark.deploy.master.Master`
and `...worker.Worker`), so the packaged job meets what a cluster does to it and local mode hides: code that must
come from the --py-files zip, closures pickled to other processes, executors with their own class path (jars that
reach the driver but not the executors fail there) and their own Python (the cluster virtualenv, installed from
dist/requirements-cluster.txt only).

    python -m jobs.local_stack up --spark-cluster          # with Kafka and moto; `make up SPARK_CLUSTER=1`
    python -m jobs.devstack.spark_cluster submit -- --once  # `make submit-cluster ARGS=--once`

Every daemon is its own process group with its log beside the other services' logs (services.state_dir).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from jobs.aws.package import ENTRY_NAME, ZIP_NAME
from jobs.pipeline.config import REPO_ROOT, resolve_local_path

LOCALHOST = "127.0.0.1"
MASTER_CLASS = "org.apache.spark.deploy.master.Master"
WORKER_CLASS = "org.apache.spark.deploy.worker.Worker"
CLUSTER_FILE = "spark-cluster.json"
# The cluster's Python: a virtualenv with only dist/requirements-cluster.txt (`make cluster-venv`); pyspark and
# py4j come from the Spark installation (SPARK_HOME/python/lib), as on EMR.
DEFAULT_CLUSTER_VENV = ".venv-cluster"


class ClusterError(RuntimeError):
    """The cluster could not start, or a submission could not be built; the message names the cause."""


@dataclass
class ClusterInfo:
    """What `up` started, kept in services.state_dir/spark-cluster.json for `submit` from another shell."""

    master_url: str
    master_web_port: int
    worker_web_ports: list[int] = field(default_factory=list)
    work_dirs: list[str] = field(default_factory=list)

    @property
    def master_web_url(self) -> str:
        return f"http://{LOCALHOST}:{self.master_web_port}"


def spark_home() -> Path:
    """The Spark installation of the pinned pyspark (bin/, jars/, python/lib/pyspark.zip)."""
    spec = importlib.util.find_spec("pyspark")
    if spec is None or not spec.origin:
        raise ClusterError("pyspark is not installed: run `make setup`")
    home = Path(spec.origin).parent
    if not (home / "bin" / "spark-class").is_file():
        raise ClusterError(f"{home} has no bin/spark-class: the pyspark installation is incomplete")
    return home


def daemon_environment(conf_dir: Path, daemon_memory: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in {"PYTHONPATH", "SPARK_CONF_DIR"}}
    env.update(
        {
            "SPARK_HOME": str(spark_home()),
            "SPARK_CONF_DIR": str(conf_dir),  # an empty folder: no spark-defaults from elsewhere
            "SPARK_LOCAL_IP": LOCALHOST,
            "SPARK_DAEMON_MEMORY": daemon_memory,
            "SPARK_NO_DAEMONIZE": "1",
        }
    )
    return env


def _get_json(url: str, timeout: float = 3.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


def master_state(info: ClusterInfo) -> dict[str, Any]:
    """The master's own JSON view (workers, running and completed applications)."""
    return _get_json(f"{info.master_web_url}/json/")


def alive_workers(info: ClusterInfo) -> list[dict[str, Any]]:
    try:
        state = master_state(info)
    except OSError:
        return []
    return [worker for worker in state.get("workers", []) if worker.get("state") == "ALIVE"]


def start_cluster(
    state_dir: Path,
    workers: int = 2,
    worker_cores: int = 1,
    worker_memory: str = "1536m",
    daemon_memory: str = "256m",
    master_port: int = 0,
    timeout: float = 90.0,
) -> tuple[dict[str, Any], ClusterInfo]:
    """Start a master and `workers` workers; return their service handles and the cluster description.

    Waits (at most `timeout` seconds) until the master reports every worker ALIVE; on failure stops what started.
    """
    from jobs.devstack.services import ServiceError, ServiceHandle, _spawn, ensure_port_free, free_port, stop_process

    home = spark_home()
    spark_class = str(home / "bin" / "spark-class")
    cluster_dir = state_dir / "spark-cluster"
    conf_dir = cluster_dir / "conf"
    conf_dir.mkdir(parents=True, exist_ok=True)
    env = daemon_environment(conf_dir, daemon_memory)
    port = master_port or free_port()
    ensure_port_free(port, "spark master")
    web_port = free_port()
    handles: dict[str, Any] = {}
    info = ClusterInfo(f"spark://{LOCALHOST}:{port}", web_port)
    try:
        log = cluster_dir / "master.log"
        command = [spark_class, MASTER_CLASS, "--host", LOCALHOST, "--port", str(port), "--webui-port", str(web_port)]
        process = _spawn(command, log, env)
        handles["spark-master"] = ServiceHandle("spark-master", process.pid, port, str(log), str(cluster_dir))
        _wait(lambda: _answers(f"{info.master_web_url}/json/"), process, timeout, "spark master", log)
        for index in range(1, workers + 1):
            worker_port, worker_web = free_port(), free_port()
            work_dir = cluster_dir / f"worker-{index}"
            work_dir.mkdir(parents=True, exist_ok=True)
            log = cluster_dir / f"worker-{index}.log"
            command = [
                spark_class,
                WORKER_CLASS,
                "--host",
                LOCALHOST,
                "--port",
                str(worker_port),
                "--webui-port",
                str(worker_web),
                "--cores",
                str(worker_cores),
                "--memory",
                worker_memory,
                "--work-dir",
                str(work_dir),
                info.master_url,
            ]
            process = _spawn(command, log, env)
            name = f"spark-worker-{index}"
            handles[name] = ServiceHandle(name, process.pid, worker_port, str(log), str(work_dir))
            info.worker_web_ports.append(worker_web)
            info.work_dirs.append(str(work_dir))
        master_process_log = Path(handles["spark-master"].log_file)
        deadline = time.monotonic() + timeout
        while len(alive_workers(info)) < workers:
            if time.monotonic() > deadline:
                raise ServiceError(
                    f"spark: {len(alive_workers(info))} of {workers} workers registered with {info.master_url} "
                    f"within {timeout:.0f}s; see {master_process_log} and {cluster_dir}/worker-*.log"
                )
            time.sleep(0.5)
    except BaseException:
        for handle in handles.values():
            stop_process(handle.pid)
        raise
    write_cluster_info(state_dir, info)
    return handles, info


def _answers(url: str) -> bool:
    try:
        _get_json(url, timeout=2.0)
    except (OSError, ValueError):
        return False
    return True


def _wait(ready: Any, process: subprocess.Popen[bytes], timeout: float, name: str, log: Path) -> None:
    from jobs.devstack.services import ServiceError, _log_tail

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServiceError(f"{name}: exited with code {process.returncode}; see {log}:\n{_log_tail(log)}")
        if ready():
            return
        time.sleep(0.5)
    raise ServiceError(f"{name}: not ready within {timeout:.0f}s; see {log}:\n{_log_tail(log)}")


def write_cluster_info(state_dir: Path, info: ClusterInfo) -> None:
    state_dir.mkdir(parents=True, exist_ok=True)
    (state_dir / CLUSTER_FILE).write_text(json.dumps(asdict(info), indent=2))


def read_cluster_info(state_dir: Path) -> ClusterInfo:
    path = state_dir / CLUSTER_FILE
    if not path.is_file():
        raise ClusterError(f"no Spark cluster described in {path}: start one with `make up SPARK_CLUSTER=1`")
    return ClusterInfo(**json.loads(path.read_text()))


# ---------------------------------------------------------------- submitting the packaged job


def cluster_python(venv: Path) -> Path:
    python = venv / "bin" / "python"
    if not python.is_file():
        raise ClusterError(f"no cluster virtualenv at {venv}: run `make cluster-venv`")
    return python


def delta_python_jar(jars: list[Path]) -> Path:
    """Delta's jar carries its Python module (delta.tables): shipped with --py-files, as on EMR."""
    for jar in jars:
        if jar.name.startswith("delta-spark_"):
            return jar
    raise ClusterError("no delta-spark jar among the jars: run `make setup`")


def submit_command(
    info: ClusterInfo,
    dist: Path,
    jars: list[Path],
    python: Path,
    job_args: list[str],
    event_log_dir: Path | None = None,
    executor_memory: str = "1g",
    driver_memory: str = "1g",
    executors: int = 2,
) -> list[str]:
    """spark-submit of exactly `make package`'s output against the cluster (client mode, the only one standalone
    offers Python), with the jars for both driver and executors and the cluster virtualenv's Python."""
    for name in (ZIP_NAME, ENTRY_NAME):
        if not (dist / name).is_file():
            raise ClusterError(f"{dist / name} not found: run `make package` first")
    if not jars:
        raise ClusterError("no jars to ship: run `make setup`")
    command = [
        str(spark_home() / "bin" / "spark-submit"),
        "--master",
        info.master_url,
        "--deploy-mode",
        "client",
        "--driver-memory",
        driver_memory,
        "--executor-memory",
        executor_memory,
        "--executor-cores",
        "1",
        "--total-executor-cores",
        str(executors),
        "--conf",
        f"spark.pyspark.python={python}",
        "--conf",
        f"spark.pyspark.driver.python={python}",
        "--conf",
        f"spark.driver.host={LOCALHOST}",
        "--conf",
        f"spark.driver.bindAddress={LOCALHOST}",
        "--conf",
        "spark.ui.showConsoleProgress=false",
        # Wait for both executors before the first job, so work is spread as on a running cluster.
        "--conf",
        "spark.scheduler.minRegisteredResourcesRatio=1.0",
        "--conf",
        "spark.scheduler.maxRegisteredResourcesWaitingTime=60s",
        # Two one-core executors: Delta's default of 50 snapshot tasks per table read is the run's cost otherwise.
        "--conf",
        "spark.databricks.delta.snapshotPartitions=2",
    ]
    if event_log_dir is not None:
        event_log_dir.mkdir(parents=True, exist_ok=True)
        command += [
            "--conf",
            "spark.eventLog.enabled=true",
            "--conf",
            f"spark.eventLog.dir={event_log_dir.as_uri()}",
            # Plain JSON lines, one file per application: read by tasks_per_worker.
            "--conf",
            "spark.eventLog.compress=false",
            "--conf",
            "spark.eventLog.rolling.enabled=false",
        ]
    command += [
        "--jars",
        ",".join(str(jar) for jar in jars),
        "--py-files",
        ",".join([str(dist / ZIP_NAME), str(delta_python_jar(jars))]),
        str(dist / ENTRY_NAME),
        *job_args,
    ]
    return command


def submit_environment(python: Path) -> dict[str, str]:
    """No PYTHONPATH or SPARK_HOME from the caller: the code must come from the zip, Spark from the launcher."""
    env = {key: value for key, value in os.environ.items() if key not in {"PYTHONPATH", "SPARK_HOME", "SPARK_CONF_DIR"}}
    env.update({"PYSPARK_PYTHON": str(python), "PYSPARK_DRIVER_PYTHON": str(python), "SPARK_LOCAL_IP": LOCALHOST})
    return env


def cluster_job_overrides() -> list[str]:
    """--set arguments every cluster run needs: the master from spark-submit, the jars from --jars."""
    return ["--set", "spark.master=null", "--set", "spark.jars_dir=null"]


def lake_overrides(lake: str, state_dir: Path, create_bucket: bool = True) -> list[str]:
    """Tables and checkpoints where every node reaches them: on the local S3 (moto from `up`) when it runs."""
    from jobs.devstack.services import _read_state

    lake = lake.rstrip("/")
    overrides = ["--set", f"storage.root={lake}/delta", "--set", f"storage.checkpoint_root={lake}/checkpoints"]
    moto = _read_state(state_dir).get("moto")
    if not lake.startswith("s3a://"):
        return overrides
    if moto is None:
        raise ClusterError(f"{lake} needs the local S3: `make up SPARK_CLUSTER=1` starts moto too")
    endpoint = f"http://{LOCALHOST}:{moto.port}"
    if create_bucket:
        import boto3

        s3 = boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        s3.create_bucket(Bucket=lake.removeprefix("s3a://").split("/")[0])
    return overrides + [
        "--set",
        f"s3.endpoint={endpoint}",
        "--set",
        "s3.path_style_access=true",
        "--set",
        "s3.use_test_credentials=true",
    ]


# ---------------------------------------------------------------- where the tasks ran


def tasks_per_worker(event_log_dir: Path, info: ClusterInfo) -> Counter[int]:
    """Finished tasks of every application in the event logs, by worker (index into info.worker_web_ports).

    An executor's log URLs name the web UI port of the worker that launched it."""
    by_port = {port: index for index, port in enumerate(info.worker_web_ports)}
    counts: Counter[int] = Counter()
    logs = [path for path in sorted(event_log_dir.rglob("*")) if path.is_file() and _is_event_log(path)]
    for log in logs:
        executor_worker: dict[str, int] = {}
        for line in log.read_text().splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue  # the last line of a log whose driver was killed mid-write
            kind = event.get("Event")
            if kind == "SparkListenerExecutorAdded":
                urls = " ".join((event.get("Executor Info") or {}).get("Log Urls", {}).values())
                for port, index in by_port.items():
                    if f":{port}/" in urls:
                        executor_worker[str(event["Executor ID"])] = index
            elif kind == "SparkListenerTaskEnd":
                executor = str(event["Task Info"]["Executor ID"])
                if executor in executor_worker:
                    counts[executor_worker[executor]] += 1
    return counts


def _is_event_log(path: Path) -> bool:
    return not path.name.startswith((".", "appstatus")) and path.suffix != ".crc"


# ---------------------------------------------------------------- command line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m jobs.devstack.spark_cluster",
        description=(
            "Submit the packaged streaming job (`make package` -> dist/) to the local Spark standalone cluster "
            "started by `make up SPARK_CLUSTER=1`, from a scratch working directory, with the jars of .jars/spark "
            "and the cluster virtualenv's Python. Arguments after `--` go to the job (e.g. -- --once)."
        ),
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    submit = commands.add_parser(
        "submit",
        help="spark-submit dist/ to the running local cluster",
        description=(
            "spark-submit the package in --dist to the master that `make up SPARK_CLUSTER=1` started, with the "
            "cluster virtualenv's Python; arguments after `--` go to the job (e.g. -- --once)."
        ),
    )
    submit.add_argument("--config", default=str(REPO_ROOT / "conf" / "local.yaml"), help="profile of the job")
    submit.add_argument("--dist", type=Path, default=REPO_ROOT / "dist", help="the package (default: dist/)")
    submit.add_argument("--venv", default=DEFAULT_CLUSTER_VENV, help="cluster virtualenv (default: .venv-cluster)")
    submit.add_argument("--jars-dir", default=".jars/spark", help="jars for driver and executors")
    submit.add_argument("--state-dir", default=None, help="where `up` described the cluster (services.state_dir)")
    submit.add_argument("--event-log", type=Path, default=None, help="write Spark's event log here (default: none)")
    submit.add_argument(
        "--lake",
        default="s3a://market-signals/cluster",
        help="where tables and checkpoints go when `up` started moto: <lake>/delta, <lake>/checkpoints on the "
        "local S3 (the bucket is created); a path that exists on every node otherwise (default: %(default)s)",
    )
    submit.add_argument("--dry-run", action="store_true", help="print the command, run nothing")
    submit.add_argument("job_args", nargs=argparse.REMAINDER, help="arguments for the job after --")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from jobs.pipeline.config import ConfigError, load_config

    job_args = [arg for arg in args.job_args if arg != "--"] if args.job_args[:1] == ["--"] else args.job_args
    try:
        config = load_config(args.config)
        state_dir = resolve_local_path(args.state_dir or config.services.state_dir)
        info = read_cluster_info(state_dir)
        if not alive_workers(info):
            raise ClusterError(f"the master at {info.master_web_url} has no live worker: `make up SPARK_CLUSTER=1`")
        jars = sorted(resolve_local_path(args.jars_dir).glob("*.jar"))
        python = cluster_python(resolve_local_path(args.venv))
        command = submit_command(
            info,
            args.dist.resolve(),
            jars,
            python,
            [
                "--config",
                str(Path(args.config).resolve()),
                *cluster_job_overrides(),
                *lake_overrides(args.lake, state_dir),
                *job_args,
            ],
            event_log_dir=args.event_log.resolve() if args.event_log else None,
        )
    except (ClusterError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.dry_run:
        print(json.dumps(command, indent=2))
        return 0
    with tempfile.TemporaryDirectory(prefix="market-signals-submit-") as workdir:
        # Not the checkout: nothing may be found through the working directory.
        print(f"spark-submit to {info.master_url} from {workdir}", file=sys.stderr, flush=True)
        return subprocess.call(command, cwd=workdir, env=submit_environment(python))


if __name__ == "__main__":
    sys.exit(main())
