"""Submit the streaming job to Amazon EMR: a step on an EMR on EC2 cluster, or an EMR Serverless job run.

    make package
    python -m jobs.emr submit --config conf/aws.yaml --target ec2 --cluster-id j-XXXX --upload [--dry-run]
    python -m jobs.emr submit --config conf/aws.yaml --target serverless \\
        --application-id 00f... --execution-role-arn arn:aws:iam::123456789012:role/market-signals-job --upload

The spark-submit arguments are built from the profile: the artifacts of `make package` on S3 (--py-files,
--files, the entry script), --packages from dist/spark-packages.txt, every Spark setting of
jobs.pipeline.spark_session.spark_settings (Delta, S3A, SSE-KMS), EMR's Delta jars, the Glue Data Catalog as the
metastore, and the environment variables the profile references, forwarded to the driver (which loads the
profile again on the cluster). Request building is pure; boto3 is only touched to upload, to check the target
(EMR on EC2: the step concurrency level; EMR Serverless: the application's architecture) and to submit.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from jobs.aws.package import ENTRY_NAME, PACKAGES_NAME, PROFILE_NAME, ZIP_NAME
from jobs.pipeline.config import (
    REPO_ROOT,
    AppConfig,
    ConfigError,
    add_config_arguments,
    is_remote,
    load_config,
)

GLUE_METASTORE_FACTORY = "com.amazonaws.glue.catalog.metastore.AWSGlueDataCatalogHiveClientFactory"
UPLOADED = (
    ZIP_NAME,
    ENTRY_NAME,
    PROFILE_NAME,
    PACKAGES_NAME,
    "requirements-cluster.txt",
    "bootstrap-install.sh",
    "build-serverless-venv.sh",
    "MANIFEST.json",
)
# Sensitive values Spark hides in its UI, event logs and `spark-submit --verbose`: its default pattern plus the
# Kafka JAAS line, which carries the SCRAM password when that authentication is used.
REDACTION_REGEX = "(?i)secret|password|token|access[.]key|jaas"
ACTIVE_STEP_STATES = ["PENDING", "RUNNING", "CANCEL_PENDING"]
# Never forwarded as plain text into a step or job run (both are visible in the EMR console and API).
_SECRET_NAME = re.compile(r"SECRET|PASSWORD|JAAS|TOKEN|CREDENTIAL", re.IGNORECASE)
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class SubmitError(RuntimeError):
    """A submission that cannot be built or sent; the message says which setting to provide."""


@dataclass
class Submission:
    target: str
    artifacts_uri: str
    cluster_id: str | None = None
    application_id: str | None = None
    execution_role_arn: str | None = None
    job_name: str = "market-signals-stream"
    job_args: list[str] = field(default_factory=list)
    packages: list[str] = field(default_factory=list)
    environment: dict[str, str] = field(default_factory=dict)
    # Driver environment from Secrets Manager, resolved at submit time (--secret-env); never printed.
    secret_environment: dict[str, str] = field(default_factory=dict)
    log_uri: str | None = None
    streaming: bool = True


# ---------------------------------------------------------------- pure: the spark-submit command


def artifact(artifacts_uri: str, name: str) -> str:
    return f"{artifacts_uri.rstrip('/')}/{name}"


def referenced_environment(profile_text: str, environ: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    """Variables the profile references that are set here: (to forward, secret names held back)."""
    forward: dict[str, str] = {}
    held_back: list[str] = []
    for name, _default in _ENV_REF.findall(profile_text):
        if name not in environ:
            continue  # unset: the profile's default applies on the cluster too (load_config already checked)
        if _SECRET_NAME.search(name):
            held_back.append(name)
        else:
            forward[name] = environ[name]
    return forward, sorted(set(held_back))


def submit_settings(config: AppConfig, submission: Submission) -> dict[str, str]:
    """Every --conf of the job: the project's Spark settings plus what EMR needs."""
    from jobs.pipeline.spark_session import spark_settings

    settings = spark_settings(config)
    settings.pop("spark.jars", None)  # jars come from --packages and EMR's own Delta jars (--jars)
    # What EMR configures itself is kept: since EMR 7.10 s3:// already goes through S3A, and replacing the file
    # system or forcing the SDK's default credential chain would bypass EMR's own provider (runtime roles, Lake
    # Formation), which already falls back to the instance or job role.
    settings.pop("spark.hadoop.fs.s3.impl", None)
    if not config.s3.use_test_credentials:
        settings.pop("spark.hadoop.fs.s3a.aws.credentials.provider", None)
    settings["spark.hadoop.hive.metastore.client.factory.class"] = GLUE_METASTORE_FACTORY
    settings["spark.redaction.regex"] = REDACTION_REGEX
    # Cluster mode: the driver runs in a YARN container (EC2), so only spark.yarn.appMasterEnv.* reaches its
    # environment; on Serverless spark.emr-serverless.driverEnv.*. A bootstrap action's exports do not.
    env_prefix = "spark.yarn.appMasterEnv." if submission.target == "ec2" else "spark.emr-serverless.driverEnv."
    for name, value in sorted({**submission.environment, **submission.secret_environment}.items()):
        settings[f"{env_prefix}{name}"] = value
    if submission.target == "ec2":
        # Amazon Linux 2023's python3 is 3.9 for the life of the OS; the job runs on emr.python (3.11), where the
        # bootstrap action installed requirements-cluster.txt. Driver (YARN AM) and executors alike.
        python = config.emr.python
        settings["spark.pyspark.python"] = python
        settings["spark.pyspark.driver.python"] = python
        settings["spark.yarn.appMasterEnv.PYSPARK_PYTHON"] = python
        settings["spark.executorEnv.PYSPARK_PYTHON"] = python
    if submission.target == "serverless" and config.emr.venv_archive:
        # The venv-pack archive unpacked as ./environment on every node; its python runs driver and executors.
        settings["spark.archives"] = f"{config.emr.venv_archive}#environment"
        settings["spark.emr-serverless.driverEnv.PYSPARK_DRIVER_PYTHON"] = "./environment/bin/python"
        settings["spark.emr-serverless.driverEnv.PYSPARK_PYTHON"] = "./environment/bin/python"
        settings["spark.executorEnv.PYSPARK_PYTHON"] = "./environment/bin/python"
    settings.update(config.emr.conf)
    return settings


