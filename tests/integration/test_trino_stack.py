"""The local Trino launcher's errors: each names its cause and what to do, and nothing is left running."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import pytest

from jobs.devstack.services import ServiceError, free_port
from jobs.devstack.trino import catalog_properties, java_major_version, start_trino
from jobs.pipeline.config import AppConfig


def test_missing_server_says_to_run_make_setup(make_config, tmp_path: Path) -> None:
    config = make_config(f"trino.server_dir={tmp_path / 'nowhere'}")
    with pytest.raises(ServiceError, match=r"trino: no server in .*nowhere: run `make setup`"):
        start_trino(config, free_port(), tmp_path)


def test_java_older_than_24_is_refused(make_config, tmp_path: Path) -> None:
    java = shutil.which("java")
    assert java, "the project's prerequisites include a Java 17+ runtime"
    home = Path(java).resolve().parent.parent
    if java_major_version(home / "bin" / "java") >= 24:
        pytest.skip(f"the system Java at {home} is already 24 or newer")
    config = make_config(f"trino.java_home={home}")
    with pytest.raises(ServiceError, match=r"trino: needs Java 24 or newer, .* is Java (1[7-9]|2[0-3])"):
        start_trino(config, free_port(), tmp_path)


def test_taken_port_is_named(make_config, tmp_path: Path) -> None:
    config: AppConfig = make_config()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ServiceError, match=rf"trino: port {port} on 127.0.0.1 is already taken"):
            start_trino(config, port, tmp_path)
    assert not (tmp_path / f"trino-{port}").exists()


def test_catalog_on_moto_uses_placeholder_keys_and_path_style(make_config) -> None:
    config: AppConfig = make_config("s3.use_test_credentials=false", "s3.path_style_access=false")
    on_moto = catalog_properties(config, "http://127.0.0.1:5999")
    assert on_moto["hive.metastore.glue.endpoint-url"] == on_moto["s3.endpoint"] == "http://127.0.0.1:5999"
    assert on_moto["s3.path-style-access"] == "true" and on_moto["s3.aws-access-key"] == "testing"
    assert on_moto["connector.name"] == "delta_lake" and on_moto["hive.metastore"] == "glue"
    # Against real AWS: the default credential chain, no endpoint unless configured.
    on_aws = catalog_properties(make_config("s3.endpoint=null", "s3.use_test_credentials=false"))
    assert not any(key.endswith(("aws-access-key", "aws-secret-key", "endpoint-url", "s3.endpoint")) for key in on_aws)
