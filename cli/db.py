"""`verity db upgrade`: apply the migrations shipped in core/migrations (`verity up` runs them itself)."""

from __future__ import annotations

from pathlib import Path

import click

from cli.options import DATA_DIR_OPTION, redact, settings_for


@click.group("db")
def db_group() -> None:
    """Database migrations."""


@db_group.command("upgrade")
@DATA_DIR_OPTION
@click.option("--revision", default="head", show_default=True)
def db_upgrade(data_dir: Path | None, revision: str) -> None:
    """Apply the migrations shipped in core/migrations."""
    from core.db import upgrade

    s = settings_for(data_dir)
    upgrade(s.database_url, revision)
    click.echo(f"database at {redact(s.database_url)} is at revision {revision}")