def spark_submit_parameters(config: AppConfig, submission: Submission) -> list[str]:
    """The options between `spark-submit` and the entry script."""
    py_files = [artifact(submission.artifacts_uri, ZIP_NAME)]
    # Delta's jar carries its Python module (delta.tables), which EMR does not put on the Python path.
    py_files += [jar for jar in config.emr.delta_jars if "delta-spark" in jar]
    params = ["--name", config.spark.app_name]
    if submission.target == "ec2":
        # Cluster mode: the driver runs in YARN, where --files puts aws.yaml in its working directory.
        params += ["--deploy-mode", "cluster"]
    if config.emr.delta_jars:
        params += ["--jars", ",".join(config.emr.delta_jars)]
    if submission.packages:
        params += ["--packages", ",".join(submission.packages)]
    params += ["--py-files", ",".join(py_files), "--files", artifact(submission.artifacts_uri, PROFILE_NAME)]
    for key, value in submit_settings(config, submission).items():
        params += ["--conf", f"{key}={value}"]
    return params


def entry_arguments(submission: Submission) -> list[str]:
    return ["--config", PROFILE_NAME, *submission.job_args]


def ec2_step_request(config: AppConfig, submission: Submission) -> dict[str, Any]:
    """AddJobFlowSteps: spark-submit through command-runner.jar."""
    args = [
        "spark-submit",
        *spark_submit_parameters(config, submission),
        artifact(submission.artifacts_uri, ENTRY_NAME),
        *entry_arguments(submission),
    ]
    return {
        "JobFlowId": submission.cluster_id,
        "Steps": [
            {
                "Name": submission.job_name,
                # A failed streaming step must not terminate a shared cluster.
                "ActionOnFailure": "CONTINUE",
                "HadoopJarStep": {"Jar": "command-runner.jar", "Args": args},
            }
        ],
    }


