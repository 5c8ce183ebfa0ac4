"""Configuration: one path, overrides by environment and --set, errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobs.pipeline.config import ConfigError, load_config, with_overrides

REPO_ROOT = Path(__file__).resolve().parents[2]
LOCAL = REPO_ROOT / "conf" / "local.yaml"


def test_local_profile_defaults() -> None:
    config = load_config(LOCAL, environ={})
    assert (config.kafka.bootstrap_servers, config.kafka.topic) == ("localhost:9092", "stock-ticks")
    assert (config.signals.sma_short, config.signals.sma_long) == (9, 21)
    assert config.table_path("ticks") == str(REPO_ROOT / ".local" / "delta" / "ticks")
    assert config.checkpoint_path() == str(REPO_ROOT / ".local" / "checkpoints" / "stream_signals")


def test_set_beats_environment_beats_file() -> None:
    environ = {"MARKET_SIGNALS_KAFKA__TOPIC": "from-env", "MARKET_SIGNALS_SIGNALS__SMA_LONG": "30"}
    config = load_config(LOCAL, ["kafka.topic=from-set"], environ=environ)
    assert config.kafka.topic == "from-set"
    assert config.signals.sma_long == 30


def test_yaml_scalars_in_overrides() -> None:
    config = load_config(
        LOCAL,
        ["kafka.publish_signals=true", "kafka.max_offsets_per_trigger=500", "s3.endpoint=http://127.0.0.1:5000"],
        environ={},
    )
    assert config.kafka.publish_signals is True
    assert config.kafka.max_offsets_per_trigger == 500
    assert config.s3.endpoint == "http://127.0.0.1:5000"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["kafka.bootstrap=localhost:1"], "kafka.bootstrap: unknown key"),
        (["nosuch.key=1"], "nosuch: unknown key"),
        (["signals.sma_short=nine"], "signals.sma_short: Input should be a valid integer"),
        (["signals.sma_short=30"], "sma_short (30) must be smaller than sma_long (21)"),
        (["storage.root=s3a:///no-bucket"], "storage.root"),
        (["storage.root=hdfs://namenode/x"], "unsupported scheme 'hdfs'"),
        (["stream.source_timezone=Mars/Base"], "unknown time zone 'Mars/Base'"),
        (["kafka.topic"], "expected section.key=value"),
        # Spark would refuse these only when the query starts, with a JVM stack trace.
        (["stream.trigger_interval=banana"], "stream.trigger_interval: 'banana' is not a trigger interval"),
        (["stream.trigger_interval=5s"], "stream.trigger_interval: '5s' is not a trigger interval"),
        (["stream.trigger_interval=1 month"], "stream.trigger_interval: '1 month' is not a trigger interval"),
        (["stream.trigger_interval=-5 seconds"], "stream.trigger_interval: '-5 seconds' is not a trigger interval"),
        (["stream.trigger_interval=1.5 minutes"], "stream.trigger_interval: '1.5 minutes' is not a trigger interval"),
        (["stream.trigger_interval=5 seconds 5"], "stream.trigger_interval: '5 seconds 5' is not a trigger interval"),
        (["kafka.topic="], "kafka.topic: is empty"),
        (["kafka.starting_offsets=yesterday"], "kafka.starting_offsets: 'yesterday' is not earliest, latest"),
    ],
)
def test_bad_values_fail_at_load_naming_the_key(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=None) as error:
        load_config(LOCAL, overrides, environ={})
    assert message in str(error.value)


def test_environment_references_in_the_file(tmp_path: Path) -> None:
    profile = tmp_path / "profile.yaml"
    profile.write_text("storage:\n  root: s3a://${BUCKET}/delta\n  checkpoint_root: ${CKPT:-/tmp/ckpt}\n")
    config = load_config(profile, environ={"BUCKET": "lake"})
    assert (config.storage.root, config.storage.checkpoint_root) == ("s3a://lake/delta", "/tmp/ckpt")
    with pytest.raises(ConfigError, match="storage.root: environment variable BUCKET is not set"):
        load_config(profile, environ={})


def test_missing_file_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="configuration file not found"):
        load_config(tmp_path / "absent.yaml", environ={})
    broken = tmp_path / "broken.yaml"
    broken.write_text("storage: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(broken, environ={})


def test_with_overrides_revalidates() -> None:
    config = load_config(LOCAL, environ={})
    changed = with_overrides(config, ["signals.allowed_lateness_seconds=60"])
    assert changed.signals.allowed_lateness_seconds == 60 and config.signals.allowed_lateness_seconds == 3600
    with pytest.raises(ConfigError, match="signals.allowed_lateness_seconds"):
        with_overrides(config, ["signals.allowed_lateness_seconds=-1"])


@pytest.mark.parametrize(
    "interval",
    [
        "5 seconds",
        "1 second",
        "500 milliseconds",
        "1.5 seconds",
        "0 seconds",
        "5 Seconds",
        "1 minute",
        "1 day",
        "2 minutes 30 seconds",
        "interval 5 seconds",
        "INTERVAL 5 SECONDS",
        ".5 seconds",
        "+5 seconds",
        "1 week",
        "1 minute -30 seconds",
    ],
)
def test_every_trigger_interval_spark_accepts_is_accepted(interval: str) -> None:
    """The forms Spark's Trigger.ProcessingTime parses (checked against Spark 4.0.2 once)."""
    assert load_config(LOCAL, [f"stream.trigger_interval={interval}"], environ={}).stream.trigger_interval == interval


def test_starting_offsets_as_spark_takes_them() -> None:
    per_partition = '{"stock-ticks": {"0": 42, "1": -2}}'  # JSON, as a YAML string: quoted
    for value, text in (
        ("earliest", "earliest"),
        ("latest", "Latest"),  # Spark reads them in any case
        (per_partition, f"'{per_partition}'"),
    ):
        assert load_config(LOCAL, [f"kafka.starting_offsets={text}"], environ={}).kafka.starting_offsets == value


@pytest.mark.parametrize(
    "argv",
    [
        ["jobs.local_stack", "up", "--kafka-port", "70000"],
        ["jobs.local_stack", "up", "--moto-port", "-1"],
        ["jobs.local_stack", "up", "--trino-port", "http"],
        ["jobs.demo", "--kafka-port", "70000"],
        ["jobs.board", "--port", "65536"],
    ],
)
def test_a_port_outside_0_to_65535_is_a_usage_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    import importlib

    module = importlib.import_module({"jobs.local_stack": "jobs.devstack.services"}.get(argv[0], argv[0]))
    with pytest.raises(SystemExit) as exit_info:
        module.main(argv[1:])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"{argv[-1]!r} is not a port (0-65535; 0 = a free one)" in err and "Traceback" not in err
