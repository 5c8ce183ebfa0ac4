"""`python -m jobs.emr submit` against the session's moto server: EMR on EC2 steps, EMR Serverless job runs,
artifact upload, dry runs and the errors for missing settings."""

from __future__ import annotations

import json
from pathlib import Path

import boto3
import pytest

from jobs.aws import emr
from jobs.aws.package import build_package
from jobs.devstack.services import ServiceHandle
from jobs.pipeline.config import load_config

REPO_ROOT = Path(__file__).resolve().parents[2]
AWS_YAML = str(REPO_ROOT / "conf" / "aws.yaml")
BUCKET = "acme-emr-artifacts"
ENV = {"MARKET_SIGNALS_BUCKET": BUCKET, "MSK_BOOTSTRAP_SERVERS": "b-1.msk.example:9098", "AWS_REGION": "us-east-1"}
GLUE_FACTORY = "spark.hadoop.hive.metastore.client.factory.class=" + emr.GLUE_METASTORE_FACTORY


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("emr") / "dist"
    build_package(folder, Path(AWS_YAML))
    return folder


@pytest.fixture
def moto_env(moto_server: ServiceHandle, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    return {**ENV}


def moto_overrides(moto_server: ServiceHandle) -> list[str]:
    """Point the AWS profile's clients at moto; the rest of the profile stays as shipped."""
    return ["--set", f"s3.endpoint=http://127.0.0.1:{moto_server.port}", "--set", "s3.path_style_access=true"]


def client(moto_server: ServiceHandle, service: str):
    return boto3.client(
        service,
        region_name="us-east-1",
        endpoint_url=f"http://127.0.0.1:{moto_server.port}",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def test_ec2_step_is_added_with_the_spark_submit_of_the_profile(
    moto_server: ServiceHandle, moto_env: dict, dist: Path, capsys: pytest.CaptureFixture
) -> None:
    s3 = client(moto_server, "s3")
    s3.create_bucket(Bucket=BUCKET)
    emr_client = client(moto_server, "emr")
    cluster_id = emr_client.run_job_flow(
        Name="market-signals",
        ReleaseLabel="emr-8.0.0",
        Instances={"MasterInstanceType": "m7g.xlarge", "InstanceCount": 1, "KeepJobFlowAliveWhenNoSteps": True},
        Applications=[{"Name": "Spark"}],
        JobFlowRole="EMR_EC2_DefaultRole",
        ServiceRole="EMR_DefaultRole",
    )["JobFlowId"]

    code = emr.main(
        [
            "submit",
            "--config",
            AWS_YAML,
            *moto_overrides(moto_server),
            "--target",
            "ec2",
            "--cluster-id",
            cluster_id,
            "--dist",
            str(dist),
            "--upload",
            "--artifacts",
            f"s3://{BUCKET}/releases/7/",
        ],
        environ=moto_env,
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    result = json.loads(out)
    assert result["event"] == "submitted" and result["cluster_id"] == cluster_id

    keys = {item["Key"] for item in s3.list_objects_v2(Bucket=BUCKET, Prefix="releases/7/")["Contents"]}
    assert {f"releases/7/{name}" for name in emr.UPLOADED} == keys

    step = emr_client.describe_step(ClusterId=cluster_id, StepId=result["step_ids"][0])["Step"]
    assert step["Name"] == "market-signals-stream" and step["ActionOnFailure"] == "CONTINUE"
    assert step["Config"]["Jar"] == "command-runner.jar"
    args = step["Config"]["Args"]
    assert args[0] == "spark-submit"
    assert emr_option(args, "--deploy-mode") == "cluster"
    assert emr_option(args, "--packages").split(",") == (dist / "spark-packages.txt").read_text().split()
    assert "org.apache.spark:spark-sql-kafka-0-10_2.13:4.0.2" in emr_option(args, "--packages")
    assert "software.amazon.msk:aws-msk-iam-auth" in emr_option(args, "--packages")
    assert emr_option(args, "--py-files").split(",") == [
        f"s3://{BUCKET}/releases/7/market_signals.zip",
        "/usr/share/aws/delta/lib/delta-spark.jar",
    ]
    assert (
        emr_option(args, "--jars")
        == "/usr/share/aws/delta/lib/delta-spark.jar,/usr/share/aws/delta/lib/delta-storage.jar"
    )
    assert emr_option(args, "--files") == f"s3://{BUCKET}/releases/7/aws.yaml"
    confs = conf_values(args)
    assert GLUE_FACTORY.split("=", 1)[1] == confs["spark.hadoop.hive.metastore.client.factory.class"]
    assert confs["spark.sql.extensions"] == "io.delta.sql.DeltaSparkSessionExtension"
    assert confs["spark.sql.catalog.spark_catalog"] == "org.apache.spark.sql.delta.catalog.DeltaCatalog"
    assert confs["spark.yarn.appMasterEnv.MARKET_SIGNALS_BUCKET"] == BUCKET
    assert confs["spark.yarn.appMasterEnv.MSK_BOOTSTRAP_SERVERS"] == "b-1.msk.example:9098"
    assert "spark.jars" not in confs, "no local jar folder on the cluster"
    entry = args.index(f"s3://{BUCKET}/releases/7/stream_signals.py")
    # The job loads the shipped profile again on the cluster, with the same overrides.
    assert args[entry + 1 : entry + 3] == ["--config", "aws.yaml"]
    assert f"s3.endpoint=http://127.0.0.1:{moto_server.port}" in args[entry:]


def test_serverless_job_run_is_started_in_streaming_mode(
    moto_server: ServiceHandle, moto_env: dict, dist: Path, capsys: pytest.CaptureFixture
) -> None:
    serverless = client(moto_server, "emr-serverless")
    application_id = serverless.create_application(name="market-signals", releaseLabel="emr-8.0.0", type="SPARK")[
        "applicationId"
    ]
    role = "arn:aws:iam::123456789012:role/market-signals-job"
    code = emr.main(
        [
            "submit",
            "--config",
            AWS_YAML,
            *moto_overrides(moto_server),
            "--target",
            "serverless",
            "--application-id",
            application_id,
            "--execution-role-arn",
            role,
            "--dist",
            str(dist),
            "--set",
            "emr.venv_archive=s3://acme-emr-artifacts/venv/market-signals.tar.gz",
        ],
        environ=moto_env,
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    result = json.loads(out)
    run = serverless.get_job_run(applicationId=application_id, jobRunId=result["job_run_id"])["jobRun"]
    assert run["executionRole"] == role and run["releaseLabel"] == "emr-8.0.0"
    driver = run["jobDriver"]["sparkSubmit"]
    assert driver["entryPoint"] == f"s3://{BUCKET}/market-signals/artifacts/stream_signals.py"
    assert driver["entryPointArguments"][:2] == ["--config", "aws.yaml"]
    params = driver["sparkSubmitParameters"].split(" ")
    assert "--deploy-mode" not in params
    confs = conf_values(params)
    assert confs["spark.emr-serverless.driverEnv.MARKET_SIGNALS_BUCKET"] == BUCKET
    assert confs["spark.archives"] == "s3://acme-emr-artifacts/venv/market-signals.tar.gz#environment"
    assert confs["spark.emr-serverless.driverEnv.PYSPARK_PYTHON"] == "./environment/bin/python"
    assert confs["spark.hadoop.hive.metastore.client.factory.class"] == emr.GLUE_METASTORE_FACTORY


def test_serverless_request_shape() -> None:
    """What moto does not echo back: mode, client token, log location."""
    config = load_config(AWS_YAML, environ=ENV)
    submission = emr.Submission(
        target="serverless",
        artifacts_uri=f"s3://{BUCKET}/a/",
        application_id="00abc",
        execution_role_arn="arn:aws:iam::1:role/r",
        packages=["g:a:1"],
        log_uri=config.emr.log_uri,
    )
    request = emr.build_request(config, submission, client_token="token-1")
    assert request["mode"] == "STREAMING" and request["clientToken"] == "token-1"
    assert request["configurationOverrides"]["monitoringConfiguration"]["s3MonitoringConfiguration"] == {
        "logUri": f"s3://{BUCKET}/market-signals/emr-logs/"
    }
    batch = emr.build_request(config, emr.Submission(**{**submission.__dict__, "streaming": False}), "t")
    assert "mode" not in batch

    import botocore.session
    from botocore.stub import Stubber

    stubbed = botocore.session.get_session().create_client(
        "emr-serverless", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x"
    )
    with Stubber(stubbed) as stubber:  # validates the request against the service model
        arn = "arn:aws:emr-serverless:us-east-1:123456789012:/applications/00abc/jobruns/r1"
        stubber.add_response("start_job_run", {"applicationId": "00abc", "jobRunId": "r1", "arn": arn}, request)
        stubbed.start_job_run(**request)


def test_dry_run_prints_the_request_and_calls_nothing(dist: Path, capsys: pytest.CaptureFixture) -> None:
    code = emr.main(
        ["submit", "--config", AWS_YAML, "--cluster-id", "j-DRYRUN", "--dist", str(dist), "--dry-run", "--once"],
        environ=ENV,
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    printed = json.loads(out)
    assert printed["target"] == "ec2"
    args = printed["request"]["Steps"][0]["HadoopJarStep"]["Args"]
    assert args[-1] == "--once" and printed["request"]["JobFlowId"] == "j-DRYRUN"


@pytest.mark.parametrize(
    ("argv", "environ", "message"),
    [
        ([], ENV, "no cluster: pass --cluster-id"),
        (["--target", "serverless"], ENV, "no application: pass --application-id"),
        (["--target", "serverless", "--application-id", "00a"], ENV, "no job role"),
        (["--cluster-id", "j-1"], {"MSK_BOOTSTRAP_SERVERS": "b:9098"}, "MARKET_SIGNALS_BUCKET is not set"),
        (["--cluster-id", "j-1", "--artifacts", "/tmp/dist"], ENV, "must be s3://bucket/prefix/"),
        (
            ["--cluster-id", "j-1", "--set", "storage.checkpoint_root=/tmp/cp"],
            ENV,
            "storage.checkpoint_root is '/tmp/cp': a cluster job needs s3a://",
        ),
        (
            ["--cluster-id", "j-1", "--set", "kafka.security_protocol=PLAINTEXT", "--set", "kafka.sasl_mechanism=null"],
            ENV,
            "require_tls",
        ),
    ],
)
def test_missing_settings_exit_2_with_the_setting_named(
    dist: Path, capsys: pytest.CaptureFixture, argv: list[str], environ: dict, message: str
) -> None:
    code = emr.main(["submit", "--config", AWS_YAML, "--dist", str(dist), "--dry-run", *argv], environ=environ)
    _, err = capsys.readouterr()
    assert code == 2
    assert message in err and "Traceback" not in err


def test_missing_package_is_named(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code = emr.main(
        ["submit", "--config", AWS_YAML, "--cluster-id", "j-1", "--dist", str(tmp_path), "--dry-run"], environ=ENV
    )
    assert code == 2 and "run `make package` first" in capsys.readouterr().err


def test_secret_environment_is_not_forwarded() -> None:
    text = "a: ${MSK_BOOTSTRAP_SERVERS}\nb: ${MSK_SASL_JAAS_CONFIG}\nc: ${UNSET:-x}\n"
    forward, held = emr.referenced_environment(text, {"MSK_BOOTSTRAP_SERVERS": "b:9096", "MSK_SASL_JAAS_CONFIG": "s"})
    assert forward == {"MSK_BOOTSTRAP_SERVERS": "b:9096"} and held == ["MSK_SASL_JAAS_CONFIG"]


def emr_option(args: list[str], option: str) -> str:
    return args[args.index(option) + 1]


def conf_values(args: list[str]) -> dict[str, str]:
    return dict(args[i + 1].split("=", 1) for i, arg in enumerate(args) if arg == "--conf")
