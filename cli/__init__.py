"""`verity`: one command to try it (`verity up`), and the parts it is made of, one module per noun.

    up        cli/up.py         everything on one host with embedded defaults
    web       cli/web.py        the web app and API under gunicorn
    worker    cli/worker.py     detector workers
    webhooks  cli/webhooks.py   webhook delivery worker, reconciler, redeliver
    reconcile cli/reconcile.py  re-enqueue uploads Redis forgot
    db        cli/db.py         migrations
    user      cli/user.py       review UI accounts
    key       cli/key.py        platform API keys
    bank      cli/bank.py       the known-fakes bank
    doctor    cli/doctor.py     what is wrong with this installation
    scan      cli/scan.py       score files offline
    eval      cli/eval.py       measure the detector on labelled media

The launcher sits above the web app and the workers (which never import each other): every
command reads the same configuration, `--data-dir` / VERITY_DATA_DIR (default ./var) plus
DATABASE_URL, REDIS_URL and the VERITY_* variables (core/settings.py), once, and passes it down.
"""

from __future__ import annotations

import click

from cli import bank, db, doctor, eval, key, reconcile, scan, up, user, web, webhooks, worker


@click.group()
def main() -> None:
    """Verity: self-hosted deepfake moderation."""


for _command in (up.up_command, web.web_command, worker.worker_command, webhooks.webhooks_group,
                 reconcile.reconcile_command, db.db_group, user.user_group, key.key_group,
                 doctor.doctor_command, scan.scan_command, eval.eval_command, bank.bank_group):
    main.add_command(_command)
