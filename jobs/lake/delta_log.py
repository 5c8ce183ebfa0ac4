"""The Delta tables read without Spark (delta-rs): locations, S3 storage options, opening a table."""

from __future__ import annotations

import re
from typing import Any

from jobs.pipeline.config import AppConfig, is_remote

_COLOUR = re.compile(r"\x1b\[[0-9;]*m")


def error_line(error: BaseException) -> str:
    """`Type: message` on one plain line. deltalake's errors put each cause of the chain on a line of its own,
    marked with `↳` and terminal colour codes."""
    causes = (part.strip().lstrip("↳").strip() for part in _COLOUR.sub("", str(error)).splitlines())
    return f"{type(error).__name__}: " + ": ".join(" ".join(part.split()) for part in causes if part)


def delta_uri(location: str) -> str:
    """A table location as deltalake expects it: s3a:// becomes s3://, local paths stay paths."""
    return "s3://" + location.removeprefix("s3a://") if location.startswith("s3a://") else location


def delta_storage_options(config: AppConfig) -> dict[str, str]:
    """deltalake (object_store) options for the configured S3: endpoint, path style, credentials."""
    options: dict[str, str] = {"AWS_REGION": config.s3.region}
    if config.s3.endpoint:
        options["AWS_ENDPOINT_URL"] = config.s3.endpoint
        if config.s3.endpoint.startswith("http://"):
            options["AWS_ALLOW_HTTP"] = "true"
    if config.s3.path_style_access:
        options["AWS_VIRTUAL_HOSTED_STYLE_REQUEST"] = "false"
    if config.s3.use_test_credentials:
        # Local emulators only (moto, MinIO): the same fixed placeholders as jobs.aws.
        options["AWS_ACCESS_KEY_ID"] = "testing"
        options["AWS_SECRET_ACCESS_KEY"] = "testing"
    else:
        # boto3 resolves the whole default chain (profiles, SSO, instance role); object_store alone does not
        # read ~/.aws profiles. Without credentials there, object_store still tries the environment and IMDS.
        import boto3

        credentials = boto3.Session().get_credentials()
        if credentials is not None:
            frozen = credentials.get_frozen_credentials()
            options["AWS_ACCESS_KEY_ID"] = frozen.access_key
            options["AWS_SECRET_ACCESS_KEY"] = frozen.secret_key
            if frozen.token:
                options["AWS_SESSION_TOKEN"] = frozen.token
    return options


def open_delta_table(config: AppConfig, table: str) -> Any | None:
    """The Delta table `table` under storage.root, or None when it does not exist (yet)."""
    from deltalake import DeltaTable

    location = config.table_path(table)
    uri = delta_uri(location)
    options = delta_storage_options(config) if is_remote(location) else None
    if not DeltaTable.is_deltatable(uri, storage_options=options):
        return None
    return DeltaTable(uri, storage_options=options)


def read_delta_arrow(table: Any, columns: list[str] | None = None, filter: Any = None, dataset: Any = None) -> Any:
    """The rows of an open Delta table (or of `dataset`, a subset of its files) as a pyarrow Table.

    `filter` is a pyarrow.compute expression. The scan runs on the calling thread: delta-rs's dataset scanned on
    Arrow's thread pool makes some interpreter exits abort after the work is done ("terminate called without an
    active exception", SIGABRT; 5 of 40 report CLI runs here, delta-io/delta-rs#2184). These reads are small (one
    symbol's rows, the files a board refresh added), so threads buy little.
    """
    source = dataset if dataset is not None else table.to_pyarrow_dataset()
    return source.to_table(columns=columns, filter=filter, use_threads=False)
