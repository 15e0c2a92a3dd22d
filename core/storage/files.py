"""Blobs as files under <data dir>/blobs/ab/cd/<sha256>, written atomically (temp + rename)."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from core.storage.base import BlobNotFound

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def _checked(sha256: str) -> str:
    if not _SHA256.match(sha256):
        raise ValueError(f"not a sha256 hex digest: {sha256!r}")
    return sha256


class FileStorage:
    name = "file"

    def __init__(self, root: Path):
        self.root = Path(root)

    def path_for(self, sha256: str) -> Path:
        s = _checked(sha256)
        return self.root / s[:2] / s[2:4] / s

    def exists(self, sha256: str) -> bool:
        return self.path_for(sha256).is_file()

    def put_file(self, sha256: str, path: Path) -> None:
        dest = self.path_for(sha256)
        if dest.is_file():
            return
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".incoming-")
        os.close(fd)
        try:
            try:
                os.replace(path, tmp)  # same filesystem: a rename, no copy
            except OSError:
                shutil.copyfile(path, tmp)
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            os.chmod(tmp, 0o600)  # the data dir is the operator's alone (cli/options.py)
            os.replace(tmp, dest)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def get_to_file(self, sha256: str, dest: Path) -> None:
        src = self.path_for(sha256)
        try:
            shutil.copyfile(src, dest)
        except FileNotFoundError:
            raise BlobNotFound(sha256) from None

    @contextmanager
    def local_path(self, sha256: str, tmp_dir: Path) -> Iterator[Path]:
        path = self.path_for(sha256)
        if not path.is_file():
            raise BlobNotFound(sha256)
        yield path  # blobs are immutable and replaced only atomically: reading in place is safe

    def delete(self, sha256: str) -> None:
        try:
            self.path_for(sha256).unlink()
        except FileNotFoundError:
            pass

    def check(self) -> str:
        self.root.mkdir(parents=True, exist_ok=True)
        probe = self.root / f".probe-{os.getpid()}"
        probe.write_bytes(b"ok")
        probe.unlink()
        return f"folder {self.root} (writable)"
