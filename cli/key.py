"""`verity key create|list|set|revoke`: API keys of client platforms (shown once, stored hashed).
The rules are core/clients.py's, the same the admin keys page applies; every change is an audit
event with the command line's actor (cli:<OS user>)."""

from __future__ import annotations

import contextlib
from pathlib import Path

import click

from cli.options import DATA_DIR_OPTION, cli_actor, database_session, settings_for


@contextlib.contextmanager
def _key_session(data_dir: Path | None):
    """(settings, session) for the `verity key` commands; a ClientError becomes a CLI error."""
    from core.clients import ClientError

    s = settings_for(data_dir)
    with database_session(s) as session:
        try:
            yield s, session
        except ClientError as e:
            raise click.ClickException(str(e)) from None


@click.group("key")
def key_group() -> None:
    """API keys of client platforms (shown once, stored hashed)."""


@key_group.command("create")
@DATA_DIR_OPTION
@click.argument("name")
@click.option("--webhook-url", default=None, help="Where signed webhooks for this key's uploads go.")
@click.option("--rate-limit", default=None, help='Requests allowed, Flask-Limiter syntax, e.g. "100/minute".')
@click.option("--show-score/--no-show-score", default=False, show_default=True,
              help="Whether results include the raw score and evidence summary.")
@click.option("--review-threshold", type=click.FloatRange(0, 1), default=None,
              help="Policy override for this key's uploads.")
@click.option("--block-threshold", type=click.FloatRange(0, 1), default=None,
              help="Policy override for this key's uploads.")
def key_create(data_dir: Path | None, name: str, webhook_url: str | None, rate_limit: str | None,
               show_score: bool, review_threshold: float | None, block_threshold: float | None) -> None:
    """Create a key; the key is printed once, alone on the last line."""
    from core.clients import audit_key_event, create_client, creation_detail

    with _key_session(data_dir) as (s, session):
        new = create_client(session, name, webhook_url=webhook_url, rate_limit=rate_limit,
                            show_score=show_score, review_threshold=review_threshold,
                            block_threshold=block_threshold, allow_private_webhook=s.webhook_allow_private)
        audit_key_event(session, new.client, "key.created", cli_actor(), creation_detail(new.client))
    c = new.client
    click.echo(f"client {c.name} ({c.id}) created; store the key now, it is not shown again")
    if c.webhook_url:
        click.echo(f"webhook secret (signs Verity-Signature): {c.webhook_secret}")
    click.echo(new.key)


@key_group.command("revoke")
@DATA_DIR_OPTION
@click.argument("name_or_id")
def key_revoke(data_dir: Path | None, name_or_id: str) -> None:
    """Revoke a key: it gets 401 from now on (its uploads and deliveries are kept)."""
    from core.clients import audit_key_event, find_client, revoke_client

    with _key_session(data_dir) as (_, session):
        was_active = find_client(session, name_or_id).revoked_at is None
        c = revoke_client(session, name_or_id)
        if was_active:
            audit_key_event(session, c, "key.revoked", cli_actor(), {"revoked_at": c.revoked_at.isoformat()})
        click.echo(f"revoked {c.name} ({c.id}) at {c.revoked_at.isoformat()}")


def _optional_threshold(name: str, value: str | None, current: float | None) -> float | None:
    """Unset: keep; "" or "default": the operator's threshold; else a number in [0, 1]."""
    if value is None:
        return current
    if value.strip().lower() in ("", "default"):
        return None
    try:
        v = float(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a number (or 'default')", param_hint=name) from None
    if not 0.0 <= v <= 1.0:
        raise click.BadParameter(f"{v} is not between 0 and 1", param_hint=name)
    return v


@key_group.command("set")
@DATA_DIR_OPTION
@click.argument("name_or_id")
@click.option("--webhook-url", default=None, help='New webhook URL; "" removes the webhook.')
@click.option("--rate-limit", default=None, help='Flask-Limiter syntax, e.g. "100/minute"; "" for the default.')
@click.option("--show-score/--no-show-score", default=None, help="Whether results include the raw score.")
@click.option("--review-threshold", default=None, help='Number in [0, 1], or "default".')
@click.option("--block-threshold", default=None, help='Number in [0, 1], or "default".')
def key_set(data_dir: Path | None, name_or_id: str, webhook_url: str | None, rate_limit: str | None,
            show_score: bool | None, review_threshold: str | None, block_threshold: str | None) -> None:
    """Change a key's settings (the admin UI's key page does the same); unset options are kept."""
    from core.clients import audit_key_event, changes_detail, find_client, update_client

    with _key_session(data_dir) as (s, session):
        c = find_client(session, name_or_id)
        had_webhook = c.webhook_url is not None
        changed = update_client(
            session, c,
            webhook_url=c.webhook_url if webhook_url is None else webhook_url,
            rate_limit=c.rate_limit if rate_limit is None else rate_limit,
            show_score=c.show_score if show_score is None else show_score,
            review_threshold=_optional_threshold("--review-threshold", review_threshold, c.review_threshold),
            block_threshold=_optional_threshold("--block-threshold", block_threshold, c.block_threshold),
            allow_private_webhook=s.webhook_allow_private)
        if changed:
            audit_key_event(session, c, "key.updated", cli_actor(), changes_detail(changed))
        for field_name, (before, after) in changed.items():
            click.echo(f"{c.name}: {field_name} {before!r} -> {after!r}")
        if not changed:
            click.echo(f"{c.name}: nothing changed")
        if c.webhook_url and not had_webhook and c.webhook_secret:
            click.echo(f"webhook secret (signs Verity-Signature): {c.webhook_secret}")


@key_group.command("list")
@DATA_DIR_OPTION
def key_list(data_dir: Path | None) -> None:
    """List keys (prefixes only) with their settings."""
    from core.clients import list_clients

    with _key_session(data_dir) as (_, session):
        for c in list_clients(session):
            state = "revoked" if c.revoked_at else "active"
            click.echo(f"{c.id}  {c.name:<24} {c.key_prefix}...  {state:<7} rate={c.rate_limit or 'default'} "
                       f"score={'yes' if c.show_score else 'no'} webhook={c.webhook_url or '-'}")
