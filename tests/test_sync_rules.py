"""The S3 sync rules without S3 or a store: a folder's observed state × the store's record → the
decision (engine/s3/sync_rules.py). tests/test_s3source.py runs the same rules end to end."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from wsmon.core.clock import isoformat
from wsmon.core.models import Workset, WorksetState
from wsmon.engine.s3.listing import FolderSnapshot
from wsmon.engine.s3.sentinels import SentinelInfo
from wsmon.engine.s3.sync_rules import Action, Decision, decide, mirror_still_needed
from wsmon.engine.worksetfiles import WORKSET_FILES

S = WorksetState
NOW = datetime(2026, 1, 10, 12, 0, tzinfo=timezone.utc)
LAST_TRANSITION = NOW - timedelta(hours=2)
BEFORE = LAST_TRANSITION - timedelta(hours=1)  # older than the record's last transition
AFTER = LAST_TRANSITION + timedelta(hours=1)  # newer than it
BACKOFF = 600.0


def sentinel(name: str, at: datetime = BEFORE, *, ours: bool = False) -> SentinelInfo:
    return SentinelInfo(name, etag=f"etag-{name}", last_modified=isoformat(at), size=20,
                        timestamp=isoformat(at), ours=ours)


def folder(*sentinels: SentinelInfo, name: str = "ws1", files: tuple[str, ...] = WORKSET_FILES,
           listed: bool = True, new: tuple[str, ...] = (), error: str | None = None) -> FolderSnapshot:
    return FolderSnapshot(
        "bucket", f"active/{name}/", name, sentinels={s.name: s for s in sentinels},
        new_sentinels=set(new), files={f: (10, "etag") for f in files}, listed=listed,
        had_cache=True, error_code=error, error_message="AccessDenied" if error else None)


def record(state: WorksetState, *, work: bool = True, s3_missing: bool = False) -> Workset:
    return Workset(workset_id="ws1", bucket="bucket", prefix="active/ws1/", state=state,
                   created_at=BEFORE, updated_at=LAST_TRANSITION, state_changed_at=LAST_TRANSITION,
                   metadata={"work": {"run_suffix": ["produce"]}} if work else {},
                   s3_missing=s3_missing)


def run(snap: FolderSnapshot, ws: Workset | None, *, write_sentinels: bool = True) -> Decision:
    return decide(snap, ws, now=NOW, ready_lock_backoff_seconds=BACKOFF, write_sentinels=write_sentinels)


FRESH_READY = sentinel("ready", NOW - timedelta(seconds=30))

# (case, folder in S3, store record, expected action, expected import state)
TABLE = [
    # folders the store does not know
    ("listing failed", folder(error="AccessDenied"), None, Action.FOLDER_ERROR, None),
    ("no sentinel yet", folder(), None, Action.WAIT, None),
    ("new ready folder", folder(sentinel("ready")), None, Action.REGISTER, None),
    ("ready, files still uploading", folder(FRESH_READY, files=()), None, Action.WAIT, None),
    ("ready long ago, files missing", folder(sentinel("ready"), files=()), None, Action.REGISTER, None),
    ("ready just now, files all there", folder(FRESH_READY), None, Action.REGISTER, None),
    ("terminal complete", folder(sentinel("complete"), sentinel("ready")), None, Action.IMPORT, S.COMPLETE),
    ("terminal error", folder(sentinel("error")), None, Action.IMPORT, S.ERROR),
    ("ignore beats complete", folder(sentinel("complete"), sentinel("ignore")), None, Action.IMPORT, S.IGNORED),
    ("another monitor runs it", folder(sentinel("in_progress"), sentinel("ready")), None, Action.WAIT, None),
    ("another monitor locked it", folder(sentinel("lock"), sentinel("ready")), None, Action.WAIT, None),
    ("unsafe name", folder(sentinel("ready"), name=".."), None, Action.WAIT, None),
    # folders the store knows
    ("listing failed, known", folder(error="AccessDenied"), record(S.READY), Action.FOLDER_ERROR, None),
    ("in step with the store", folder(sentinel("ready")), record(S.READY), Action.NOTHING, None),
    ("ready but never validated", folder(sentinel("ready")), record(S.READY, work=False), Action.FILL_IN, None),
    ("operator's new ignore", folder(sentinel("ready"), sentinel("ignore", AFTER), new=("ignore",)),
     record(S.READY), Action.IGNORE, None),
    ("ignore we wrote ourselves", folder(sentinel("ignore", AFTER, ours=True), new=("ignore",)),
     record(S.READY), Action.MIRROR, None),
    ("ignore seen before", folder(sentinel("ready"), sentinel("ignore", AFTER)), record(S.READY),
     Action.MIRROR, None),
    ("ignored and says so", folder(sentinel("ignore")), record(S.IGNORED), Action.NOTHING, None),
    ("error removed, newer ready", folder(sentinel("ready", AFTER)), record(S.ERROR), Action.RETRY, None),
    ("error removed, ready older", folder(sentinel("ready", BEFORE)), record(S.ERROR), Action.MIRROR, None),
    ("error kept, newer ready", folder(sentinel("error"), sentinel("ready", AFTER)), record(S.ERROR),
     Action.NOTHING, None),
    ("ready we wrote ourselves", folder(sentinel("ready", AFTER, ours=True)), record(S.FAILED),
     Action.MIRROR, None),
    ("complete, retry asked", folder(sentinel("ready", AFTER)), record(S.COMPLETE), Action.RETRY, None),
    ("running, S3 still says ready", folder(sentinel("ready")), record(S.IN_PROGRESS), Action.MIRROR, None),
    ("complete with our old lock", folder(sentinel("complete"), sentinel("lock", ours=True)),
     record(S.COMPLETE), Action.MIRROR, None),
    ("complete with someone's lock", folder(sentinel("complete"), sentinel("lock")), record(S.COMPLETE),
     Action.NOTHING, None),
    ("not listed this poll: no operator intent read",
     folder(sentinel("ignore", AFTER), listed=False, new=("ignore",)), record(S.COMPLETE), Action.MIRROR, None),
]


@pytest.mark.parametrize(("case", "snap", "ws", "action", "import_state"), TABLE, ids=[row[0] for row in TABLE])
def test_decision_table(case: str, snap: FolderSnapshot, ws: Workset | None, action: Action,
                        import_state: WorksetState | None) -> None:
    decision = run(snap, ws)
    assert decision.action is action, case
    assert decision.import_state is import_state
    assert decision.needs_validation == (action in (Action.REGISTER, Action.FILL_IN, Action.RETRY))
    assert not decision.reappeared


def test_waiting_folders_say_what_they_wait_for() -> None:
    assert run(folder(), None).why == "no daylily.* sentinel yet"
    uploading = run(folder(FRESH_READY, files=("daylily_info.yaml",)), None).why
    assert uploading is not None and uploading.startswith("waiting for upload of ")
    assert "stage_samples.tsv" in uploading and "daylily_info.yaml" not in uploading
    assert run(folder(sentinel("in_progress")), None).why == (
        "daylily.in_progress from another monitor; imported when it ends")
    assert run(folder(sentinel("ready"), name="."), None).why == "unsafe folder name"


def test_without_write_back_a_disagreement_is_left_alone() -> None:
    stale = folder(sentinel("ready"))
    assert run(stale, record(S.IN_PROGRESS)).action is Action.MIRROR
    assert run(stale, record(S.IN_PROGRESS), write_sentinels=False).action is Action.NOTHING
    # operator intent is still honoured
    retry = folder(sentinel("ready", AFTER))
    assert run(retry, record(S.ERROR), write_sentinels=False).action is Action.RETRY


def test_a_folder_back_from_missing_is_marked_reappeared_whatever_else_happens() -> None:
    assert run(folder(sentinel("ready")), record(S.READY, s3_missing=True)) == Decision(
        Action.NOTHING, reappeared=True)
    assert run(folder(sentinel("ready", AFTER)), record(S.ERROR, s3_missing=True)) == Decision(
        Action.RETRY, reappeared=True)


def test_without_a_cache_an_ignore_is_new_when_newer_than_the_last_transition() -> None:
    newer = folder(sentinel("ready"), sentinel("ignore", AFTER))
    older = folder(sentinel("ready"), sentinel("ignore", BEFORE))
    newer.had_cache = older.had_cache = False
    assert run(newer, record(S.READY)).action is Action.IGNORE
    assert run(older, record(S.READY)).action is Action.MIRROR


def test_mirror_is_decided_again_on_the_current_record() -> None:
    """The record read at poll start may be stale: an engine claimed or finished it since."""
    snap = folder(sentinel("in_progress"), sentinel("lock", ours=True))
    # read as locked; running now, and S3 already says so: our lock alone is not worth a write
    assert not mirror_still_needed(snap, record(S.LOCKED), record(S.IN_PROGRESS))
    # read as running; sent back to ready meanwhile: S3 must say ready, without our lock
    assert mirror_still_needed(snap, record(S.IN_PROGRESS), record(S.READY))
    # read as ready; claimed meanwhile and S3 shows that claim: nothing to write
    claimed = folder(sentinel("lock", ours=True), sentinel("ready"))
    assert not mirror_still_needed(claimed, record(S.READY), record(S.LOCKED))