def serverless_request(config: AppConfig, submission: Submission, client_token: str) -> dict[str, Any]:
    """StartJobRun: sparkSubmitParameters is one space-separated string, so no value may hold a space."""
    params = spark_submit_parameters(config, submission)
    spaced = [value for value in params if re.search(r"\s", value)]
    if spaced:
        raise SubmitError(f"EMR Serverless cannot pass a setting containing whitespace: {spaced[0]!r}")
    request: dict[str, Any] = {
        "applicationId": submission.application_id,
        "executionRoleArn": submission.execution_role_arn,
        "name": submission.job_name,
        "clientToken": client_token,
        "jobDriver": {
            "sparkSubmit": {
                "entryPoint": artifact(submission.artifacts_uri, ENTRY_NAME),
                "entryPointArguments": entry_arguments(submission),
                "sparkSubmitParameters": " ".join(params),
            }
        },
    }
    if submission.streaming:
        # A streaming job run is restarted by EMR Serverless when it fails, from its S3 checkpoint.
        request["mode"] = "STREAMING"
    if submission.log_uri:
        request["configurationOverrides"] = {
            "monitoringConfiguration": {"s3MonitoringConfiguration": {"logUri": submission.log_uri}}
        }
    return request


def check_deployable(config: AppConfig, submission: Submission) -> None:
    """What a cluster job needs that a local run does not; each missing piece named with its setting."""
    problems = []
    for key, location in (
        ("storage.root", config.storage.root),
        ("storage.checkpoint_root", config.storage.checkpoint_root),
    ):
        if not is_remote(location):
            problems.append(f"{key} is {location!r}: a cluster job needs s3a://bucket/prefix")
    if not submission.artifacts_uri.startswith("s3://") or not submission.artifacts_uri[5:].split("/")[0]:
        problems.append(
            f"artifacts location {submission.artifacts_uri!r} must be s3://bucket/prefix/ "
            "(--artifacts or emr.artifacts_uri)"
        )
    if config.spark.jars_dir:
        problems.append("spark.jars_dir is set: on EMR jars come from --packages (set spark.jars_dir: null)")
    if submission.target == "ec2" and not submission.cluster_id:
        problems.append("no cluster: pass --cluster-id j-... or set emr.cluster_id (EMR_CLUSTER_ID)")
    if submission.target == "serverless":
        if not submission.application_id:
            problems.append(
                "no application: pass --application-id or set emr.application_id (EMR_SERVERLESS_APPLICATION_ID)"
            )
        if not submission.execution_role_arn:
            problems.append(
                "no job role: pass --execution-role-arn or set emr.execution_role_arn (EMR_EXECUTION_ROLE_ARN)"
            )
    if problems:
        raise SubmitError("cannot submit:\n  " + "\n  ".join(problems))


def build_request(config: AppConfig, submission: Submission, client_token: str | None = None) -> dict[str, Any]:
    check_deployable(config, submission)
    if submission.target == "ec2":
        return ec2_step_request(config, submission)
    return serverless_request(config, submission, client_token or str(uuid.uuid4()))


# ---------------------------------------------------------------- I/O edges


def read_packages(dist: Path) -> list[str]:
    path = dist / PACKAGES_NAME
    if not path.is_file():
        raise SubmitError(f"{path} not found: run `make package` first")
    return [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]


def upload_artifacts(s3: Any, dist: Path, artifacts_uri: str, profile: Path) -> list[str]:
    """dist/ to the artifacts location; the profile shipped is the one the request was built from."""
    from jobs.aws.clients import split_s3_uri

    bucket, prefix = split_s3_uri(artifacts_uri)
    missing = [name for name in UPLOADED if not (dist / name).is_file()]
    if missing:
        raise SubmitError(f"{dist} lacks {', '.join(missing)}: run `make package` first")
    uploaded = []
    for name in UPLOADED:
        key = f"{prefix.rstrip('/')}/{name}" if prefix.strip("/") else name
        source = profile if name == PROFILE_NAME else dist / name
        s3.upload_file(str(source), bucket, key)
        uploaded.append(f"s3://{bucket}/{key}")
    return uploaded


