"""`verity user add|list|password`: moderator and admin accounts from the command line; each
change is an audit event with the command line's actor (cli:<OS user>)."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from sqlalchemy import select

from cli.options import DATA_DIR_OPTION, cli_actor, database_session, settings_for
from core.lifecycle import audit
from core.models import Role, User

MIN_PASSWORD_LENGTH = 10


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


@user_group.command("add")
@click.argument("name")
@click.option("--role", type=click.Choice(Role.ALL), default=Role.MODERATOR, show_default=True)
@click.option("--password-stdin", is_flag=True, help="Read the password from the first line of stdin.")
@DATA_DIR_OPTION
def add_user(name: str, role: str, password_stdin: bool, data_dir: Path | None) -> None:
    """Create an account NAME with a role; the password is prompted for (or read from stdin)."""
    name = name.strip()
    if not name or len(name) > 128 or not all(c.isalnum() or c in "._-@" for c in name):
        raise click.ClickException("NAME: 1-128 characters of letters, digits and . _ - @")
    with database_session(settings_for(data_dir)) as s:
        if s.scalar(select(User).where(User.username == name)) is not None:
            raise click.ClickException(f"user {name!r} exists already")
        password = _read_password(password_stdin)
        user = User(username=name, role=role, blur_media=True, active=True)
        user.set_password(password)
        s.add(user)
        audit(s, "user.added", cli_actor(), detail={"username": name, "role": role})
        s.commit()
    click.echo(f"created {role} {name}")


@user_group.command("list")
@DATA_DIR_OPTION
def list_users(data_dir: Path | None) -> None:
    """List accounts."""
    with database_session(settings_for(data_dir)) as s:
        for u in s.scalars(select(User).order_by(User.username)):
            click.echo(f"{u.username}\t{u.role}\t{'active' if u.active else 'disabled'}")


@user_group.command("password")
@click.argument("name")
@click.option("--password-stdin", is_flag=True, help="Read the password from the first line of stdin.")
@DATA_DIR_OPTION
def set_password(name: str, password_stdin: bool, data_dir: Path | None) -> None:
    """Set a new password for NAME (ends the user's sessions)."""
    with database_session(settings_for(data_dir)) as s:
        user = s.scalar(select(User).where(User.username == name))
        if user is None:
            raise click.ClickException(f"no user {name!r}")
        user.set_password(_read_password(password_stdin))
        audit(s, "user.password_set", cli_actor(), detail={"username": name})
        s.commit()
    click.echo(f"password of {name} changed")


def _set_active(name: str, active: bool, data_dir: Path | None) -> None:
    with database_session(settings_for(data_dir)) as s:
        user = s.scalar(select(User).where(User.username == name))
        if user is None:
            raise click.ClickException(f"no user {name!r}")
        user.active = active
        user.session_generation = (user.session_generation or 0) + 1  # its sessions end now
        audit(s, "user.enabled" if active else "user.disabled", cli_actor(), detail={"username": name})
        s.commit()


@user_group.command("disable")
@click.argument("name")
@DATA_DIR_OPTION
def disable_user(name: str, data_dir: Path | None) -> None:
    """Disable NAME: it cannot sign in, and every session it has ends at once."""
    _set_active(name, False, data_dir)
    click.echo(f"{name} disabled; its sessions have ended")


@user_group.command("enable")
@click.argument("name")
@DATA_DIR_OPTION
def enable_user(name: str, data_dir: Path | None) -> None:
    """Enable NAME again (it signs in anew)."""
    _set_active(name, True, data_dir)
    click.echo(f"{name} enabled")
