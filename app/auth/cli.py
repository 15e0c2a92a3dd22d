"""`verity user ...`: moderator and admin accounts from the command line."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from app.auth.models import Role

MIN_PASSWORD_LENGTH = 10


def _database(data_dir: Path | None):
    from app.cli import _settings
    from app.db import Database

    return Database(_settings(data_dir).database_url)


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    if len(password) < MIN_PASSWORD_LENGTH:
        raise click.ClickException(f"the password must have at least {MIN_PASSWORD_LENGTH} characters")
    return password


@click.group("user")
def user_group() -> None:
    """Review UI accounts (moderators and admins)."""


def _data_dir_option(f):
    from app.cli import DATA_DIR_OPTION

    return DATA_DIR_OPTION(f)


@user_group.command("add")
@click.argument("name")
@click.option("--role", type=click.Choice(Role.ALL), default=Role.MODERATOR, show_default=True)
@click.option("--password-stdin", is_flag=True, help="Read the password from the first line of stdin.")
@_data_dir_option
def add_user(name: str, role: str, password_stdin: bool, data_dir: Path | None) -> None:
    """Create an account NAME with a role; the password is prompted for (or read from stdin)."""
    from sqlalchemy import select

    from app.auth.models import User
    from app.models import AuditEvent

    name = name.strip()
    if not name or len(name) > 128 or not all(c.isalnum() or c in "._-@" for c in name):
        raise click.ClickException("NAME: 1-128 characters of letters, digits and . _ - @")
    db = _database(data_dir)
    try:
        with db.session() as s:
            if s.scalar(select(User).where(User.username == name)) is not None:
                raise click.ClickException(f"user {name!r} exists already")
            password = _read_password(password_stdin)
            user = User(username=name, role=role, blur_media=True, active=True)
            user.set_password(password)
            s.add(user)
            s.add(AuditEvent(actor="cli", action="user.added", detail={"username": name, "role": role}))
            s.commit()
    finally:
        db.dispose()
    click.echo(f"created {role} {name}")


@user_group.command("list")
@_data_dir_option
def list_users(data_dir: Path | None) -> None:
    """List accounts."""
    from sqlalchemy import select

    from app.auth.models import User

    db = _database(data_dir)
    try:
        with db.session() as s:
            for u in s.scalars(select(User).order_by(User.username)):
                click.echo(f"{u.username}\t{u.role}\t{'active' if u.active else 'disabled'}")
    finally:
        db.dispose()


@user_group.command("password")
@click.argument("name")
@click.option("--password-stdin", is_flag=True, help="Read the password from the first line of stdin.")
@_data_dir_option
def set_password(name: str, password_stdin: bool, data_dir: Path | None) -> None:
    """Set a new password for NAME (ends the user's sessions)."""
    from sqlalchemy import select

    from app.auth.models import User
    from app.models import AuditEvent

    db = _database(data_dir)
    try:
        with db.session() as s:
            user = s.scalar(select(User).where(User.username == name))
            if user is None:
                raise click.ClickException(f"no user {name!r}")
            user.set_password(_read_password(password_stdin))
            s.add(AuditEvent(actor="cli", action="user.password_set", detail={"username": name}))
            s.commit()
    finally:
        db.dispose()
    click.echo(f"password of {name} changed")
