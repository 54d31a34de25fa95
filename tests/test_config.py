"""Configuration: precedence, error messages an operator can act on, the Daylily YAML, secrets."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from wsmon.config import ConfigError, Settings, load_settings
from wsmon.config.settings import resolve_secret
from wsmon.config.schema import find_setting
from wsmon.config.daylily_yaml import DAYLILY_KEYS

ROOT = Path(__file__).resolve().parents[1]
LINEAR_KEY = "lin_api_" + "Q7x2" * 10
SLACK_URL = "https://hooks.slack.com/services/T0000/B0000/" + "s3cr3t" * 4


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def problems_of(*args, **kwargs) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_settings(*args, **kwargs)
    return caught.value.problems


@pytest.fixture
def snv_yaml(daylily_fixtures: str, tmp_path: Path) -> Path:
    """The real Daylily monitor config shipped in the test_snv workset folder."""
    return Path(shutil.copy(Path(daylily_fixtures) / "test_snv" / "daylily_info.yaml", tmp_path / "daylily.yaml"))


# ---- precedence ---------------------------------------------------------------------------------


def test_each_source_overrides_the_ones_below_it(tmp_path: Path, snv_yaml: Path) -> None:
    config = write(tmp_path / "wsmon.toml", f'daylily_yaml = "{snv_yaml}"\n')
    key = "discovery.poll_interval_seconds"

    assert load_settings(None, {}, env={"XDG_CONFIG_HOME": str(tmp_path / "x")}) \
        .discovery.poll_interval_seconds == 60.0  # the default

    s = load_settings(config, {}, env={})
    assert s.discovery.poll_interval_seconds == 60 and s.source_of(key).startswith(f"daylily yaml {snv_yaml}")

    write(config, f'daylily_yaml = "{snv_yaml}"\n[discovery]\npoll_interval_seconds = 30\n')
    s = load_settings(config, {}, env={})
    assert s.discovery.poll_interval_seconds == 30 and s.source_of(key) == f"file {config}"

    env = {"WSMON_DISCOVERY__POLL_INTERVAL_SECONDS": "20"}
    s = load_settings(config, {}, env=env)
    assert s.discovery.poll_interval_seconds == 20 and s.source_of(key) == "env WSMON_DISCOVERY__POLL_INTERVAL_SECONDS"

    s = load_settings(config, {"discovery": {"poll_interval_seconds": 10}}, env=env)
    assert s.discovery.poll_interval_seconds == 10 and s.source_of(key) == "flag"

    # values the higher sources do not mention still come from below
    assert s.aws.profile == "daylily-service-lsmc"
    assert s.source_of("ui.theme") == "default"


def test_nested_environment_variables_use_a_double_underscore(tmp_path: Path) -> None:
    s = load_settings(None, {}, env={
        "XDG_CONFIG_HOME": str(tmp_path),
        "WSMON_STORE__URL": "dynamodb://worksets?region=us-west-2",
        "WSMON_UI__REFRESH_INTERVAL": "0.5",
        "WSMON_DISCOVERY__SOURCES": '[{"bucket": "omics", "prefix": "active/"}]',
        "WSMON_SCHEDULER__CUSTOMER_QUOTAS__AcmeLabs": "2",
        "WSMON_ALERTS__QUEUE_DEPTH__THRESHOLD": "7",
        "WSMON_AWS__PROFILE": "",  # empty counts as unset
    })
    assert s.store.url == "dynamodb://worksets?region=us-west-2"
    assert s.ui.refresh_interval == 0.5
    assert [(x.bucket, x.prefix) for x in s.discovery.sources] == [("omics", "active/")]
    assert s.scheduler.customer_quotas == {"AcmeLabs": 2}
    assert s.alerts.queue_depth.threshold == 7
    assert s.aws.profile is None
    assert s.source_of("ui.refresh_interval") == "env WSMON_UI__REFRESH_INTERVAL"


def test_environment_beats_the_file_and_flags_beat_the_environment_for_whole_sections(tmp_path: Path) -> None:
    config = write(tmp_path / "c.toml", '[store]\nurl = "sqlite:///from-file.db"\nlease_seconds = 100\n')
    s = load_settings(config, {"store": {"url": "sqlite:///from-flag.db"}},
                      env={"WSMON_STORE__URL": "sqlite:///from-env.db", "WSMON_STORE__LEASE_SECONDS": "200"})
    assert (s.store.url, s.store.lease_seconds) == ("sqlite:///from-flag.db", 200)


def test_default_config_file_is_found_under_xdg_config_home(tmp_path: Path) -> None:
    write(tmp_path / "wsmon" / "config.toml", '[ui]\ntheme = "wsmon-light"\n')
    s = load_settings(None, {}, env={"XDG_CONFIG_HOME": str(tmp_path)})
    assert s.ui.theme == "wsmon-light"
    assert s.load_info.config_file == tmp_path / "wsmon" / "config.toml"


def test_missing_default_file_means_defaults_but_a_missing_config_flag_file_is_an_error(tmp_path: Path) -> None:
    assert load_settings(None, {}, env={"XDG_CONFIG_HOME": str(tmp_path)}).ui.theme == "wsmon-dark"
    [problem] = problems_of(tmp_path / "nope.toml", {}, env={})
    assert str(tmp_path / "nope.toml") in problem and "does not exist" in problem


# ---- problems name the key, the place and what is allowed --------------------------------------


def test_bad_literal_names_key_file_line_and_allowed_values(tmp_path: Path) -> None:
    config = write(tmp_path / "c.toml", '[ui]\ntheme = "x"\n\n[scheduler]\naz_preference = "sometimes"\n')
    [problem] = problems_of(config, {}, env={})
    assert problem.startswith(f"{config} line 5: scheduler.az_preference")
    assert '"sometimes"' in problem and '"soft", "hard"' in problem


def test_number_out_of_bounds_states_the_bound(tmp_path: Path) -> None:
    config = write(tmp_path / "c.toml", "[aws]\nmax_attempts = 50\n[store]\nlease_seconds = -5\n")
    problems = problems_of(config, {}, env={})
    assert any("aws.max_attempts = 50 is too large" in p and "≤ 20" in p and f"{config} line 2" in p for p in problems)
    assert any("store.lease_seconds = -5 is too small" in p and "> 0" in p and f"{config} line 4" in p
               for p in problems)


def test_unknown_key_suggests_the_nearest_setting(tmp_path: Path) -> None:
    config = write(tmp_path / "c.toml", "[store]\nulr = 'sqlite:///x'\n\n[stoer]\nurl = 1\n")
    problems = problems_of(config, {}, env={})
    assert any(p.startswith(f"{config} line 2: unknown setting 'store.ulr'") and "Did you mean 'store.url'" in p
               and "lease_seconds" in p for p in problems)
    assert any("unknown setting 'stoer'" in p and "Did you mean 'store'" in p for p in problems)


def test_wrong_type_says_what_type_is_expected(tmp_path: Path) -> None:
    config = write(tmp_path / "c.toml", "[runner]\nstage_command = 5\n[ui]\nbell = 'loud'\n")
    problems = problems_of(config, {}, env={})
    assert any("runner.stage_command = 5 has the wrong type" in p and "list of strings or string" in p
               for p in problems)
    assert any("ui.bell = \"loud\" has the wrong type" in p and "true or false" in p for p in problems)


def test_missing_field_in_an_array_of_tables_points_at_that_table(tmp_path: Path) -> None:
    config = write(tmp_path / "c.toml", '[[discovery.sources]]\nbucket = "a"\n\n[[discovery.sources]]\nprefix = "p/"\n')
    [problem] = problems_of(config, {}, env={})
    assert problem.startswith(f"{config} line 4: discovery.sources[1].bucket is required")


def test_environment_problems_name_the_variable(tmp_path: Path) -> None:
    problems = problems_of(None, {}, env={
        "XDG_CONFIG_HOME": str(tmp_path),
        "WSMON_UI__REFRESH_INTERVAL": "soon",
        "WSMON_LOGGING__LEVEL": "loud",
        "WSMON_DISCOVERY__SOURCES": "[not json",
    })
    assert any(p.startswith("environment variable WSMON_UI__REFRESH_INTERVAL: ui.refresh_interval = soon")
               and "number > 0" in p for p in problems)
    assert any(p.startswith("environment variable WSMON_LOGGING__LEVEL") and '"debug", "info", "warning", "error"' in p
               for p in problems)
    assert any(p.startswith("environment variable WSMON_DISCOVERY__SOURCES") and "JSON" in p for p in problems)


def test_misspelt_environment_variable_is_an_error_with_a_suggestion(tmp_path: Path) -> None:
    [problem] = problems_of(None, {}, env={"XDG_CONFIG_HOME": str(tmp_path), "WSMON_STORE_URL": "sqlite:///x"})
    assert "WSMON_STORE_URL is not a wsmon setting" in problem and "did you mean WSMON_STORE__URL?" in problem


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    config = write(tmp_path / "c.toml", "[store]\nlease_seconds = 0\n[retry]\nmax_retries = -1\n")
    problems = problems_of(config, {}, env={"WSMON_UI__BELL": "perhaps"})
    assert len(problems) == 3


def test_malformed_toml_names_file_and_line(tmp_path: Path) -> None:
    config = write(tmp_path / "c.toml", "[store]\nurl = \n")
    [problem] = problems_of(config, {}, env={})
    assert str(config) in problem and "not valid TOML" in problem and "line 2" in problem


# ---- the Daylily monitor YAML -------------------------------------------------------------------


def test_real_daylily_config_maps_onto_wsmon_settings(tmp_path: Path, snv_yaml: Path) -> None:
    s = load_settings(None, {}, env={"XDG_CONFIG_HOME": str(tmp_path), "WSMON_DAYLILY_YAML": str(snv_yaml)})
    assert (s.aws.profile, s.aws.region, s.aws.session_duration_seconds) == ("daylily-service-lsmc", "us-west-2", 360)
    assert [(x.bucket, x.prefix) for x in s.discovery.sources] == [
        ("lsmc-dayoa-omics-analysis-us-west-2", "daylily_monitoring/active_worksets/")]
    assert s.discovery.archive_prefix == "daylily_monitoring/archived_worksets/"
    assert s.discovery.poll_interval_seconds == 60 and s.discovery.ready_lock_backoff_seconds == 30
    assert s.discovery.sentinel_index_prefix == "daylily_monitoring/"
    assert s.continuous is True
    assert s.clusters.preferred_availability_zone == "us-west-2d"
    assert s.clusters.reuse_cluster_name == "newcluex"
    assert s.runner.workdir == "/fsx/worksets"
    assert s.runner.clone_command == "day-clone {clone_args}"
    assert s.runner.run_prefix == ". dyoinit && dy-a slurm hg38 && dy-r "
    assert s.runner.stage_command.startswith("./bin/daylily-stage-samples-from-local-to-headnode")
    assert s.runner.export_command == "./bin/daylily-export-fsx-to-s3 --cluster {cluster} --target-uri {target_uri}"
    assert s.source_of("discovery.sources") == f"daylily yaml {snv_yaml} (monitor.bucket)"


def test_each_unused_daylily_key_gives_exactly_one_warning_line(tmp_path: Path, snv_yaml: Path) -> None:
    s = load_settings(None, {}, env={"XDG_CONFIG_HOME": str(tmp_path), "WSMON_DAYLILY_YAML": str(snv_yaml)})
    warnings = s.config_warnings
    assert len(warnings) == 3
    for key, line in (("cluster.template_path", 23), ("cluster.auto_teardown", 25), ("cluster.idle_teardown_minutes", 26)):
        [warning] = [w for w in warnings if key in w]
        assert "\n" not in warning and f"{snv_yaml} line {line}" in warning and "ignored" in warning


def test_every_daylily_key_is_mapped_and_ranks_below_file_and_environment(tmp_path: Path) -> None:
    daylily = write(tmp_path / "monitor.yaml", """\
