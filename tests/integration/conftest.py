"""One real Trino per test session (Athena's engine) on the session's moto server (Glue and S3), and lakes for it."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pandas as pd
import pytest

from jobs.devstack.services import ServiceHandle, free_port, stop_process
from jobs.pipeline.config import REPO_ROOT, AppConfig

TRINO_HEAP_MB = 1024


@pytest.fixture(scope="session")
def trino_server(moto_server: ServiceHandle, services_dir: Path, base_config: AppConfig) -> Iterator[ServiceHandle]:
    """Trino with the awsdatacatalog catalog on the session's moto (started once, stopped at the end)."""
    from jobs.devstack.trino import server_dir, start_trino

    if not (server_dir(base_config) / "lib").is_dir():
        pytest.fail(f"Trino is not resolved in {server_dir(base_config)}: run `make setup` (or `make trino`)")
    config = base_config.model_copy(deep=True)
    config.trino.heap_mb = TRINO_HEAP_MB
    started = time.monotonic()
    handle = start_trino(
        config, free_port(), services_dir, moto_endpoint=f"http://127.0.0.1:{moto_server.port}", timeout=300
    )
    print(f"\nTrino answered its first query {time.monotonic() - started:.1f}s after start (port {handle.port})")
    try:
        yield handle
    finally:
        stop_process(handle.pid)


@pytest.fixture
def trino_lake(make_config, trino_server: ServiceHandle) -> Callable[..., AppConfig]:
    """A per-test config: tables in a fresh moto bucket, a fresh Glue database, the session's Trino."""
    from jobs.aws.clients import aws_client

    def factory(*overrides: str) -> AppConfig:
        suffix = uuid.uuid4().hex[:10]
        config = make_config(
            f"storage.root=s3a://lake-{suffix}/delta",
            f"glue.database=signals_{suffix}",
            f"trino.port={trino_server.port}",
            *overrides,
        )
        aws_client(config, "s3").create_bucket(Bucket=f"lake-{suffix}")
        return config

    return factory


def config_args(config: AppConfig) -> list[str]:
    """The command-line options that reproduce a test config's storage, catalog and Trino settings."""
    keys = {
        "storage.root": config.storage.root,
        "storage.checkpoint_root": config.storage.checkpoint_root,
        "s3.endpoint": config.s3.endpoint,
        "s3.path_style_access": "true",
        "s3.use_test_credentials": "true",
        "glue.database": config.glue.database,
        "trino.port": config.trino.port,
    }
    args = ["--config", str(REPO_ROOT / "conf" / "local.yaml")]
    for key, value in keys.items():
        args += ["--set", f"{key}={value}"]
    return args


@pytest.fixture
def cli_config_args() -> Callable[[AppConfig], list[str]]:
    return config_args


def normalize(frame: pd.DataFrame, columns: list[str] | tuple[str, ...]) -> pd.DataFrame:
    """Rows comparable across engines and readers: UTC microsecond times, nullable integers, sorted by key."""
    frame = frame[list(columns)].copy()
    for column in frame.columns:
        values = frame[column]
        if pd.api.types.is_datetime64_any_dtype(values):
            if values.dt.tz is None:
                values = values.dt.tz_localize("UTC")
            frame[column] = values.dt.tz_convert("UTC").astype("datetime64[us, UTC]")
        elif pd.api.types.is_integer_dtype(values):
            frame[column] = values.astype("Int64")
        elif pd.api.types.is_float_dtype(values):
            frame[column] = values.astype("float64")
    keys = [column for column in ("symbol", "event_time", "event_date") if column in frame.columns]
    return frame.sort_values(keys or list(frame.columns)).reset_index(drop=True)


@pytest.fixture
def normalized() -> Callable[..., pd.DataFrame]:
    return normalize


def assert_rows_equal(actual: pd.DataFrame, expected: pd.DataFrame, columns: list[str] | tuple[str, ...]) -> None:
    """Row for row: doubles within 1e-9, everything else (labels, times, integers, NULLs) exactly."""
    left, right = normalize(actual, columns), normalize(expected, columns)
    assert len(left) == len(right), f"{len(left)} rows, expected {len(right)}"
    pd.testing.assert_frame_equal(left, right, check_exact=False, rtol=0, atol=1e-9, check_dtype=True)


@pytest.fixture
def rows_equal() -> Callable[..., None]:
    return assert_rows_equal
