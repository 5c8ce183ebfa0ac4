"""boto3 clients built from config: custom endpoints for local emulators, the default credential chain otherwise."""

from __future__ import annotations

from typing import Any, Literal

import boto3
from botocore.config import Config as BotoConfig

from jobs.pipeline.config import AppConfig

Service = Literal["s3", "glue", "athena", "emr", "emr-serverless", "sts", "secretsmanager"]


def _endpoint_and_region(config: AppConfig, service: Service) -> tuple[str | None, str]:
    if service == "glue":
        return config.glue.endpoint or config.s3.endpoint, config.glue.region
    if service == "athena":
        return config.athena.endpoint or config.s3.endpoint, config.athena.region
    return config.s3.endpoint, config.s3.region


def aws_client(config: AppConfig, service: Service) -> Any:
    endpoint, region = _endpoint_and_region(config, service)
    options: dict[str, Any] = {
        "region_name": region,
        "config": BotoConfig(
            retries={"max_attempts": 3, "mode": "standard"},
            connect_timeout=5,
            read_timeout=30,
            s3={"addressing_style": "path" if config.s3.path_style_access else "auto"},
        ),
    }
    if endpoint:
        options["endpoint_url"] = endpoint
    if config.s3.use_test_credentials:
        # Local emulators only (moto, MinIO): fixed placeholders, never real credentials.
        options["aws_access_key_id"] = "testing"
        options["aws_secret_access_key"] = "testing"
    return boto3.client(service, **options)


def split_s3_uri(uri: str) -> tuple[str, str]:
    """s3://bucket/key or s3a://bucket/key -> (bucket, key)."""
    scheme, _, rest = uri.partition("://")
    if scheme not in {"s3", "s3a"}:
        raise ValueError(f"not an S3 location: {uri}")
    bucket, _, key = rest.partition("/")
    return bucket, key
