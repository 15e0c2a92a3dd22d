"""Blob storage, content-addressed by sha256: a folder in the data dir or an S3 bucket."""

from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path
from typing import Protocol

from app.settings import Settings


class BlobNotFound(LookupError):
    """No blob is stored under this sha256."""


class Storage(Protocol):
    name: str

    def put_file(self, sha256: str, path: Path) -> None:
        """Store the file at `path` under its sha256 (a no-op when already there). May consume `path`."""

    def exists(self, sha256: str) -> bool: ...

    def get_to_file(self, sha256: str, dest: Path) -> None:
        """Write the blob to `dest`; raises BlobNotFound."""

    def local_path(self, sha256: str, tmp_dir: Path) -> AbstractContextManager[Path]:
        """A readable local file with the blob for the duration of the `with` block; the folder
        backend hands out its own file (no copy), remote backends download to `tmp_dir`."""

    def delete(self, sha256: str) -> None: ...

    def check(self) -> str:
        """Raise if the storage cannot be used; return a one-line description."""


def make_storage(settings: Settings) -> Storage:
    if settings.storage == "s3":
        from app.storage.s3 import S3Storage

        assert settings.s3 is not None
        return S3Storage(settings.s3)
    from app.storage.files import FileStorage

    return FileStorage(settings.blob_dir)
