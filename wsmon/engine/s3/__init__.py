"""The Daylily workset folder contract on S3: discovery, sync with the store, sentinel write-back.

A workset is a folder ``s3://BUCKET/PREFIX/<name>/`` directly under a configured source; its state
in S3 is told by sentinel objects ``daylily.<name>``.

Modules: ``sentinels`` (the sentinel format and precedence), ``listing`` (listing with the
delimiter, the ETag cache), ``sync_rules`` (pure: folder state × store record → decision),
``apply`` (carry a decision out against the store and S3), ``writeback`` (sentinels and index
files), ``validation`` (one folder's files through ``worksetfiles``), ``report`` (what a poll
found), ``source`` (``S3Source``: the poll).
"""

from __future__ import annotations

from wsmon.engine.s3.listing import FolderSnapshot, folder_key, normalize_prefix
from wsmon.engine.s3.report import PollReport
from wsmon.engine.s3.sentinels import (
    SENTINELS,
    STATE_SENTINEL,
    SentinelInfo,
    format_sentinel_body,
    parse_sentinel_body,
    parse_timestamp,
    sentinel_state,
)
from wsmon.engine.s3.source import S3Source
from wsmon.engine.s3.validation import parse_s3_uri, validate_s3_folder
from wsmon.engine.s3.writeback import escape_index_value
from wsmon.engine.worksetfiles import INFO_FILE, SAMPLES_FILE, WORK_FILE

__all__ = [
    "S3Source", "PollReport", "FolderSnapshot", "SentinelInfo", "SENTINELS", "STATE_SENTINEL",
    "parse_timestamp", "parse_sentinel_body", "format_sentinel_body", "sentinel_state",
    "validate_s3_folder", "parse_s3_uri", "escape_index_value", "folder_key", "normalize_prefix",
    "INFO_FILE", "WORK_FILE", "SAMPLES_FILE",
]