def ensure_step_concurrency(emr_client: Any, cluster_id: str, wanted: int, streaming: bool) -> str | None:
    """A streaming step never finishes, and an EMR on EC2 cluster runs one step at a time unless told otherwise
    (StepConcurrencyLevel, default 1): every later step (--once, maintenance) would stay PENDING behind it.

    Raises the level to `wanted` when no step is active (the ModifyCluster API reference advises against changing
    it while steps run); refuses a streaming step that would queue behind active steps. Returns a note or None.
    """
    level = int(emr_client.describe_cluster(ClusterId=cluster_id)["Cluster"].get("StepConcurrencyLevel") or 1)
    if level >= wanted:
        return None
    active = emr_client.list_steps(ClusterId=cluster_id, StepStates=ACTIVE_STEP_STATES).get("Steps", [])
    if not active:
        emr_client.modify_cluster(ClusterId=cluster_id, StepConcurrencyLevel=wanted)
        return f"raised the step concurrency level of {cluster_id} from {level} to {wanted} (emr.step_concurrency)"
    names = ", ".join(f"{step.get('Name')} ({step['Status']['State']})" for step in active)
    advice = (
        f"raise it while the cluster is idle: aws emr modify-cluster --cluster-id {cluster_id} "
        f"--step-concurrency-level {wanted}"
    )
    if streaming:
        raise SubmitError(
            f"cluster {cluster_id} runs {level} step at a time and has active steps: {names}; the streaming step "
            f"would wait behind them and hold every later step; {advice}"
        )
    return f"cluster {cluster_id} runs {level} step at a time: this step waits for {names} ({advice})"


def check_architecture(serverless: Any, application_id: str, expected: str) -> None:
    """The venv archive holds compiled wheels (pydantic-core, deltalake): built for one CPU architecture."""
    application = serverless.get_application(applicationId=application_id)["application"]
    actual = str(application.get("architecture") or "X86_64")
    if actual.lower() != expected.lower():
        raise SubmitError(
            f"application {application_id} runs on {actual} but emr.architecture is {expected}: build the venv "
            f"archive for {actual.lower()} (dist/build-serverless-venv.sh) and set emr.architecture"
        )


def resolve_secrets(config: AppConfig, references: dict[str, str]) -> dict[str, str]:
    """--secret-env NAME=SECRET_ID: the secret's value for the driver's environment, read at submit time."""
    from jobs.aws.clients import aws_client

    client = aws_client(config, "secretsmanager")
    return {name: client.get_secret_value(SecretId=secret_id)["SecretString"] for name, secret_id in references.items()}


def send(config: AppConfig, submission: Submission, request: dict[str, Any]) -> dict[str, Any]:
    if submission.target == "ec2":
        client = _emr_client(config, "emr")
        note = ensure_step_concurrency(
            client, str(submission.cluster_id), config.emr.step_concurrency, submission.streaming
        )
        if note:
            print(f"note: {note}", file=sys.stderr)
        response = client.add_job_flow_steps(**request)
        return {"cluster_id": submission.cluster_id, "step_ids": response["StepIds"]}
    serverless = _emr_client(config, "emr-serverless")
    if config.emr.venv_archive:
        check_architecture(serverless, str(submission.application_id), config.emr.architecture)
    response = serverless.start_job_run(**request)
    return {"application_id": response["applicationId"], "job_run_id": response["jobRunId"], "arn": response["arn"]}


