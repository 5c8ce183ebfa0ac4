"""The AWS profile (conf/aws.yaml) and the validation that keeps it deployable and free of secrets."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from jobs.pipeline.config import MSK_IAM_OPTIONS, ConfigError, load_config

REPO_ROOT = Path(__file__).resolve().parents[2]
AWS_YAML = REPO_ROOT / "conf" / "aws.yaml"
ENV = {
    "MARKET_SIGNALS_BUCKET": "acme-market-data",
    "MSK_BOOTSTRAP_SERVERS": "b-1.msk.example:9098,b-2.msk.example:9098",
}


def write_profile(tmp_path: Path, mutate) -> Path:
    tree = yaml.safe_load(AWS_YAML.read_text())
    mutate(tree)
    path = tmp_path / "profile.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


def test_aws_profile_loads_with_the_documented_environment() -> None:
    config = load_config(AWS_YAML, environ=ENV)
    assert config.storage.root == "s3a://acme-market-data/market-signals/delta"
    assert config.storage.checkpoint_root == "s3a://acme-market-data/market-signals/checkpoints"
    assert config.athena.output_location == "s3://acme-market-data/athena-results/"
    assert config.athena.workgroup == "primary"
    assert config.glue.database == "market_signals"
    assert config.kafka.bootstrap_servers == ENV["MSK_BOOTSTRAP_SERVERS"]
    assert config.kafka.require_tls and config.kafka.security_protocol == "SASL_SSL"
    assert config.kafka.sasl_mechanism == "AWS_MSK_IAM"
    assert config.kafka.options == MSK_IAM_OPTIONS
    assert config.spark.jars_dir is None and config.spark.master is None
    assert not config.s3.use_test_credentials and not config.s3.sse_kms_key_id
    assert config.emr.artifacts_uri == "s3://acme-market-data/market-signals/artifacts/"


def test_optional_kms_key_and_region_come_from_the_environment() -> None:
    from jobs.pipeline.spark_session import spark_settings

    config = load_config(AWS_YAML, environ={**ENV, "MARKET_SIGNALS_KMS_KEY": "alias/market", "AWS_REGION": "eu-west-1"})
    assert config.s3.sse_kms_key_id == "alias/market"
    assert config.glue.region == config.athena.region == config.s3.region == "eu-west-1"
    settings = spark_settings(config)
    assert settings["spark.hadoop.fs.s3a.encryption.algorithm"] == "SSE-KMS"
    assert settings["spark.hadoop.fs.s3a.encryption.key"] == "alias/market"
    assert settings["spark.hadoop.fs.s3a.aws.credentials.provider"].endswith("DefaultCredentialsProvider")
    assert "spark.hadoop.fs.s3a.secret.key" not in settings


def test_missing_environment_is_named() -> None:
    with pytest.raises(ConfigError, match="MARKET_SIGNALS_BUCKET is not set"):
        load_config(AWS_YAML, environ={"MSK_BOOTSTRAP_SERVERS": "b:9098"})


def test_s3_location_without_bucket_is_refused() -> None:
    with pytest.raises(ConfigError) as error:
        load_config(AWS_YAML, environ={**ENV, "MARKET_SIGNALS_BUCKET": ""})
    message = str(error.value)
    assert "storage.root: 's3a:///market-signals/delta' has no bucket" in message
    assert "storage.checkpoint_root" in message


def test_athena_output_without_bucket_is_refused_on_its_own() -> None:
    with pytest.raises(ConfigError, match=r"athena.output_location: 's3:///results/' has no bucket"):
        load_config(AWS_YAML, ["athena.output_location=s3:///results/"], environ=ENV)
    with pytest.raises(ConfigError, match="emr.artifacts_uri.*has no bucket"):
        load_config(AWS_YAML, ["emr.artifacts_uri=s3:///x/"], environ=ENV)


@pytest.mark.parametrize("protocol", ["PLAINTEXT", "SASL_PLAINTEXT"])
def test_plaintext_kafka_is_refused_when_the_profile_requires_tls(protocol: str) -> None:
    with pytest.raises(ConfigError, match=f"kafka.security_protocol: {protocol} .*require_tls"):
        load_config(AWS_YAML, [f"kafka.security_protocol={protocol}", "kafka.sasl_mechanism=null"], environ=ENV)


def test_tls_only_and_scram_variants_load(tmp_path: Path) -> None:
    tls = load_config(
        AWS_YAML, ["kafka.security_protocol=SSL", "kafka.sasl_mechanism=null", "kafka.options={}"], environ=ENV
    )
    assert tls.kafka.security_protocol == "SSL"
    jaas = 'org.apache.kafka.common.security.scram.ScramLoginModule required username="u" password="p";'

    def scram(tree: dict) -> None:
        tree["kafka"]["sasl_mechanism"] = "SCRAM-SHA-512"
        tree["kafka"]["options"] = {"sasl.jaas.config": "${MSK_SASL_JAAS_CONFIG}"}

    # The secret arrives from the environment: the file holds only the reference, which is allowed.
    config = load_config(write_profile(tmp_path, scram), environ={**ENV, "MSK_SASL_JAAS_CONFIG": jaas})
    assert config.kafka.options["sasl.jaas.config"] == jaas


def test_msk_iam_needs_its_client_settings() -> None:
    with pytest.raises(ConfigError, match="sasl.client.callback.handler.class.*IAMClientCallbackHandler"):
        load_config(AWS_YAML, ["kafka.options={}"], environ=ENV)
    with pytest.raises(ConfigError, match="needs kafka.security_protocol SASL_SSL"):
        load_config(AWS_YAML, ["kafka.security_protocol=SSL"], environ=ENV)


# Shaped like an access key id, built at run time so secret scanners do not flag the test itself.
FAKE_ACCESS_KEY_ID = "AKIA" + "ABCDEFGHIJKLMNOP"


@pytest.mark.parametrize(
    ("mutate", "named"),
    [
        (lambda t: t["s3"].update(aws_access_key_id=FAKE_ACCESS_KEY_ID), "s3.aws_access_key_id"),
        (
            lambda t: t["s3"].update(aws_secret_access_key="wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
            "s3.aws_secret_access_key",
        ),
        (
            lambda t: t["spark"].update(conf={"spark.hadoop.fs.s3a.secret.key": "abc"}),
            "spark.conf.spark.hadoop.fs.s3a.secret.key",
        ),
        (
            lambda t: t["spark"].update(conf={"spark.hadoop.fs.s3a.endpoint.note": f"key {FAKE_ACCESS_KEY_ID}"}),
            "spark.conf.spark.hadoop.fs.s3a.endpoint.note contains an AWS access key id",
        ),
        (
            lambda t: t["kafka"].update(
                options={"sasl.jaas.config": 'ScramLoginModule required username="u" password="s3cret";'}
            ),
            "kafka.options.sasl.jaas.config contains a password",
        ),
        (
            lambda t: t["kafka"].update(options={"ssl.truststore.password": "changeit"}),
            "kafka.options.ssl.truststore.password holds a credential",
        ),
    ],
)
def test_credentials_written_into_the_file_are_refused(tmp_path: Path, mutate, named: str) -> None:
    path = write_profile(tmp_path, mutate)
    with pytest.raises(ConfigError) as error:
        load_config(path, environ=ENV)
    assert named in str(error.value)
    assert str(path) in str(error.value)


def test_references_to_the_environment_are_not_credentials(tmp_path: Path) -> None:
    def mutate(tree: dict) -> None:
        tree["kafka"]["options"]["ssl.truststore.password"] = "${TRUSTSTORE_PASSWORD}"

    config = load_config(write_profile(tmp_path, mutate), environ={**ENV, "TRUSTSTORE_PASSWORD": "changeit"})
    assert config.kafka.options["ssl.truststore.password"] == "changeit"


def test_every_shipped_profile_passes(tmp_path: Path) -> None:
    for name in ("local.yaml", "compose.yaml"):
        load_config(REPO_ROOT / "conf" / name, environ={})


def test_emr_runs_python_3_11_and_validates_architecture_and_step_concurrency() -> None:
    config = load_config(AWS_YAML, environ=ENV)
    assert config.emr.python == "/usr/bin/python3.11", "Amazon Linux 2023's python3 is 3.9: too old for the pins"
    assert config.emr.architecture == "x86_64" and config.emr.step_concurrency == 2
    assert load_config(AWS_YAML, ["emr.architecture=arm64"], environ=ENV).emr.architecture == "arm64"
    with pytest.raises(ConfigError, match="emr.architecture"):
        load_config(AWS_YAML, ["emr.architecture=aarch64"], environ=ENV)
    with pytest.raises(ConfigError, match="emr.step_concurrency"):
        load_config(AWS_YAML, ["emr.step_concurrency=0"], environ=ENV)
