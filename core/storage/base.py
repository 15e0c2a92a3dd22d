"""What every blob store is (the Storage protocol), its one error, and the temp-file sweep."""

from __future__ import annotations

import logging
import time
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Protocol

log = logging.getLogger(__name__)

SPOOL_PREFIXES = ("upload-", "s3-")
"""Names of the temp files Verity makes in `<data>/tmp` (core/lifecycle.py, core/storage/s3.py)."""


def sweep_tmp(tmp_dir: Path, max_age_s: float) -> int:
    """Remove Verity's temp files older than `max_age_s` (left by a SIGKILLed web or worker
    process, which never runs its cleanup); returns how many went. Other files are left alone."""
    cutoff = time.time() - max_age_s
    removed = 0
    try:
        entries = list(tmp_dir.iterdir())
    except FileNotFoundError:
        return 0
    for path in entries:
        if not path.name.startswith(SPOOL_PREFIXES):
            continue
        try:
            if path.is_file() and path.stat().st_mtime < cutoff:
                path.unlink()
                removed += 1
        except FileNotFoundError:
            continue  # another process swept it first
    if removed:
        log.info("removed %d left-over temp file(s) from %s", removed, tmp_dir)
    return removed


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
