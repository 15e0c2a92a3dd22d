"""What every `verity` command shares: the `--data-dir` option, the one `Settings` a command
parses from it and the environment, a database session, and the audit actor of the command line."""

from __future__ import annotations

import contextlib
import getpass
import os
from collections.abc import Iterator
from pathlib import Path

import click
from sqlalchemy.orm import Session

from core.settings import Settings, SettingsError, load_settings, redact_url

DATA_DIR_OPTION = click.option(
    "--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
    help="Where SQLite, blobs and the embedded Redis live [env VERITY_DATA_DIR; default ./var].")


def settings_for(data_dir: Path | None, *, make_secret: bool = True) -> Settings:
    """The command's settings; a value that does not parse is a usage error naming the variable.
    Commands that use the data dir (all but scan and eval) make it private first."""
    try:
        settings = load_settings(data_dir=data_dir, make_secret=make_secret)
    except SettingsError as e:
        raise click.ClickException(str(e)) from None
    if make_secret:
        protect_data_dir(settings.data_dir)
    return settings


PRIVATE_FILES = ("verity.db", "verity.db-wal", "verity.db-shm", "secret_key", "ops_token", "redis.url")
"""Files of the data dir that hold secrets or the records (password hashes, webhook secrets)."""


def protect_data_dir(path: Path) -> None:
    """Files this process creates are for its user only (umask 077), and the data dir is 0700
    with its secrets and database 0600, also when an older version made them world-readable.
    (The process's own setting, so the web server and workers it starts inherit it.)"""
    os.umask(0o077)
    path = path.resolve()
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    if path.stat().st_uid == os.getuid():
        path.chmod(0o700)
        for name in PRIVATE_FILES:
            f = path / name
            if f.is_file():
                f.chmod(0o600)


@contextlib.contextmanager
def database_session(settings: Settings) -> Iterator[Session]:
    """A session on the configured database, its engine disposed at the end."""
    from core.db import Database

    db = Database(settings.database_url)
    try:
        with db.session() as session:
            yield session
    finally:
        db.dispose()


def redact(url: str) -> str:
    return redact_url(url)


def cli_actor() -> str:
    """Audit actor for changes made on the command line: cli:<the operating-system user>."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no passwd entry (some containers) and no LOGNAME/USER
        return f"cli:uid{os.getuid()}"
