"""`make package` builds a complete artifact: spark-submit runs dist/stream_signals.py with only
dist/market_signals.zip on the Python path (from a folder outside the repo) against the session's Kafka
broker, and the Delta tables hold the produced ticks and their signals."""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from jobs.aws.package import ENTRY_MODULE, build_package, import_closure
from jobs.devstack.services import ServiceHandle

REPO_ROOT = Path(__file__).resolve().parents[2]
SPARK_SUBMIT = REPO_ROOT / ".venv" / "bin" / "spark-submit"


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("package") / "dist"
    build_package(folder, REPO_ROOT / "conf" / "aws.yaml")
    return folder


def test_package_contents(dist: Path) -> None:
    assert sorted(path.name for path in dist.iterdir()) == sorted(
        [
            "market_signals.zip",
            "stream_signals.py",
            "aws.yaml",
            "spark-packages.txt",
            "requirements-cluster.txt",
            "bootstrap-install.sh",
            "build-serverless-venv.sh",
            "MANIFEST.json",
        ]
    )
    names = set(zipfile.ZipFile(dist / "market_signals.zip").namelist())
    modules, external = import_closure(REPO_ROOT, ENTRY_MODULE)
    for module in modules:
        assert f"{module.replace('.', '/')}.py" in names or f"{module.replace('.', '/')}/__init__.py" in names
    assert "simulator/cli.py" in names and not any("__pycache__" in name for name in names)
    packages = (dist / "spark-packages.txt").read_text().split()
    assert packages == [
        "org.apache.spark:spark-sql-kafka-0-10_2.13:4.0.2",
        "software.amazon.msk:aws-msk-iam-auth:2.3.9",
    ]
    requirements = {
        line.split("==")[0] for line in (dist / "requirements-cluster.txt").read_text().splitlines() if "==" in line
    }
    assert {"pyyaml", "pydantic", "boto3", "deltalake"} <= requirements
    assert not {"pyspark", "delta-spark", "py4j"} & requirements, "EMR provides Spark and Delta"
    assert (dist / "aws.yaml").read_text() == (REPO_ROOT / "conf" / "aws.yaml").read_text()
    # Amazon Linux 2023's python3 is 3.9: the cluster's packages go into python3.11, never into python3.
    bootstrap = (dist / "bootstrap-install.sh").read_text()
    assert 'python="${2:-python3.11}"' in bootstrap and 'sudo "$python" -m pip install' in bootstrap
    assert "python3 -m pip" not in bootstrap
    venv_script = (dist / "build-serverless-venv.sh").read_text()
    assert 'arch="${1:-x86_64}"' in venv_script and "python3.11 -m venv" in venv_script
    assert "--platform" in venv_script and "amazonlinux:2023" in venv_script
    manifest = json.loads((dist / "MANIFEST.json").read_text())
    assert manifest["spark_packages"] == packages and "market_signals.zip" in manifest["files"]


