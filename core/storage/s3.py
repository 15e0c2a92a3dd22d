"""Blobs in an S3-compatible bucket (boto3), keyed <prefix><sha256>; for several hosts."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from core.settings import S3Settings
from core.storage.base import BlobNotFound
from core.storage.files import _checked


class S3Storage:
    name = "s3"

    def __init__(self, cfg: S3Settings):
        import boto3

        self.cfg = cfg
        self.client = boto3.client("s3", endpoint_url=cfg.endpoint_url, region_name=cfg.region)

    def key_for(self, sha256: str) -> str:
        return f"{self.cfg.prefix}{_checked(sha256)}"

    def exists(self, sha256: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.cfg.bucket, Key=self.key_for(sha256))
            return True
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise

    def put_file(self, sha256: str, path: Path) -> None:
        if self.exists(sha256):
            return
        # A single PUT is atomic in S3: readers see the whole object or none of it.
        self.client.upload_file(str(path), self.cfg.bucket, self.key_for(sha256),
                                ExtraArgs={"Metadata": {"sha256": sha256}})

    def get_to_file(self, sha256: str, dest: Path) -> None:
        from botocore.exceptions import ClientError

        try:
            self.client.download_file(self.cfg.bucket, self.key_for(sha256), str(dest))
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                raise BlobNotFound(sha256) from None
            raise

    @contextmanager
    def local_path(self, sha256: str, tmp_dir: Path) -> Iterator[Path]:
        tmp_dir.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=tmp_dir, prefix=f"s3-{sha256[:16]}-")
        os.close(fd)
        path = Path(name)
        try:
            self.get_to_file(sha256, path)
            yield path
        finally:
            path.unlink(missing_ok=True)

    def delete(self, sha256: str) -> None:
        self.client.delete_object(Bucket=self.cfg.bucket, Key=self.key_for(sha256))

    def check(self) -> str:
        self.client.head_bucket(Bucket=self.cfg.bucket)
        return f"s3 bucket {self.cfg.bucket} at {self.cfg.endpoint_url or 'AWS'}"
