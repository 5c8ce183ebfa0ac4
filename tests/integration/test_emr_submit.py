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
MOTO_SERVERLESS_LABEL = "emr-7.12.0"
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
        ReleaseLabel="emr-spark-8.0.0",
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
    # Amazon Linux 2023's python3 is 3.9: driver and executors run the 3.11 the bootstrap action installed into.
    for key in ("spark.pyspark.python", "spark.pyspark.driver.python", "spark.yarn.appMasterEnv.PYSPARK_PYTHON"):
        assert confs[key] == "/usr/bin/python3.11", key
    assert confs["spark.executorEnv.PYSPARK_PYTHON"] == "/usr/bin/python3.11"
    assert "jaas" in confs["spark.redaction.regex"]
    # EMR's own S3 setup (S3A for s3:// since 7.10, its credential provider for runtime roles) is left alone.
    assert "spark.hadoop.fs.s3.impl" not in confs and "spark.hadoop.fs.s3a.aws.credentials.provider" not in confs
    # The streaming step never ends: the cluster now runs later steps beside it.
    assert emr_client.describe_cluster(ClusterId=cluster_id)["Cluster"]["StepConcurrencyLevel"] == 2
    assert "raised the step concurrency level" in err
    entry = args.index(f"s3://{BUCKET}/releases/7/stream_signals.py")
    # The job loads the shipped profile again on the cluster, with the same overrides.
    assert args[entry + 1 : entry + 3] == ["--config", "aws.yaml"]
    assert f"s3.endpoint=http://127.0.0.1:{moto_server.port}" in args[entry:]


def test_serverless_job_run_is_started_in_streaming_mode(
    moto_server: ServiceHandle, moto_env: dict, dist: Path, capsys: pytest.CaptureFixture
) -> None:
    serverless = client(moto_server, "emr-serverless")
    # moto's emulator only accepts emr-N.N.0 labels; a real application runs emr-spark-8.0.0 (conf/aws.yaml).
    application_id = serverless.create_application(
        name="market-signals", releaseLabel=MOTO_SERVERLESS_LABEL, type="SPARK"
    )["applicationId"]
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
    assert run["executionRole"] == role and run["releaseLabel"] == MOTO_SERVERLESS_LABEL
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


def _cluster(moto_server: ServiceHandle, level: int = 1) -> tuple[object, str]:
    emr_client = client(moto_server, "emr")
    cluster_id = emr_client.run_job_flow(
        Name="market-signals",
        ReleaseLabel="emr-spark-8.0.0",
        Instances={"MasterInstanceType": "m7g.xlarge", "InstanceCount": 1, "KeepJobFlowAliveWhenNoSteps": True},
        Applications=[{"Name": "Spark"}],
        JobFlowRole="EMR_EC2_DefaultRole",
        ServiceRole="EMR_DefaultRole",
        StepConcurrencyLevel=level,
    )["JobFlowId"]
    return emr_client, cluster_id


def _step(name: str) -> dict:
    return {"Name": name, "ActionOnFailure": "CONTINUE", "HadoopJarStep": {"Jar": "command-runner.jar", "Args": ["ls"]}}


def test_a_streaming_step_behind_active_steps_on_a_one_step_cluster_is_refused(
    moto_server: ServiceHandle, moto_env: dict
) -> None:
    emr_client, cluster_id = _cluster(moto_server)
    emr_client.add_job_flow_steps(JobFlowId=cluster_id, Steps=[_step("older-stream")])
    with pytest.raises(emr.SubmitError, match="runs 1 step at a time and has active steps: older-stream"):
        emr.ensure_step_concurrency(emr_client, cluster_id, wanted=2, streaming=True)
    level = emr_client.describe_cluster(ClusterId=cluster_id)["Cluster"]["StepConcurrencyLevel"]
    assert level == 1, "never changed while steps run"
    note = emr.ensure_step_concurrency(emr_client, cluster_id, wanted=2, streaming=False)
    assert note and "this step waits for older-stream" in note and "--step-concurrency-level 2" in note


def test_a_cluster_that_already_runs_steps_side_by_side_is_left_alone(moto_server: ServiceHandle, moto_env) -> None:
    emr_client, cluster_id = _cluster(moto_server, level=4)
    emr_client.add_job_flow_steps(JobFlowId=cluster_id, Steps=[_step("stream")])
    assert emr.ensure_step_concurrency(emr_client, cluster_id, wanted=2, streaming=True) is None
    assert emr_client.describe_cluster(ClusterId=cluster_id)["Cluster"]["StepConcurrencyLevel"] == 4


def test_serverless_venv_for_another_architecture_is_refused() -> None:
    """moto does not keep an application's architecture: GetApplication answers from botocore's stubber, which
    validates the call against the service model."""
    import botocore.session
    from botocore.stub import Stubber

    stubbed = botocore.session.get_session().create_client(
        "emr-serverless", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x"
    )
    application = {
        "applicationId": "00graviton",
        "arn": "arn:aws:emr-serverless:us-east-1:123456789012:/applications/00graviton",
        "releaseLabel": "emr-spark-8.0.0",
        "type": "SPARK",
        "state": "STARTED",
        "createdAt": 0,
        "updatedAt": 0,
        "architecture": "ARM64",
    }
    with Stubber(stubbed) as stubber:
        for _ in range(2):
            stubber.add_response("get_application", {"application": application}, {"applicationId": "00graviton"})
        with pytest.raises(emr.SubmitError, match="runs on ARM64 but emr.architecture is x86_64"):
            emr.check_architecture(stubbed, "00graviton", "x86_64")
        emr.check_architecture(stubbed, "00graviton", "arm64")


def test_secret_env_reaches_the_driver_from_secrets_manager_and_never_the_dry_run(
    moto_server: ServiceHandle, moto_env: dict, dist: Path, capsys: pytest.CaptureFixture
) -> None:
    jaas = 'org.apache.kafka.common.security.scram.ScramLoginModule required username="u" password="p";'
    client(moto_server, "secretsmanager").create_secret(Name="market-signals/msk-jaas", SecretString=jaas)
    emr_client, cluster_id = _cluster(moto_server)
    argv = [
        "submit",
        "--config",
        AWS_YAML,
        *moto_overrides(moto_server),
        "--cluster-id",
        cluster_id,
        "--dist",
        str(dist),
        "--secret-env",
        "MSK_SASL_JAAS_CONFIG=market-signals/msk-jaas",
    ]
    assert emr.main([*argv, "--dry-run"], environ=moto_env) == 0
    printed = capsys.readouterr().out
    assert 'password="p"' not in printed and "<secret market-signals/msk-jaas>" in printed
    assert emr.main(argv, environ=moto_env) == 0, capsys.readouterr().err
    step_id = json.loads(capsys.readouterr().out)["step_ids"][0]
    args = emr_client.describe_step(ClusterId=cluster_id, StepId=step_id)["Step"]["Config"]["Args"]
    # Cluster mode: only spark.yarn.appMasterEnv.* reaches the driver's environment in its YARN container.
    assert conf_values(args)["spark.yarn.appMasterEnv.MSK_SASL_JAAS_CONFIG"] == jaas