def test_the_cluster_scripts_are_valid_bash_and_follow_the_profile_architecture(tmp_path: Path) -> None:
    profile = tmp_path / "graviton.yaml"
    profile.write_text(
        (REPO_ROOT / "conf" / "aws.yaml").read_text().replace("architecture: x86_64", "architecture: arm64")
    )
    build_package(tmp_path / "dist", profile)
    for name in ("bootstrap-install.sh", "build-serverless-venv.sh"):
        script = tmp_path / "dist" / name
        assert os.access(script, os.X_OK)
        result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, result.stderr
    assert 'arch="${1:-arm64}"' in (tmp_path / "dist" / "build-serverless-venv.sh").read_text()
    bad = subprocess.run(
        ["bash", str(tmp_path / "dist" / "build-serverless-venv.sh"), "sparc"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert bad.returncode == 2 and "must be x86_64 or arm64" in bad.stderr


def test_the_profile_is_found_in_the_zip_when_files_did_not_reach_the_working_directory(
    dist: Path, tmp_path: Path
) -> None:
    probe = (
        "import runpy, sys; ns = runpy.run_path(sys.argv[1], run_name='probe'); "
        "print(ns['_config_argument'](['--config', 'aws.yaml', '--once'])); "
        "print(ns['_config_argument'](['--config', 'missing.yaml']))"
    )
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env["PYTHONPATH"] = str(dist / "market_signals.zip")
    result = subprocess.run(
        [sys.executable, "-c", probe, str(dist / "stream_signals.py")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    found, missing = (ast.literal_eval(line) for line in result.stdout.strip().splitlines())
    assert found[0] == "--config" and found[2] == "--once" and found[1] != "aws.yaml"
    assert Path(found[1]).read_text() == (REPO_ROOT / "conf" / "aws.yaml").read_text()
    assert "using profiles/aws.yaml from" in result.stderr
    assert missing == ["--config", "missing.yaml"], "an unknown profile is left for the job to report"


def test_the_zip_is_reproducible(dist: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    build_package(again, REPO_ROOT / "conf" / "aws.yaml")
    assert (again / "market_signals.zip").read_bytes() == (dist / "market_signals.zip").read_bytes()


def test_packages_follow_the_profile_auth(tmp_path: Path) -> None:
    profile = tmp_path / "tls.yaml"
    profile.write_text(
        (REPO_ROOT / "conf" / "aws.yaml").read_text().replace("sasl_mechanism: AWS_MSK_IAM", "sasl_mechanism: null")
    )
    build_package(tmp_path / "dist", profile)
    assert (tmp_path / "dist" / "spark-packages.txt").read_text().split() == [
        "org.apache.spark:spark-sql-kafka-0-10_2.13:4.0.2"
    ]


def test_packaged_job_runs_with_spark_submit(
    dist: Path, tmp_path: Path, kafka_broker: ServiceHandle, kafka_topic, produce
) -> None:
    topic = kafka_topic(partitions=2)
    ticks = [
        {
            "v": 1,
            "symbol": symbol,
            "ts": f"2026-11-24T09:{minute:02d}:00.000Z",
            "close": 10.5 + minute,
            "volume": 100 + minute,
        }
        for symbol in ("AAA", "BBB")
        for minute in range(3)
    ]
    produce(topic, [(tick["symbol"], json.dumps(tick)) for tick in ticks])

    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    jars = ",".join(str(path) for path in sorted((REPO_ROOT / ".jars" / "spark").glob("*.jar")))
    lake = tmp_path / "lake"
    env = {key: value for key, value in os.environ.items() if key not in {"PYTHONPATH", "SPARK_HOME"}}
    env.update({"PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable})
    command = [
        str(SPARK_SUBMIT),
        "--master",
        "local[2]",
        "--jars",
        jars,
        "--py-files",
        str(dist / "market_signals.zip"),
        str(dist / "stream_signals.py"),
        "--config",
        str(REPO_ROOT / "conf" / "local.yaml"),
        "--set",
        f"storage.root={lake / 'delta'}",
        "--set",
        f"storage.checkpoint_root={lake / 'checkpoints'}",
        "--set",
        f"kafka.bootstrap_servers={kafka_broker.address}",
        "--set",
        f"kafka.topic={topic}",
        "--set",
        "spark.jars_dir=null",  # jars come from --jars, as on a cluster
        "--set",
        "spark.shuffle_partitions=2",
        "--once",
    ]
    result = subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True, timeout=420)
    assert result.returncode == 0, result.stderr[-4000:]
    # The code came from the zip, not from the source tree.
    origin = re.search(r"market_signals: code from (\S+)", result.stderr + result.stdout)
    assert origin, result.stderr[-4000:]
    assert origin.group(1).endswith("market_signals.zip/jobs/__init__.py"), origin.group(1)
    summary = json.loads(next(line for line in result.stdout.splitlines() if '"event": "summary"' in line))
    assert summary["records_read"] == len(ticks) and summary["ticks_written"] == len(ticks)

    from deltalake import DeltaTable

    from jobs.lake.delta_log import read_delta_arrow

    stored = read_delta_arrow(DeltaTable(str(lake / "delta" / "ticks"))).to_pylist()
    assert sorted((row["symbol"], row["close"], row["volume"]) for row in stored) == sorted(
        (tick["symbol"], tick["close"], tick["volume"]) for tick in ticks
    )
    signals = read_delta_arrow(DeltaTable(str(lake / "delta" / "signals"))).to_pylist()
    assert len(signals) == len(ticks)
    assert {row["signal"] for row in signals} == {"Hold"}, "three ticks per symbol: no SMA(9) yet"
