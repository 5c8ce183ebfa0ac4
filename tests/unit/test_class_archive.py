"""The local driver maps the class-data archive `make setup` builds, only where it can: local mode, file present."""

from __future__ import annotations

from pathlib import Path

from jobs.pipeline.config import REPO_ROOT, load_config
from jobs.pipeline.spark_session import spark_settings

PROFILE = REPO_ROOT / "conf" / "local.yaml"


def _settings(*overrides: str) -> dict[str, str]:
    return spark_settings(load_config(PROFILE, ["spark.jars_dir=null", *overrides], environ={}))


def test_a_local_driver_maps_an_existing_archive_beside_its_own_options(tmp_path: Path) -> None:
    archive = tmp_path / "classes.jsa"
    archive.write_bytes(b"archive")
    settings = _settings(
        f"spark.class_archive={archive}", 'spark.conf={"spark.driver.extraJavaOptions": "-Dprofile.own=1"}'
    )
    assert settings["spark.driver.extraJavaOptions"] == (
        f"-XX:SharedArchiveFile={archive} -Xshare:auto -Xlog:cds=off -Xlog:cds+dynamic=off -Dprofile.own=1"
    )


def test_no_archive_option_without_the_file_off_local_mode_or_when_unset(tmp_path: Path) -> None:
    archive = tmp_path / "classes.jsa"
    assert "spark.driver.extraJavaOptions" not in _settings(f"spark.class_archive={archive}")
    archive.write_bytes(b"archive")
    assert "spark.driver.extraJavaOptions" not in _settings(f"spark.class_archive={archive}", "spark.master=null")
    assert "spark.driver.extraJavaOptions" not in _settings("spark.class_archive=null")


def test_the_session_driver_started_with_the_archive_setup_built(spark) -> None:
    """`make setup` builds the archive; the test session's own driver (a local one) runs with it mapped."""
    archive = REPO_ROOT / ".jars" / "spark-classes.jsa"
    assert archive.is_file(), "make setup builds .jars/spark-classes.jsa"
    runtime = spark.sparkContext._jvm.java.lang.management.ManagementFactory.getRuntimeMXBean()
    assert f"-XX:SharedArchiveFile={archive}" in list(runtime.getInputArguments())
    assert "sharing" in spark.sparkContext._jvm.java.lang.System.getProperty("java.vm.info")
