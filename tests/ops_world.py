"""Workset folders in a real (moto) S3 bucket, for the tests of operator actions that re-validate.

``S3Folders.put(name)`` uploads a valid Daylily folder at ``s3://bucket/src/<name>/`` (the prefix
the seeded stores register); ``put(name, defect=...)`` one that fails validation in the named
way (see ``wsmon.demo.worksets.build_folder``: missing_sheet, bad_yaml, escape, shell,
no_r1_column).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from wsmon.core.aws import client
from wsmon.demo.worksets import build_folder


@dataclass
class S3Folders:
    s3: Any
    bucket: str
    endpoint: str

    def put(self, name: str, defect: str | None = None) -> None:
        # a stale copy of an earlier upload must not survive (a fixed folder replaces a broken one)
        listed = self.s3.list_objects_v2(Bucket=self.bucket, Prefix=f"src/{name}/")
        for obj in listed.get("Contents") or []:
            self.s3.delete_object(Bucket=self.bucket, Key=obj["Key"])
        folder = build_folder(name, bucket=self.bucket, prefix="src/", template="test_snv",
                              priority="normal", customer_id="acme",
                              now=datetime.now(timezone.utc),
                              kind="invalid" if defect else "ok", defect=defect)
        for key, body in folder.files.items():
            self.s3.put_object(Bucket=self.bucket, Key=key, Body=body)


def s3_folders(endpoint: str, bucket: str) -> S3Folders:
    s3 = client("s3", region="us-west-2", endpoint_url=endpoint)
    s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "us-west-2"})
    return S3Folders(s3, bucket, endpoint)


def validator_for(folders: S3Folders):
    """The validator the front ends build from settings, pointed at this bucket's endpoint."""
    from wsmon.config.settings import Settings
    from wsmon.operations import s3_validator

    settings = Settings(aws={"endpoint_url": folders.endpoint, "region": "us-west-2"})
    return s3_validator(settings, folders.s3)
