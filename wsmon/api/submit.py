"""``POST /worksets`` (register an S3 folder now) and ``POST /worksets/validate`` (the findings
``wsmon validate`` gives, for an S3 folder or an uploaded folder archive).

Both reuse the engine's own code: ``S3Source.sync_folder`` takes the folder exactly as the next
poll would (the folder contract stays how work is submitted: no ``daylily.ready``, no
registration), and validation is ``validate_s3_folder`` / ``validate_local_folder``.

An uploaded archive (tar, tar.gz or zip) is never unpacked as it is: only the three workset files
are written (each at most ``discovery.max_file_bytes`` + 1 bytes, so an over-large one is reported
as such), every other regular file becomes an empty placeholder so relative FASTQ paths can be
checked, and names that are absolute, climb with ``..``, or are links are refused.
"""

from __future__ import annotations

import io
import json
import tarfile
import tempfile
import zipfile
from pathlib import Path, PurePosixPath
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse

from wsmon.api.auth import Principal
from wsmon.api.context import ApiContext, api_context, reader, writer
from wsmon.api.errors import ApiError, BodyTooLarge, public_text
from wsmon.api.schemas import (
    RegisterRequest,
    RegisterResult,
    ValidateRequest,
    ValidationResult,
)

router = APIRouter()
Ctx = Annotated[ApiContext, Depends(api_context)]

ARCHIVE_TYPES = {"application/gzip": "tar", "application/x-gzip": "tar", "application/x-tar": "tar",
                 "application/x-gtar": "tar", "application/zip": "zip",
                 "application/x-zip-compressed": "zip"}
MAX_MEMBERS = 20_000


def _s3_folder(uri: str) -> tuple[str, str]:
    from wsmon.engine.s3 import normalize_prefix, parse_s3_uri

    try:
        bucket, prefix = parse_s3_uri(uri.strip())
    except ValueError as exc:
        raise ApiError(422, "invalid_request", public_text(exc)) from None
    prefix = normalize_prefix(prefix)
    if not prefix.strip("/"):
        raise ApiError(422, "invalid_request", "name the workset folder: s3://BUCKET/PREFIX/WORKSET/")
    return bucket, prefix


def _validation_body(report: Any) -> dict[str, Any]:
    return ValidationResult(target=report.target, workset_id=report.workset_id, valid=report.valid,
                            findings=report.findings_dicts(), estimate=report.estimate,
                            report=report.to_dict()).model_dump(mode="json")


@router.post("/worksets", response_model=RegisterResult, status_code=201,
             responses={200: {"description": "Already registered: the current record"},
                        422: {"description": "Not a workset folder under a discovery source, or "
                                              "not submitted yet (no daylily.ready)"},
                        502: {"description": "S3 could not be read"}},
             summary="Register an S3 workset folder now instead of at the next poll")
def register(ctx: Ctx, caller: Annotated[Principal, Depends(writer)],
             body: RegisterRequest) -> JSONResponse:
    from wsmon.engine.s3 import S3Source, normalize_prefix

    bucket, prefix = _s3_folder(body.s3_uri)
    name = prefix.rstrip("/").rsplit("/", 1)[-1]
    parent = prefix[: len(prefix) - len(name) - 1]
    sources = ctx.settings.discovery.sources
    if not any(s.bucket == bucket and normalize_prefix(s.prefix) == parent for s in sources):
        raise ApiError(422, "not_a_source_folder",
                       "the folder is not directly under a configured discovery source "
                       "(discovery.sources): wsmon would never poll it")
    before = ctx.store.get_workset(name)
    source = S3Source(ctx.settings, ctx.store, clock=ctx.clock, s3_client=ctx.s3(),
                      monitor_id=caller.actor)
    report = source.sync_folder(bucket, prefix)
    summary = report.to_dict()
    current = ctx.store.get_workset(name)
    if report.errors and current is None:
        first = report.errors[0]
        raise ApiError(502, "s3_unreadable", public_text(f"{first.get('code')}: {first.get('message')}"))
    if current is None:
        why = "; ".join(w["why"] for w in report.waiting) or "nothing to register there"
        raise ApiError(422, "not_submitted", public_text(f"not registered: {why}"))
    created = before is None
    message = (f"registered ({current.state.value})" if created
               else f"already registered ({current.state.value})")
    result = RegisterResult(registered=created, workset=current, message=message, report=summary)
    return JSONResponse(result.model_dump(mode="json"), status_code=201 if created else 200)