def _emr_client(config: AppConfig, service: str) -> Any:
    from jobs.aws.clients import aws_client

    # EMR lives in emr.region; the endpoint override (an emulator) is the one of the S3 settings.
    return aws_client(
        config.model_copy(update={"s3": config.s3.model_copy(update={"region": config.emr.region})}), service
    )  # type: ignore[arg-type]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m jobs.emr",
        description="Run the streaming job on Amazon EMR (EMR on EC2 step or EMR Serverless job run).",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    submit = commands.add_parser(
        "submit",
        help="add a spark-submit step (EMR on EC2) or start a job run (EMR Serverless)",
        description=(
            "Submit the packaged job (`make package` -> dist/). Options default to the profile's emr section. "
            "Environment variables the profile references are forwarded to the driver, except secret-looking "
            "ones (provide those on the cluster). Exit codes: 0 submitted, 1 AWS refused, 2 bad settings."
        ),
    )
    add_config_arguments(submit)
    submit.set_defaults(config=str(REPO_ROOT / "conf" / "aws.yaml"))
    for action in submit._actions:
        if action.dest == "config":
            action.help = "configuration profile (YAML); default: conf/aws.yaml"
    submit.add_argument("--target", choices=["ec2", "serverless"], help="default: emr.target")
    submit.add_argument("--cluster-id", help="EMR on EC2 cluster (j-...); default: emr.cluster_id")
    submit.add_argument("--application-id", help="EMR Serverless application; default: emr.application_id")
    submit.add_argument("--execution-role-arn", help="EMR Serverless job role; default: emr.execution_role_arn")
    submit.add_argument(
        "--artifacts", metavar="S3_URI", help="s3://bucket/prefix/ of dist/; default: emr.artifacts_uri"
    )
    submit.add_argument("--dist", type=Path, default=REPO_ROOT / "dist", help="the local package (default: dist/)")
    submit.add_argument("--upload", action="store_true", help="upload dist/ to the artifacts location first")
    submit.add_argument("--name", default="market-signals-stream", help="step / job run name")
    submit.add_argument(
        "--once",
        action="store_true",
        help="drain the topic, then stop (a batch run; Serverless: not in STREAMING mode)",
    )
    submit.add_argument(
        "--job-arg",
        dest="job_args",
        action="append",
        default=[],
        metavar="ARG",
        help="extra argument for the job on the cluster (repeatable), e.g. --job-arg=--set "
        "'--job-arg=stream.trigger_interval=1 minute'",
    )
    submit.add_argument(
        "--secret-env",
        dest="secret_env",
        action="append",
        default=[],
        metavar="NAME=SECRET_ID",
        help="set NAME in the driver's environment from a Secrets Manager secret read now (e.g. "
        "MSK_SASL_JAAS_CONFIG=market-signals/msk-jaas); the value then shows in the step or job run "
        "description: see docs/aws.md for the alternatives",
    )
    submit.add_argument("--dry-run", action="store_true", help="print the request as JSON, call nothing")
    return parser


def _submission(args: argparse.Namespace, config: AppConfig, environ: dict[str, str]) -> tuple[Submission, list[str]]:
    emr = config.emr
    profile_text = Path(args.config).read_text()
    environment, held_back = referenced_environment(profile_text, environ)
    job_args = list(args.job_args)
    for override in args.overrides:
        job_args += ["--set", override]
    if args.once:
        job_args.append("--once")
    submission = Submission(
        target=args.target or emr.target,
        artifacts_uri=args.artifacts or emr.artifacts_uri or "",
        cluster_id=args.cluster_id or emr.cluster_id or None,
        application_id=args.application_id or emr.application_id or None,
        execution_role_arn=args.execution_role_arn or emr.execution_role_arn or None,
        job_name=args.name,
        job_args=job_args,
        packages=read_packages(args.dist),
        environment=environment,
        log_uri=emr.log_uri or None,
        streaming=not args.once,
    )
    return submission, held_back


def _secret_references(values: list[str]) -> dict[str, str]:
    references = {}
    for value in values:
        name, _, secret_id = value.partition("=")
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name) or not secret_id:
            raise SubmitError(f"--secret-env {value!r}: expected NAME=SECRET_ID (an ARN or a secret name)")
        references[name] = secret_id
    return references


def main(argv: list[str] | None = None, environ: dict[str, str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    environ = dict(os.environ) if environ is None else environ
    try:
        config = load_config(args.config, args.overrides, environ=environ)
        submission, held_back = _submission(args, config, environ)
        secrets = _secret_references(args.secret_env)
        # A dry run shows where each secret goes, never its value.
        submission.secret_environment = {name: f"<secret {secret_id}>" for name, secret_id in secrets.items()}
        request = build_request(config, submission)
    except (ConfigError, SubmitError, yaml.YAMLError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for name in held_back:
        if name not in secrets:
            print(f"note: {name} is not forwarded (secret); pass --secret-env {name}=SECRET_ID", file=sys.stderr)
    if args.dry_run:
        print(json.dumps({"target": submission.target, "request": request}, indent=2))
        return 0

    from botocore.exceptions import BotoCoreError, ClientError

    try:
        if secrets:
            submission.secret_environment = resolve_secrets(config, secrets)
            request = build_request(config, submission, request.get("clientToken"))
        if args.upload:
            from jobs.aws.clients import aws_client

            for uri in upload_artifacts(
                aws_client(config, "s3"), args.dist, submission.artifacts_uri, Path(args.config)
            ):
                print(f"uploaded {uri}", file=sys.stderr)
        result = send(config, submission, request)
    except SubmitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (ClientError, BotoCoreError) as exc:
        print(f"error: AWS refused the submission: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({"event": "submitted", "target": submission.target, **result}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
