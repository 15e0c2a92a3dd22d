"""`verity webhooks worker|reconcile|redeliver`: webhook delivery from the command line."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from cli.options import DATA_DIR_OPTION, database_session, settings_for


@click.group("webhooks")
def webhooks_group() -> None:
    """Webhook delivery: worker, reconciler, redeliver."""


@webhooks_group.command("worker")
@DATA_DIR_OPTION
@click.option("--burst", is_flag=True, help="Exit when the queue is empty.")
def webhooks_worker(data_dir: Path | None, burst: bool) -> None:
    """Deliver webhooks from the `webhooks` queue (never the analysis queue)."""
    from workers.webhooks import run_webhook_worker

    s = settings_for(data_dir)
    s.require_redis_url()
    ok = run_webhook_worker(s, burst=burst)
    sys.exit(0 if ok or burst else 1)


@webhooks_group.command("reconcile")
@DATA_DIR_OPTION
@click.option("--stuck-after", type=int, default=None, help="Seconds overdue before a delivery is re-sent.")
def webhooks_reconcile(data_dir: Path | None, stuck_after: int | None) -> None:
    """Enqueue pending deliveries that Redis forgot (the webhook worker also does this)."""
    from core.db import Database
    from core.queue import redis_connection
    from core.webhooks.outbox import reconcile_deliveries

    s = settings_for(data_dir)
    db = Database(s.database_url)
    ids = reconcile_deliveries(s, db.engine, redis_connection(s), stuck_after=stuck_after)
    db.dispose()
    click.echo(f"re-enqueued {len(ids)} delivery(ies)")


@webhooks_group.command("redeliver")
@DATA_DIR_OPTION
@click.argument("delivery_id")
def webhooks_redeliver(data_dir: Path | None, delivery_id: str) -> None:
    """Send a delivery again (its back-off starts over; the attempt log is kept)."""
    from core.models import WebhookDelivery
    from core.queue import redis_connection
    from core.webhooks.outbox import redeliver

    s = settings_for(data_dir)
    with database_session(s) as session:
        d = session.get(WebhookDelivery, delivery_id)
        if d is None:
            raise click.ClickException(f"no delivery {delivery_id}")
        redeliver(session, s, redis_connection(s), d)
        click.echo(f"delivery {d.id} queued again")
