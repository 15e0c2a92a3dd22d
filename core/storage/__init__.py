"""Blob storage, content-addressed by sha256: a folder in the data dir or an S3 bucket."""

from __future__ import annotations

from core.settings import Settings
from core.storage.base import BlobNotFound, Storage, sweep_tmp
from core.storage.files import FileStorage

__all__ = ["BlobNotFound", "FileStorage", "Storage", "make_storage", "sweep_tmp"]


def make_storage(settings: Settings) -> Storage:
    if settings.storage == "s3":
        from core.storage.s3 import S3Storage

        assert settings.s3 is not None
        return S3Storage(settings.s3)
    return FileStorage(settings.blob_dir)