async def _read_capped(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(limit)
    buffer = io.BytesIO()
    async for chunk in request.stream():
        buffer.write(chunk)
        if buffer.tell() > limit:
            raise BodyTooLarge(limit)
    return buffer.getvalue()


def _safe_member(name: str) -> PurePosixPath | None:
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or not path.parts:
        raise ApiError(422, "unsafe_archive", public_text(f"archive member {name[:200]!r} is "
                                                          "absolute or climbs out with '..'"))
    parts = [p for p in path.parts if p not in (".", "")]
    return PurePosixPath(*parts) if parts else None


def _unpack(data: bytes, kind: str, parent: Path, name: str | None, max_file_bytes: int,
            limit: int) -> Path:
    """The workset folder unpacked under ``parent``: named ``name``, else the archive's one top
    folder, else ``upload``."""
    from wsmon.engine.worksetfiles import WORKSET_FILES

    members: list[tuple[PurePosixPath, Any]] = []
    try:
        if kind == "zip":
            archive: Any = zipfile.ZipFile(io.BytesIO(data))
            for info in archive.infolist()[: MAX_MEMBERS + 1]:
                if info.is_dir():
                    continue
                if (info.external_attr >> 16) & 0o170000 == 0o120000:
                    raise ApiError(422, "unsafe_archive", "archive contains a symbolic link")
                rel = _safe_member(info.filename)
                if rel:
                    members.append((rel, lambda n=info, a=archive: a.open(n)))
        else:
            archive = tarfile.open(fileobj=io.BytesIO(data), mode="r:*")  # noqa: SIM115 - in memory
            for info in archive.getmembers()[: MAX_MEMBERS + 1]:
                if info.isdir():
                    continue
                if not info.isfile():
                    raise ApiError(422, "unsafe_archive", "archive contains a link or a device; "
                                                          "only files and folders are accepted")
                rel = _safe_member(info.name)
                if rel:
                    members.append((rel, lambda n=info, a=archive: a.extractfile(n)))
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError):
        raise ApiError(422, "bad_archive", "the body is not a readable tar, tar.gz or zip archive") from None
    if len(members) > MAX_MEMBERS:
        raise ApiError(422, "bad_archive", f"the archive has more than {MAX_MEMBERS} files")
    # a folder archive may hold the workset folder itself, or its contents
    tops = {m[0].parts[0] for m in members}
    strip = len(tops) == 1 and all(len(m[0].parts) > 1 for m in members)
    folder_name = (name or "").strip() or (next(iter(tops)) if strip else "upload")
    if "/" in folder_name or "\\" in folder_name or folder_name in (".", ".."):
        raise ApiError(422, "invalid_request", "the workset name must be a plain folder name")
    dest = parent / folder_name
    dest.mkdir()
    unpacked = 0
    for rel, opener in members:
        rel = PurePosixPath(*rel.parts[1:]) if strip else rel
        target = dest.joinpath(*rel.parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        if len(rel.parts) == 1 and rel.name in WORKSET_FILES:
            with opener() as fh:
                chunk = fh.read(max_file_bytes + 1)
            unpacked += len(chunk)
            if unpacked > limit:
                raise BodyTooLarge(limit)
            target.write_bytes(chunk)
        else:
            target.touch()
    return dest


@router.post("/worksets/validate", response_model=ValidationResult,
             dependencies=[Depends(reader)],
             openapi_extra={"requestBody": {"content": {
                 "application/json": {"schema": ValidateRequest.model_json_schema()},
                 "application/gzip": {"schema": {"type": "string", "format": "binary"}},
                 "application/zip": {"schema": {"type": "string", "format": "binary"}},
                 "application/x-tar": {"schema": {"type": "string", "format": "binary"}}}}},
             responses={413: {"description": "Archive larger than api.max_upload_bytes"},
                        415: {"description": "Neither JSON nor an archive"}},
             summary="Findings for an S3 folder or an uploaded folder archive (as wsmon validate)")
async def validate(ctx: Ctx, request: Request,
                   name: Annotated[str | None, Query(max_length=255, description="Workset name for an archive (default: its top folder, else 'upload').")] = None) -> JSONResponse:
    """JSON ``{"s3_uri": ...}`` validates a folder in S3; a tar, tar.gz or zip body validates an
    uploaded folder (its ``s3://`` FASTQ locations are not checked, as ``wsmon validate`` on a
    local folder). Same findings and codes as ``wsmon validate``; ``valid`` is false when any
    finding is an error."""
    from starlette.concurrency import run_in_threadpool

    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    settings = ctx.settings
    if content_type == "application/json":
        raw = await _read_capped(request, settings.api.max_body_bytes)
        try:
            body = ValidateRequest.model_validate_json(raw)
        except ValueError as exc:
            errors = getattr(exc, "errors", list)()
            problem = "; ".join(f"{'.'.join(map(str, e.get('loc', ())))}: {e.get('msg')}" for e in errors[:3])
            raise ApiError(422, "invalid_request", public_text(problem or "invalid JSON")) from None
        bucket, prefix = _s3_folder(body.s3_uri)
        from wsmon.engine.s3 import validate_s3_folder

        report = await run_in_threadpool(validate_s3_folder, ctx.s3(), bucket, prefix, settings)
        return JSONResponse(_validation_body(report))
    kind = ARCHIVE_TYPES.get(content_type)
    if kind is None:
        raise ApiError(415, "unsupported_media_type", "send application/json with s3_uri, or a "
                                                      "folder archive as application/gzip, "
                                                      "application/x-tar or application/zip")
    data = await _read_capped(request, settings.api.max_upload_bytes)

    def check() -> dict[str, Any]:
        from wsmon.engine.worksetfiles import validate_local_folder

        with tempfile.TemporaryDirectory(prefix="wsmon-upload-") as tmp:
            folder = _unpack(data, kind, Path(tmp), name, settings.discovery.max_file_bytes,
                             settings.api.max_upload_bytes)
            report = validate_local_folder(folder, settings)
            # the temporary folder is this host's business, not the caller's
            text = json.dumps(_validation_body(report)).replace(
                json.dumps(str(folder))[1:-1], f"upload:{folder.name}")
            return json.loads(text)

    return JSONResponse(await run_in_threadpool(check))
