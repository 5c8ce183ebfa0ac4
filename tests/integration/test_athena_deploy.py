"""Athena view deployment: statements and their context against moto; waiting and failures with Stubber."""

from __future__ import annotations

import uuid

import boto3
import pytest
from botocore.stub import ANY, Stubber

from jobs.aws.athena import DeployError, deploy_views, main
from jobs.aws.clients import aws_client
from jobs.lake.sql_views import WindowMismatch, load_views
from jobs.pipeline.config import REPO_ROOT, AppConfig

VIEW_ORDER = ["v_signals", "v_crossovers", "v_latest_signals", "v_signal_summary"]


@pytest.fixture
def athena_config(make_config) -> AppConfig:
    return make_config(
        f"glue.database=db_{uuid.uuid4().hex[:8]}",
        "athena.workgroup=primary",
        f"athena.output_location=s3://athena-results-{uuid.uuid4().hex[:8]}/views/",
    )


def test_deploy_creates_every_view_in_dependency_order_against_moto(athena_config: AppConfig) -> None:
    results = deploy_views(athena_config, poll_seconds=0.01)
    assert [r.view for r in results] == VIEW_ORDER
    assert [r.file_name for r in results] == [f"{name}.sql" for name in VIEW_ORDER]
    athena = aws_client(athena_config, "athena")
    statements = {view.name: view.statement for view in load_views()}
    for result in results:
        execution = athena.get_query_execution(QueryExecutionId=result.query_execution_id)["QueryExecution"]
        assert execution["Status"]["State"] == "SUCCEEDED"
        assert execution["Query"] == statements[result.view]
        assert execution["Query"].startswith(f"CREATE OR REPLACE VIEW {result.view} AS")
        assert execution["QueryExecutionContext"]["Database"] == athena_config.glue.database
        assert execution["WorkGroup"] == "primary"
        # Athena (and moto) report the result file under the configured location.
        assert execution["ResultConfiguration"]["OutputLocation"].startswith(athena_config.athena.output_location)


def _stubbed(config: AppConfig) -> tuple[object, Stubber]:
    client = boto3.client(
        "athena", region_name=config.athena.region, aws_access_key_id="testing", aws_secret_access_key="testing"
    )
    return client, Stubber(client)


def _start(stubber: Stubber, config: AppConfig, statement: str, query_id: str) -> None:
    stubber.add_response(
        "start_query_execution",
        {"QueryExecutionId": query_id},
        {
            "QueryString": statement,
            "QueryExecutionContext": {"Database": config.glue.database},
            "WorkGroup": config.athena.workgroup,
            "ResultConfiguration": {"OutputLocation": config.athena.output_location},
        },
    )


def _status(stubber: Stubber, query_id: str, state: str, reason: str | None = None) -> None:
    status = {"State": state}
    if reason:
        status["StateChangeReason"] = reason
    stubber.add_response(
        "get_query_execution",
        {"QueryExecution": {"QueryExecutionId": query_id, "Status": status}},
        {"QueryExecutionId": query_id},
    )


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_deploy_waits_for_each_view_before_the_next(athena_config: AppConfig) -> None:
    views = load_views()
    client, stubber = _stubbed(athena_config)
    for index, view in enumerate(views):
        query_id = f"q{index}"
        _start(stubber, athena_config, view.statement, query_id)
        _status(stubber, query_id, "QUEUED")
        _status(stubber, query_id, "RUNNING")
        _status(stubber, query_id, "SUCCEEDED")
    clock = FakeClock()
    with stubber:
        results = deploy_views(athena_config, views, athena=client, poll_seconds=1.0, sleep=clock.sleep, clock=clock)
    stubber.assert_no_pending_responses()
    assert [r.query_execution_id for r in results] == ["q0", "q1", "q2", "q3"]
    assert clock.sleeps == [0.2, 0.4] * 4  # two polls before success per view, backing off


