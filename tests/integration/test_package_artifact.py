"""`make package` builds a complete artifact: its contents, its reproducibility, its scripts and its packages.

The artifact running under spark-submit (from a folder outside the repo, with only dist/market_signals.zip on the
Python path and the cluster's own virtualenv) is tests/integration/test_cluster.py."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from jobs.aws.package import ENTRY_MODULE, build_package, import_closure

REPO_ROOT = Path(__file__).resolve().parents[2]


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