aws: {profile: p, region: eu-west-1, session_duration_seconds: 900}
monitor:
  bucket: b
  prefix: in/
  archive_prefix: done/
  poll_interval_seconds: 45
  ready_lock_backoff_seconds: 5
  continuous: false
  sentinel_index_prefix: idx/
  colour: blue
cluster:
  template_path: t.yaml
  preferred_availability_zone: us-east-1a
  auto_teardown: true
  idle_teardown_minutes: 5
  reuse_cluster_name: c1
  contact_email: ops@example.org
pipeline:
  workdir: /fsx/w
  stage_command: stage {analysis_samples}
  clone_command: day-clone {clone_args}
  run_prefix: "dy-r "
  export_command: export {target_uri}
  pipeline_timeout_minutes: 600
  local_stage_root: /scratch/stage
  reference_bucket: refs
  ssh_identity_file: ~/.ssh/head.pem
  ssh_user: ubuntu
  ssh_extra_args: -o "StrictHostKeyChecking=accept-new" -p 2222
  login_shell_init: source ~/.bashrc
  tmux_session_prefix: dy-
  tmux_keepalive_shell: bash
""")
    config = write(tmp_path / "c.toml", f'daylily_yaml = "{daylily}"\n[runner]\nworkdir = "/fsx/from-toml"\n')
    s = load_settings(config, {}, env={"WSMON_CLUSTERS__REUSE_CLUSTER_NAME": "from-env"})
    assert (s.aws.profile, s.aws.region, s.aws.session_duration_seconds) == ("p", "eu-west-1", 900)
    assert [(x.bucket, x.prefix) for x in s.discovery.sources] == [("b", "in/")]
    assert (s.discovery.archive_prefix, s.discovery.poll_interval_seconds, s.discovery.ready_lock_backoff_seconds,
            s.discovery.sentinel_index_prefix) == ("done/", 45, 5, "idx/")
    assert s.continuous is False
    assert s.clusters.preferred_availability_zone == "us-east-1a"
    assert s.clusters.reuse_cluster_name == "from-env"
    assert s.notify.contact_email == "ops@example.org"
    r = s.runner
    assert r.workdir == "/fsx/from-toml"
    assert (r.stage_command, r.clone_command, r.run_prefix, r.export_command) == (
        "stage {analysis_samples}", "day-clone {clone_args}", "dy-r ", "export {target_uri}")
    assert (r.pipeline_timeout_minutes, r.local_stage_root, r.reference_bucket) == (600, "/scratch/stage", "refs")
    assert (str(r.ssh_identity_file), r.ssh_user, r.login_shell_init) == ("~/.ssh/head.pem", "ubuntu", "source ~/.bashrc")
    assert r.ssh_extra_args == ["-o", "StrictHostKeyChecking=accept-new", "-p", "2222"]
    assert r.tmux_session_prefix == "dy-"
    warned = [w.split(": ", 1)[1].split(" ", 1)[0] for w in s.config_warnings]
    assert sorted(warned) == sorted(["monitor.colour", "cluster.template_path", "cluster.auto_teardown",
                                     "cluster.idle_teardown_minutes", "pipeline.tmux_keepalive_shell"])


def test_daylily_mapping_targets_are_real_settings() -> None:
    for key in DAYLILY_KEYS:
        if key.target is None:
            continue
        named = tuple(p for p in key.target if isinstance(p, str))
        if named[:2] == ("discovery", "sources"):
            named = named[:2]
        assert find_setting(named) is not None, f"{key.key} maps to {key.target_dotted}, which is not a setting"


def test_malformed_daylily_yaml_names_file_line_and_column(tmp_path: Path) -> None:
    bad = write(tmp_path / "monitor.yaml", "monitor:\n  bucket: b\n  prefix: [unclosed\n")
    [problem] = problems_of(None, {"daylily_yaml": str(bad)}, env={"XDG_CONFIG_HOME": str(tmp_path)})
    assert problem.startswith(f"Daylily monitor config {bad} line ") and ", column " in problem


def test_bad_daylily_value_names_both_keys_and_what_is_allowed(tmp_path: Path) -> None:
    bad = write(tmp_path / "monitor.yaml", "monitor:\n  bucket: b\n  poll_interval_seconds: often\n")
    [problem] = problems_of(None, {}, env={"XDG_CONFIG_HOME": str(tmp_path), "WSMON_DAYLILY_YAML": str(bad)})
    assert f"Daylily monitor config {bad} line 3 (monitor.poll_interval_seconds)" in problem
    assert "discovery.poll_interval_seconds = \"often\"" in problem and "number > 0" in problem


def test_missing_daylily_file_is_an_error(tmp_path: Path) -> None:
    [problem] = problems_of(None, {}, env={"XDG_CONFIG_HOME": str(tmp_path),
                                           "WSMON_DAYLILY_YAML": str(tmp_path / "gone.yaml")})
    assert "gone.yaml" in problem and "does not exist" in problem


# ---- secrets ------------------------------------------------------------------------------------


def test_secrets_come_from_the_environment(tmp_path: Path) -> None:
    s = load_settings(None, {}, env={"XDG_CONFIG_HOME": str(tmp_path), "WSMON_LINEAR_API_KEY": LINEAR_KEY,
                                     "WSMON_SLACK_WEBHOOK_URL": SLACK_URL})
    assert resolve_secret("linear_api_key", s).get_secret_value() == LINEAR_KEY
    assert resolve_secret("slack_webhook_url", s).get_secret_value() == SLACK_URL
    assert s.source_of("notify.linear_api_key") == "env WSMON_LINEAR_API_KEY"
    assert LINEAR_KEY not in repr(s) and LINEAR_KEY not in str(s.model_dump())


def test_secrets_come_from_a_file_named_in_config(tmp_path: Path) -> None:
    key_file = write(tmp_path / "linear.key", f"\n{LINEAR_KEY}\n")
    config = write(tmp_path / "c.toml", f'[notify]\nlinear_api_key_file = "{key_file}"\n')
    s = load_settings(config, {}, env={})
    assert resolve_secret("linear_api_key", s).get_secret_value() == LINEAR_KEY
    assert resolve_secret("slack_webhook_url", s) is None


def test_unreadable_secret_file_names_the_setting_and_the_file(tmp_path: Path) -> None:
    config = write(tmp_path / "c.toml", f'[notify]\nslack_webhook_url_file = "{tmp_path / "missing"}"\n')
    s = load_settings(config, {}, env={})
    with pytest.raises(ConfigError) as caught:
        resolve_secret("slack_webhook_url", s)
    assert "notify.slack_webhook_url_file" in str(caught.value) and str(tmp_path / "missing") in str(caught.value)


def test_inline_secret_in_the_config_file_is_rejected_without_echoing_it(tmp_path: Path) -> None:
    config = write(tmp_path / "c.toml", f'[notify]\nlinear_api_key = "{LINEAR_KEY}"\n')
    [problem] = problems_of(config, {}, env={})
    assert problem.startswith(f"{config} line 2: notify.linear_api_key is written inline")
    assert "WSMON_LINEAR_API_KEY" in problem and "allow_inline_secrets" in problem
    assert LINEAR_KEY not in problem


def test_inline_secret_is_accepted_when_explicitly_allowed(tmp_path: Path) -> None:
    config = write(tmp_path / "c.toml",
                   f'[notify]\nallow_inline_secrets = true\nslack_webhook_url = "{SLACK_URL}"\n')
    s = load_settings(config, {}, env={})
    assert resolve_secret("slack_webhook_url", s).get_secret_value() == SLACK_URL


# ---- staying light ------------------------------------------------------------------------------


def test_loading_settings_imports_neither_boto3_nor_textual(tmp_path: Path) -> None:
    probe = ("import sys\nfrom wsmon.config import load_settings\n"
             f"load_settings(None, {{}}, env={{'XDG_CONFIG_HOME': {str(tmp_path)!r}}})\n"
             "print('\\n'.join(sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT)
    loaded = set(out.stdout.split())
    assert "boto3" not in loaded and "textual" not in loaded


def test_settings_built_directly_take_only_their_arguments(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "wsmon" / "config.toml", '[ui]\ntheme = "wsmon-light"\n')
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    monkeypatch.setenv("WSMON_STORE__URL", "dynamodb://production?region=us-west-2")
    settings = Settings(ui={"bell": False})
    assert (settings.ui.theme, settings.ui.bell, settings.store.url) == ("wsmon-dark", False, None)