def test_a_failed_view_stops_the_deployment_with_athena_reason_and_file_name(athena_config: AppConfig) -> None:
    views = load_views()
    client, stubber = _stubbed(athena_config)
    _start(stubber, athena_config, views[0].statement, "q0")
    _status(stubber, "q0", "SUCCEEDED")
    _start(stubber, athena_config, views[1].statement, "q1")
    _status(stubber, "q1", "RUNNING")
    _status(stubber, "q1", "FAILED", "line 3:10: Table 'awsdatacatalog.db.v_signals' does not exist")
    clock = FakeClock()
    with stubber, pytest.raises(DeployError) as failure:
        deploy_views(athena_config, views, athena=client, sleep=clock.sleep, clock=clock)
    stubber.assert_no_pending_responses()  # nothing started after the failure
    assert str(failure.value) == (
        "v_crossovers.sql: Athena query q1 FAILED: line 3:10: Table 'awsdatacatalog.db.v_signals' does not exist"
    )


def test_a_view_that_does_not_finish_in_time_is_stopped(athena_config: AppConfig) -> None:
    config = athena_config.model_copy(
        update={"athena": athena_config.athena.model_copy(update={"query_timeout_seconds": 2})}
    )
    views = load_views()[:1]
    client, stubber = _stubbed(config)
    _start(stubber, config, views[0].statement, "q0")
    for _ in range(5):
        _status(stubber, "q0", "RUNNING")
    stubber.add_response("stop_query_execution", {}, {"QueryExecutionId": "q0"})
    clock = FakeClock()
    with stubber, pytest.raises(DeployError, match=r"v_signals\.sql: query q0 still RUNNING after 2s; stopped it"):
        deploy_views(config, views, athena=client, poll_seconds=1.0, sleep=clock.sleep, clock=clock)
    stubber.assert_no_pending_responses()


def test_no_result_configuration_without_an_output_location(make_config) -> None:
    config = make_config("athena.output_location=null")
    views = load_views()[:1]
    client, stubber = _stubbed(config)
    stubber.add_response(
        "start_query_execution",
        {"QueryExecutionId": "q0"},
        {"QueryString": views[0].statement, "QueryExecutionContext": {"Database": ANY}, "WorkGroup": "primary"},
    )
    _status(stubber, "q0", "SUCCEEDED")
    with stubber:
        deploy_views(config, views, athena=client)
    stubber.assert_no_pending_responses()


def test_window_mismatch_is_refused_before_anything_is_sent(make_config) -> None:
    config = make_config("signals.sma_short=5")
    client, stubber = _stubbed(config)
    with stubber, pytest.raises(WindowMismatch, match=r"v_signals\.sql"):
        deploy_views(config, athena=client)


def _cli(config: AppConfig) -> list[str]:
    return [
        "deploy",
        "--config", str(REPO_ROOT / "conf" / "local.yaml"),
        "--set", f"s3.endpoint={config.s3.endpoint}",
        "--set", "s3.use_test_credentials=true",
        "--set", f"glue.database={config.glue.database}",
    ]  # fmt: skip


def test_cli_dry_run_prints_the_statements_in_order(
    athena_config: AppConfig, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*_cli(athena_config), "--dry-run"]) == 0
    out = capsys.readouterr().out
    positions = [out.index(f"CREATE OR REPLACE VIEW {name} AS") for name in VIEW_ORDER]
    assert positions == sorted(positions)
    assert f"-- v_signals.sql (database {athena_config.glue.database}, workgroup primary)" in out


def test_cli_deploy_and_errors(athena_config: AppConfig, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*_cli(athena_config), "--view", "v_latest_signals"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in out] == ["v_signals", "v_latest_signals"]
    assert all(" SUCCEEDED in " in line for line in out)

    assert main([*_cli(athena_config), "--view", "v_nope"]) == 2
    assert capsys.readouterr().err.startswith("error: unknown view(s) v_nope")
    assert main([*_cli(athena_config), "--set", "signals.sma_long=30"]) == 2
    assert "v_signals.sql computes" in capsys.readouterr().err
