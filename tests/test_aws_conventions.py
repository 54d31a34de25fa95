"""AWS conventions an operator brings from the AWS CLI: where the region comes from (and a refusal,
exit 2, when nothing names one), and retry settings from the environment and the profile."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from wsmon.cli.main import cli
from wsmon.config import load_settings
from wsmon.engine.store.from_settings import open_store_from_settings

AWS_VARS = ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE", "AWS_DEFAULT_PROFILE",
            "AWS_RETRY_MODE", "AWS_MAX_ATTEMPTS")


@pytest.fixture
def aws_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_user_config: None):
    """No region or retry setting anywhere; ``set_profile`` writes the default profile's config."""
    for name in AWS_VARS:
        monkeypatch.delenv(name, raising=False)
    config = tmp_path / "aws-config"
    config.write_text("")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))

    def set_profile(**values: str) -> None:
        config.write_text("[default]\n" + "".join(f"{k} = {v}\n" for k, v in values.items()))

    return set_profile


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


# ---- region ------------------------------------------------------------------------------------

ALL_SOURCES = {"url": "ap-south-1", "setting": "us-west-2", "AWS_REGION": "eu-west-1",
               "AWS_DEFAULT_REGION": "us-east-2", "profile": "ca-central-1"}
EXPECTED_SOURCE = {"url": "the store URL's region=", "setting": "aws.region", "AWS_REGION": "AWS_REGION",
                   "AWS_DEFAULT_REGION": "AWS_DEFAULT_REGION", "profile": "profile 'default' in the AWS config file"}


@pytest.mark.parametrize("highest", list(ALL_SOURCES))
def test_store_region_comes_from_the_highest_source_that_names_one_and_config_show_says_which(
        highest: str, aws_env, monkeypatch: pytest.MonkeyPatch) -> None:
    present = list(ALL_SOURCES)[list(ALL_SOURCES).index(highest):]  # this one and every lower one
    if "profile" in present:
        aws_env(region=ALL_SOURCES["profile"])
    for var in ("AWS_REGION", "AWS_DEFAULT_REGION"):
        if var in present:
            monkeypatch.setenv(var, ALL_SOURCES[var])
    if "setting" in present:
        monkeypatch.setenv("WSMON_AWS__REGION", ALL_SOURCES["setting"])
    url = "dynamodb://wsmon" + (f"?region={ALL_SOURCES['url']}" if "url" in present else "")

    code, out = run("config", "show", "--json", "--store", url)
    assert code == 0, out
    assert json.loads(out)["store_region"] == {"name": ALL_SOURCES[highest], "source": EXPECTED_SOURCE[highest]}

    store = open_store_from_settings(load_settings(None, {"store": {"url": url}}), create=False)
    try:
        assert store.client.meta.region_name == ALL_SOURCES[highest]
    finally:
        store.close()


def test_aws_region_reaches_a_store_url_without_region(aws_env, monkeypatch: pytest.MonkeyPatch) -> None:
    """The reported case: `dynamodb://wsmon` with aws.region us-west-2 opened us-east-1."""
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    settings = load_settings(None, {"store": {"url": "dynamodb://wsmon"}, "aws": {"region": "us-west-2"}})
    store = open_store_from_settings(settings, create=False)
    try:
        assert store.client.meta.region_name == "us-west-2"
        assert "region=us-west-2" in store.url
    finally:
        store.close()


