"""docker-compose.yml is validated, not run (no Docker engine in the test environment): its services, ports,
environment and commands must agree with conf/compose.yaml, the JVM versions of conf/jvm/pom.xml and the
pinned Python packages. `docker compose config` also runs when a Docker CLI with Compose is installed."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml

from jobs.aws.clients import split_s3_uri
from jobs.aws.package import docker_requirements, jvm_versions, read_requirements
from jobs.pipeline.config import AppConfig, load_config

REPO_ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def services(compose: dict) -> dict:
    return compose["services"]


@pytest.fixture(scope="module")
def config() -> AppConfig:
    return load_config(REPO_ROOT / "conf" / "compose.yaml", environ={})


def env(service: dict) -> dict[str, str]:
    return {key: str(value) for key, value in (service.get("environment") or {}).items()}


def command_text(service: dict) -> str:
    parts = []
    for key in ("entrypoint", "command"):
        value = service.get(key) or []
        parts.extend(value if isinstance(value, list) else [value])
    return " ".join(str(part) for part in parts)


def option_value(args: list[str], option: str) -> str:
    return args[args.index(option) + 1]


def published(service: dict) -> dict[int, int]:
    """container port -> host port"""
    mapping = {}
    for entry in service.get("ports") or []:
        host, container = str(entry).split(":")[-2:]
        mapping[int(container)] = int(host)
    return mapping


def test_the_stack_has_every_service(services: dict) -> None:
    assert {"kafka", "kafka-init", "minio", "minio-init", "moto", "job", "simulator"} <= set(services)
    assert services["tools"]["profiles"] == ["tools"], "the SQL tools are on demand, not part of `up`"


def test_kafka_runs_in_kraft_mode(services: dict) -> None:
    kafka = services["kafka"]
    image, tag = kafka["image"].split(":")
    assert image == "apache/kafka" and tag.startswith("4.")
    variables = env(kafka)
    assert set(variables["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert variables["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"{variables['KAFKA_NODE_ID']}@kafka:9093"
    assert not any("ZOOKEEPER" in key for key in variables)
    assert "zookeeper" not in services


def test_job_and_simulator_reach_the_broker_the_config_names(services: dict, config: AppConfig) -> None:
    host, port = config.kafka.bootstrap_servers.split(":")
    assert host in services
    advertised = env(services[host])["KAFKA_ADVERTISED_LISTENERS"].split(",")
    assert f"PLAINTEXT://{host}:{port}" in advertised
    listeners = env(services[host])["KAFKA_LISTENERS"]
    assert f"PLAINTEXT://:{port}" in listeners
    # The host listener is advertised as localhost on the published port.
    host_listener = next(item for item in advertised if item.startswith("HOST://"))
    host_port = int(host_listener.rsplit(":", 1)[1])
    assert published(services[host]) == {host_port: host_port}


def test_topics_are_created_as_configured(services: dict, config: AppConfig) -> None:
    init = command_text(services["kafka-init"])
    for topic in (config.kafka.topic, config.kafka.signals_topic):
        assert (
            f"--topic {topic} --partitions {config.kafka.topic_partitions} "
            f"--replication-factor {config.kafka.replication_factor}" in init
        )
    assert config.kafka.bootstrap_servers in init


def test_the_bucket_the_job_writes_to_is_created(services: dict, config: AppConfig) -> None:
    buckets = {split_s3_uri(config.storage.root)[0], split_s3_uri(config.storage.checkpoint_root)[0]}
    assert config.athena.output_location
    buckets.add(split_s3_uri(config.athena.output_location)[0])
    assert len(buckets) == 1
    init = command_text(services["minio-init"])
    assert f"mc mb --ignore-existing local/{buckets.pop()}" in init
    assert "mc alias set local http://minio:9000" in init


def test_s3_glue_and_athena_endpoints_are_compose_services(services: dict, config: AppConfig) -> None:
    s3 = urlparse(config.s3.endpoint)
    assert s3.hostname == "minio" and "--address" in services["minio"]["command"]
    assert option_value(services["minio"]["command"], "--address") == f":{s3.port}"
    assert config.s3.path_style_access, "MinIO serves path-style requests"
    assert 9000 in published(services["minio"])
    for endpoint in (config.glue.endpoint, config.athena.endpoint):
        parsed = urlparse(endpoint)
        assert parsed.hostname == "moto"
        assert option_value(services["moto"]["command"], "-p") == str(parsed.port)
        assert parsed.port in published(services["moto"])
    assert services["moto"]["image"].startswith("motoserver/moto:")


def test_dummy_s3_credentials_match_minio(services: dict, config: AppConfig) -> None:
    minio = env(services["minio"])
    for name in ("job", "tools"):
        variables = env(services[name])
        assert variables["AWS_ACCESS_KEY_ID"] == minio["MINIO_ROOT_USER"]
        assert variables["AWS_SECRET_ACCESS_KEY"] == minio["MINIO_ROOT_PASSWORD"]
    # The job takes them from the default provider chain, the way it takes the instance role on EMR.
    assert not config.s3.use_test_credentials
    assert config.stream.register_catalog


def test_job_is_spark_submit_of_the_stream_with_the_compose_profile(services: dict, config: AppConfig) -> None:
    job = services["job"]
    args = [str(arg) for arg in job["command"]]
    assert args[0].endswith("/bin/spark-submit")
    entry = args.index("jobs/stream_signals.py")
    assert args[entry + 1 :] == ["--config", "conf/compose.yaml"]
    assert "--once" not in args, "the compose job streams continuously"
    assert {"source": ".", "target": job["working_dir"]} == _bind(job["volumes"][0])
    assert config.spark.jars_dir is None, "jars come from --packages in the container"
    dockerfile = (REPO_ROOT / job["build"]["context"] / job["build"]["dockerfile"]).read_text()
    # Spark is the pinned pyspark wheel's (its bin/spark-submit), with a Java 17 runtime.
    assert "openjdk-17-jre-headless" in dockerfile
    assert "pyspark==4.0.2" in read_requirements(REPO_ROOT / "docker" / "requirements-job.txt")
    assert {"kafka-init", "minio-init", "moto"} <= set(job["depends_on"])


def _bind(volume: str) -> dict[str, str]:
    source, target = volume.split(":")[:2]
    return {"source": source, "target": target}


def test_job_packages_match_the_pinned_jvm_versions(services: dict) -> None:
    versions = jvm_versions(REPO_ROOT / "conf" / "jvm" / "pom.xml")
    args = [str(arg) for arg in services["job"]["command"]]
    packages = set(option_value(args, "--packages").split(","))
    scala, sdk = versions["scala.binary"], versions["awssdk.version"]
    assert packages == {
        f"org.apache.spark:spark-sql-kafka-0-10_{scala}:{versions['spark.version']}",
        f"io.delta:delta-spark_{scala}:{versions['delta.version']}",
        f"io.delta:delta-storage:{versions['delta.version']}",
        f"org.apache.hadoop:hadoop-aws:{versions['hadoop.version']}",
        *(
            f"software.amazon.awssdk:{module}:{sdk}"
            for module in ("s3", "s3-transfer-manager", "sts", "apache-client", "netty-nio-client")
        ),
    }
    assert "spark.jars.excludes=software.amazon.awssdk:bundle" in args


def test_simulator_uses_the_same_profile(services: dict) -> None:
    simulator = services["simulator"]
    args = [str(arg) for arg in simulator["command"]]
    assert args[:4] == ["python", "-m", "simulator", "run"]
    assert option_value(args, "--config") == "conf/compose.yaml"
    assert "--topic" not in args and "--bootstrap-servers" not in args, "topic and broker come from the profile"
    assert "kafka-init" in simulator["depends_on"]
    assert "conf/compose.yaml" in command_text(services["tools"])


def test_host_ports_do_not_collide(services: dict) -> None:
    hosts = [host for service in services.values() for host in published(service).values()]
    assert len(hosts) == len(set(hosts))
    assert not {9092, 5000} & set(hosts), "the compose stack can run beside `make up`"


def test_image_requirements_are_current() -> None:
    for name, expected in docker_requirements().items():
        assert read_requirements(REPO_ROOT / "docker" / name) == expected, (
            f"docker/{name} is stale: run `python -m jobs.package --docker-requirements`"
        )


def test_every_built_image_has_its_dockerfile(services: dict) -> None:
    for name, service in services.items():
        if "build" in service:
            context = REPO_ROOT / service["build"]["context"]
            dockerfile = (context / service["build"]["dockerfile"]).read_text()
            for line in dockerfile.splitlines():
                if line.startswith("COPY "):
                    assert (context / line.split()[1]).is_file(), f"{name}: {line}"


@pytest.mark.skipif(shutil.which("docker") is None, reason="no Docker CLI")
def test_docker_compose_config_accepts_the_file() -> None:
    probe = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip("the Docker CLI has no Compose plugin")
    result = subprocess.run(
        ["docker", "compose", "-f", str(COMPOSE_FILE), "config", "--quiet"],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
    )
    assert result.returncode == 0, result.stderr


def test_simulator_and_job_commands_are_accepted_by_their_clis(services: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    from jobs.stream_signals import build_parser
    from simulator.cli import main as simulator_main

    monkeypatch.chdir(REPO_ROOT)  # compose runs both from the mounted repo
    job_args = [str(arg) for arg in services["job"]["command"]]
    parsed = build_parser().parse_args(job_args[job_args.index("jobs/stream_signals.py") + 1 :])
    assert parsed.config == "conf/compose.yaml" and not parsed.once
    simulator_args = [str(arg) for arg in services["simulator"]["command"]][3:]
    assert simulator_main([*simulator_args, "--count", "50", "--dry-run", "--quiet"]) == 0


def _base_python(dockerfile: Path) -> str:
    """X.Y of the official python:X.Y-... image a Dockerfile builds FROM."""
    base = next(line.split()[1] for line in dockerfile.read_text().splitlines() if line.startswith("FROM "))
    name, _, tag = base.partition(":")
    assert name == "python", f"{dockerfile.name} builds on {base}, not on an official python:X.Y image"
    return ".".join(tag.split("-")[0].split(".")[:2])


def test_every_image_runs_a_python_the_pins_allow() -> None:
    """The lock is resolved for requires-python; an image below it (spark:4.0.2-python3 is Python 3.10) cannot
    install the job's requirements (arro3-core, numpy 2.4 need 3.11)."""
    import tomllib

    from packaging.specifiers import SpecifierSet

    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    allowed = SpecifierSet(project["requires-python"])
    for name in ("job.Dockerfile", "python.Dockerfile"):
        version = _base_python(REPO_ROOT / "docker" / name)
        assert f"{version}.0" in allowed, f"docker/{name}: Python {version} is outside requires-python {allowed}"
    # EMR: the interpreter the bootstrap installs into and the job runs on is in the same range.
    emr_python = load_config(
        REPO_ROOT / "conf" / "aws.yaml", environ={"MARKET_SIGNALS_BUCKET": "b", "MSK_BOOTSTRAP_SERVERS": "b:9098"}
    ).emr.python
    assert f"{emr_python.rsplit('python', 1)[1]}.0" in allowed
