"""`verity reconcile`: re-enqueue uploads stuck in queued/analyzing (the workers also do this)."""

from __future__ import annotations

from pathlib import Path

import click

from cli.options import DATA_DIR_OPTION, settings_for


@click.command("reconcile")
@DATA_DIR_OPTION
@click.option("--stuck-after", type=int, default=None, help="Seconds (default VERITY_STUCK_AFTER).")
def reconcile_command(data_dir: Path | None, stuck_after: int | None) -> None:
    """Re-enqueue uploads stuck in queued/analyzing with no live job (workers also do this)."""
    from workers.context import WorkerContext
    from workers.reconcile import reconcile

    ctx = WorkerContext(settings_for(data_dir))
    ids = reconcile(ctx.settings, ctx.db, ctx.lifecycle, ctx.redis, stuck_after=stuck_after)
    ctx.db.dispose()
    click.echo(f"re-enqueued {len(ids)} upload(s)")
    for i in ids:
        click.echo(f"  {i}")