def test_aws_region_env_var_reaches_s3_clients_and_text_config_show(aws_env, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")  # botocore alone would pick this one
    from wsmon.cli.discovery_cmd import _s3_client

    assert _s3_client(load_settings(None, {})).meta.region_name == "eu-west-1"
    code, out = run("config", "show", "--store", "dynamodb://wsmon")
    assert code == 0, out
    assert "# AWS region in use: eu-west-1 (from AWS_REGION)" in out
    assert "# store region in use: eu-west-1 (from AWS_REGION)" in out


def test_no_region_anywhere_refuses_with_exit_2_and_says_how_to_set_one(aws_env, tmp_path: Path) -> None:
    code, out = run("list", "--store", "dynamodb://wsmon")
    assert code == 2, out
    assert "no AWS region is set" in out and "aws.region" in out and "AWS_REGION" in out

    config = tmp_path / "wsmon.toml"
    config.write_text('[[discovery.sources]]\nbucket = "b"\nprefix = "p/"\n'
                      f'[store]\nurl = "sqlite:///{tmp_path / "state.db"}"\n')
    code, out = run("--config", str(config), "--headless", "--once")
    assert code == 2, out
    assert "needed by discovery.sources (S3)" in out and "AWS_REGION" in out

    code, out = run("--config", str(config), "config", "check")
    assert code == 1 and "no AWS region is set" in out, out
    code, out = run("--config", str(config), "config", "show")
    assert code == 0 and "# AWS region in use: none set; set aws.region" in out, out


def test_without_a_region_a_sqlite_store_still_serves_commands_that_need_no_aws(aws_env, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    assert run("store", "init", "--store", url)[0] == 0
    code, out = run("list", "--store", url, "--json")
    assert (code, json.loads(out)) == (0, []), out


def test_the_store_urls_region_is_for_the_store_only(aws_env, tmp_path: Path) -> None:
    config = tmp_path / "wsmon.toml"
    config.write_text('[[discovery.sources]]\nbucket = "b"\n[store]\nurl = "dynamodb://wsmon?region=eu-west-1"\n')
    code, out = run("--config", str(config), "--headless", "--once")
    assert code == 2, out
    assert "discovery.sources (S3)" in out and "region= is for the store only" in out


# ---- retries -----------------------------------------------------------------------------------


def _retries(settings_overrides: dict | None = None) -> dict:
    from wsmon.cli.discovery_cmd import _s3_client

    settings = load_settings(None, {"aws": {"region": "us-west-2", **(settings_overrides or {})}})
    return dict(_s3_client(settings).meta.config.retries)


def test_retries_default_to_standard_mode_and_five_attempts_in_all(aws_env) -> None:
    assert _retries() == {"mode": "standard", "total_max_attempts": 5}


def test_retry_mode_and_attempts_from_the_environment_are_honoured(aws_env, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_RETRY_MODE", "adaptive")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "7")
    assert _retries() == {"mode": "adaptive", "total_max_attempts": 7}


def test_retry_mode_and_attempts_from_the_profile_are_honoured(aws_env) -> None:
    aws_env(retry_mode="legacy", max_attempts="4")
    assert _retries() == {"mode": "legacy", "total_max_attempts": 4}


def test_aws_max_attempts_counts_the_first_attempt_like_the_aws_cli(aws_env, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "9")  # wsmon's own setting, when given, wins
    assert _retries({"max_attempts": 3}) == {"mode": "standard", "total_max_attempts": 3}
    settings = load_settings(None, {"aws": {"region": "us-west-2", "max_attempts": 3},
                                    "store": {"url": "dynamodb://wsmon"}})
    store = open_store_from_settings(settings, create=False)
    try:
        assert store.client.meta.config.retries["total_max_attempts"] == 3
    finally:
        store.close()


def test_the_metrics_client_makes_a_single_retry(aws_env) -> None:
    from wsmon.engine.metrics import Metrics

    metrics = Metrics(load_settings(None, {"aws": {"region": "us-west-2"}}), None)
    assert metrics.client().meta.config.retries["total_max_attempts"] == 2  # the first try + one retry


# ---- the region reaches what runs outside boto3 too -------------------------------------------


def test_the_region_placeholder_of_a_step_command_is_the_resolved_region(aws_env, monkeypatch: pytest.MonkeyPatch,
                                                                         tmp_path: Path) -> None:
    from datetime import datetime, timezone

    from wsmon.core.models import Workset
    from wsmon.engine.runner.templates import describe_commands, template_values

    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    settings = load_settings(None, {"runner": {"stage_command": ["stage", "--region", "{region}"]}})
    now = datetime.now(timezone.utc)
    ws = Workset(workset_id="ws1", bucket="b", prefix="p/ws1/", created_at=now, updated_at=now, state_changed_at=now)
    assert template_values(settings, ws, None, tmp_path)["region"] == "eu-west-1"
    _, warnings = describe_commands(settings)
    assert not any("{region}" in w for w in warnings), warnings


def test_the_iam_policy_names_the_region_the_store_opens_in(aws_env, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    code, out = run("iam-policy", "--store", "dynamodb://wsmon", "--account", "123456789012")
    assert code == 0, out
    assert "arn:aws:dynamodb:eu-west-1:123456789012:table/wsmon" in out
