"""How validation time grows with the sample sheet (prints, never asserts).

Validates one in-memory workset folder with N sample rows (every row distinct, FASTQs in the
workset's own bucket, existence not checked), and a variant where every row is a duplicate of
the first (one finding per row, capped by discovery.max_findings_per_folder). The row cap
(discovery.max_sample_rows) is raised past N so the whole sheet is parsed; a last line shows
what the default cap costs on the largest sheet (it refuses it before parsing the rows).

    .venv/bin/python bench/validation_bench.py                    # 1k, 10k, 100k rows
    .venv/bin/python bench/validation_bench.py --rows 1000 20000

Linear means: seconds per 1,000 rows stays about the same from 1k to 100k.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from wsmon.config.settings import Settings  # noqa: E402
from wsmon.engine.worksetfiles import (  # noqa: E402
    INFO_FILE,
    SAMPLES_FILE,
    TSV_COLUMNS,
    WORK_FILE,
    RawFile,
    validate_files,
)


def sheet(rows: int, *, duplicates: bool) -> bytes:
    lines = ["\t".join(TSV_COLUMNS)]
    for i in range(rows):
        n = 0 if duplicates else i
        values = {c: "x" for c in TSV_COLUMNS}
        values.update(SAMPLE_ID=f"S{n}", LANE="1", R1_FQ=f"sample_data/S{n}_R1.fastq.gz",
                      R2_FQ=f"sample_data/S{n}_R2.fastq.gz", PATH_TO_CONCORDANCE_DATA_DIR="")
        lines.append("\t".join(values[c] for c in TSV_COLUMNS))
    return ("\n".join(lines) + "\n").encode()


def files(tsv: bytes) -> dict[str, RawFile]:
    work = b"dy-r: help\nday-clone: -d {workdir_name}\n"
    return {WORK_FILE: RawFile(len(work), work), INFO_FILE: RawFile(0, b""),
            SAMPLES_FILE: RawFile(len(tsv), tsv)}


def time_validation(settings: Settings, tsv: bytes) -> tuple[float, int, bool]:
    started = time.perf_counter()
    report = validate_files("bench", files(tsv), settings=settings, target="bench",
                            workset_bucket="bucket", workset_prefix="p/bench/",
                            has_sample_data=True, exists=None)
    return time.perf_counter() - started, len(report.findings), report.valid


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    args = parser.parse_args()
    biggest = max(args.rows)
    settings = Settings()
    settings.discovery.max_sample_rows = biggest
    settings.discovery.max_file_bytes = 200_000_000
    print(f"{'rows':>8} {'kind':>10} {'seconds':>9} {'s/1k rows':>10} {'findings':>9}")
    for rows in args.rows:
        for duplicates in (False, True):
            seconds, findings, _ = time_validation(settings, sheet(rows, duplicates=duplicates))
            kind = "duplicate" if duplicates else "distinct"
            print(f"{rows:>8,} {kind:>10} {seconds:>9.3f} {seconds / rows * 1000:>10.4f} {findings:>9,}")
    default = Settings()
    default.discovery.max_file_bytes = 200_000_000
    seconds, findings, valid = time_validation(default, sheet(biggest, duplicates=False))
    print(f"default cap ({default.discovery.max_sample_rows:,} rows) on {biggest:,} rows: "
          f"{seconds:.3f}s, {findings} finding(s), valid={valid}")


if __name__ == "__main__":
    main()
