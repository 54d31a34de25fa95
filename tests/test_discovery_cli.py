"""``wsmon scan`` and ``wsmon validate`` as an operator runs them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from wsmon.core import aws
from wsmon.cli.main import cli
from wsmon.engine.store import open_store
from wsmon.engine.worksetfiles import TSV_COLUMNS

WEIRD = "run [bold]x \x1b[31mred\x1b]52;c;aGk=\x07 ünï"


pytestmark = pytest.mark.usefixtures("no_user_config")


def sheet(r2: str = "sample_data/S1_R2.fq.gz") -> str:
    values = {c: "x" for c in TSV_COLUMNS}
    values.update(SAMPLE_ID="S1", R1_FQ="sample_data/S1_R1.fq.gz", R2_FQ=r2)
    return "\t".join(TSV_COLUMNS) + "\n" + "\t".join(values[c] for c in TSV_COLUMNS) + "\n"


@pytest.fixture
def s3_world(moto_endpoint: str, unique_name: str, tmp_path: Path):
    s3 = aws.client("s3", endpoint_url=moto_endpoint, region="us-west-2")
    s3.create_bucket(Bucket=unique_name, CreateBucketConfiguration={"LocationConstraint": "us-west-2"})
    config = tmp_path / "wsmon.toml"
    config.write_text(
        f'[store]\nurl = "sqlite:///{tmp_path}/cli.db"\n'
        f'[aws]\nendpoint_url = "{moto_endpoint}"\nregion = "us-west-2"\nmax_attempts = 2\n'
        f'[discovery]\nready_lock_backoff_seconds = 0\n'
        f'[[discovery.sources]]\nbucket = "{unique_name}"\nprefix = "active/"\n')

    def put_workset(name: str, work: str = "dy-r: help\n", r2: str = "sample_data/S1_R2.fq.gz") -> None:
        base = f"active/{name}/"
        for key, body in [("daylily_work.yaml", work), ("daylily_info.yaml", "priority: low\n"),
                          ("stage_samples.tsv", sheet(r2)), ("sample_data/S1_R1.fq.gz", "x"),
                          ("sample_data/S1_R2.fq.gz", "x"), ("daylily.ready", "20251016T111111")]:
            s3.put_object(Bucket=unique_name, Key=base + key, Body=body.encode())

    return {"s3": s3, "bucket": unique_name, "config": config, "put": put_workset, "tmp": tmp_path}


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout if "--json" in args else result.output


# -- validate ---------------------------------------------------------------------------------
def test_validate_real_local_folder_exits_zero(daylily_fixtures: str) -> None:
    code, out = run("validate", str(Path(daylily_fixtures) / "test_snv"))
    assert code == 0, out
    assert "VALID" in out and "aligners=[sent,bwa2a,strobe]" in out
    assert "estimate:   1 sample(s)" in out


def test_validate_invalid_local_folder_lists_codes_and_fixes(tmp_path: Path, daylily_fixtures: str) -> None:
    folder = tmp_path / "ws"
    shutil.copytree(Path(daylily_fixtures) / "test_help", folder)
    (folder / "daylily_work.yaml").write_text("dy-r: help && rm -rf /\n")
    (folder / "stage_samples.tsv").write_text(sheet(r2="../../etc/passwd"))
    code, out = run("validate", str(folder))
    assert code == 1
    assert "ERROR   WS-CFG-004  daylily_work.yaml line 1, column 7" in out
    assert "WS-DAT-007" in out and "fix:" in out and "INVALID" in out


def test_validate_json(tmp_path: Path) -> None:
    code, out = run("validate", "--json", str(tmp_path))
    assert code == 1
    data = json.loads(out)
    assert data["valid"] is False
    assert {"WS-CFG-001", "WS-DAT-001"} <= {f["code"] for f in data["findings"]}


def test_validate_not_a_folder(tmp_path: Path) -> None:
    code, out = run("validate", str(tmp_path / "nope"))
    assert code == 1 and "not a directory" in out


def test_validate_s3_folder(s3_world) -> None:
    s3_world["put"]("good")
    s3_world["put"]("bad", r2="sample_data/missing.fq.gz")
    cfg = str(s3_world["config"])
    code, out = run("--config", cfg, "validate", f"s3://{s3_world['bucket']}/active/good/")
    assert code == 0, out
    code, out = run("--config", cfg, "validate", f"s3://{s3_world['bucket']}/active/bad/")
    assert code == 1 and "WS-DAT-008" in out and "missing.fq.gz" in out
    code, out = run("--config", cfg, "validate", f"s3://{s3_world['bucket']}/active/absent/")
    assert code == 1 and "WS-AWS-004" in out


# -- scan -------------------------------------------------------------------------------------
def test_scan_registers_and_reports_and_claims_nothing(s3_world) -> None:
    s3_world["put"]("ws1")
    s3_world["put"](WEIRD)
    s3_world["put"]("broken", work="dy-r: x; y\n")
    cfg = str(s3_world["config"])
    code, out = run("--config", cfg, "scan")
    assert code == 0, out
    assert "registered  ws1 (ready)" in out
    assert "invalid     broken: WS-CFG-004" in out
    assert "\x1b" not in out and "\x07" not in out  # the odd name is shown without its escapes
    assert "run [bold]x" in out
    store = open_store(f"sqlite:///{s3_world['tmp']}/cli.db")
    # stored literally, and refused at validation: a name with control characters would fail
    # only later, at stage, on the head node (issue 11)
    weird = store.get_workset(WEIRD)
    assert weird.state.value == "error" and weird.lock_owner is None
    assert any(f.get("code") == "WS-DAT-015" for f in weird.findings), weird.findings
    assert store.get_workset("ws1").lock_owner is None
    code, out = run("--config", cfg, "scan", "--json")
    data = json.loads(out)
    assert data["registered"] == [] and data["requests"]["ListObjectsV2"] >= 1
    assert code == 0


def test_scan_without_sources_says_what_to_configure(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(f'[store]\nurl = "sqlite:///{tmp_path}/x.db"\n')
    code, out = run("--config", str(config), "scan")
    assert code == 2 and "discovery.sources" in out
