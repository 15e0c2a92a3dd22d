"""`verity`: one command to try it (`verity up`), and the parts it is made of.

Every command reads the same configuration: `--data-dir` / VERITY_DATA_DIR (default ./var) plus
DATABASE_URL, REDIS_URL and the VERITY_* variables (app/settings.py).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import click

from app import defaults

DATA_DIR_OPTION = click.option(
    "--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
    help="Where SQLite, blobs and the embedded Redis live [env VERITY_DATA_DIR; default ./var].")


def _settings(data_dir: Path | None):
    from app.settings import SettingsError, load_settings

    try:
        return load_settings(data_dir=data_dir)
    except SettingsError as e:
        raise click.ClickException(str(e)) from None


@click.group()
def main() -> None:
    """Verity: self-hosted deepfake moderation."""


# --- database -------------------------------------------------------------------------------

@main.group("db")
def db_group() -> None:
    """Database migrations."""


@db_group.command("upgrade")
@DATA_DIR_OPTION
@click.option("--revision", default="head", show_default=True)
def db_upgrade(data_dir: Path | None, revision: str) -> None:
    """Apply the migrations shipped in app/migrations."""
    from app.db import upgrade

    s = _settings(data_dir)
    upgrade(s.database_url, revision)
    click.echo(f"database at {_redact(s.database_url)} is at revision {revision}")


def _redact(url: str) -> str:
    from app.settings import redact_url

    return redact_url(url)


# --- worker ---------------------------------------------------------------------------------

@main.command("worker")
@DATA_DIR_OPTION
@click.option("-n", "--num", "num", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Worker processes (each loads its own detector).")
@click.option("--burst", is_flag=True, help="Exit when the queue is empty.")
@click.option("--max-jobs", type=int, default=None, help="Exit after this many jobs (a supervisor restarts it).")
def worker_command(data_dir: Path | None, num: int, burst: bool, max_jobs: int | None) -> None:
    """Run detector workers on the analysis queue."""
    s = _settings(data_dir)
    s.require_redis_url()
    if num == 1:
        from workers.detector.manifest import ManifestError
        from workers.detector.runtime import ProviderError
        from workers.worker import run_worker

        try:
            ok = run_worker(s, burst=burst, max_jobs=max_jobs)
        except (ManifestError, ProviderError) as e:
            # An installation fault: retrying cannot help, an operator must act (`verity doctor`).
            raise click.ClickException(f"the detector cannot start: {e}") from None
        sys.exit(0 if ok or burst else 1)
    cmd = [sys.executable, "-m", "app.cli", "worker", "-n", "1"]
    if burst:
        cmd.append("--burst")
    if max_jobs:
        cmd += ["--max-jobs", str(max_jobs)]
    env = _child_env(s)
    sup = Supervisor()
    for i in range(num):
        sup.spawn(f"worker-{i + 1}", cmd, env, restart=not burst)
    sys.exit(sup.run())


# --- web ------------------------------------------------------------------------------------

@main.command("web")
@DATA_DIR_OPTION
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8000, show_default=True)
@click.option("--processes", type=int, default=defaults.WEB_WORKERS, show_default=True,
              help="gunicorn worker processes.")
def web_command(data_dir: Path | None, host: str, port: int, processes: int) -> None:
    """Serve the web app and API with gunicorn."""
    s = _settings(data_dir)
    s.require_redis_url()
    os.environ["VERITY_DATA_DIR"] = str(s.data_dir)
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Several gunicorn processes must pool their counters (prometheus multiprocess mode);
        # `verity up` sets a directory shared with its workers, a standalone web gets its own.
        mdir = s.data_dir / "metrics-web"
        shutil.rmtree(mdir, ignore_errors=True)
        mdir.mkdir(parents=True)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(mdir)
    from app.server import WebServer

    WebServer(host, port, workers=processes).run()


# --- reconcile ------------------------------------------------------------------------------

@main.command("reconcile")
@DATA_DIR_OPTION
@click.option("--stuck-after", type=int, default=None, help="Seconds (default VERITY_STUCK_AFTER).")
def reconcile_command(data_dir: Path | None, stuck_after: int | None) -> None:
    """Re-enqueue uploads stuck in queued/analyzing with no live job (workers also do this)."""
    from app.db import Database
    from app.queue import redis_connection
    from workers.reconcile import reconcile

    s = _settings(data_dir)
    ids = reconcile(s, Database(s.database_url), redis_connection(s), stuck_after=stuck_after)
    click.echo(f"re-enqueued {len(ids)} upload(s)")
    for i in ids:
        click.echo(f"  {i}")


# --- up -------------------------------------------------------------------------------------

@main.command("up")
@DATA_DIR_OPTION
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8000, show_default=True)
@click.option("--workers", "num_workers", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Detector worker processes.")
def up_command(data_dir: Path | None, host: str, port: int, num_workers: int) -> None:
    """Start everything with embedded defaults: Redis (unless REDIS_URL), migrations, web, workers."""
    from app import embedded_redis
    from app.db import upgrade

    s = _settings(data_dir)
    s.data_dir.mkdir(parents=True, exist_ok=True)
    redis_proc = None
    if not s.redis_url:
        redis_proc, url = embedded_redis.start(s.data_dir)
        s = s.with_(redis_url=url)
        click.echo(f"redis     embedded, AOF in {s.data_dir / 'redis'} ({_redact(url)})")
    else:
        click.echo(f"redis     {_redact(s.redis_url)}")
    try:
        upgrade(s.database_url)
        click.echo(f"database  {_redact(s.database_url)} (migrated)")
        env = _child_env(s)
        metrics_dir = s.data_dir / "metrics"
        shutil.rmtree(metrics_dir, ignore_errors=True)
        metrics_dir.mkdir(parents=True)
        env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
        sup = Supervisor()
        sup.spawn("web", [sys.executable, "-m", "app.cli", "web", "--host", host, "--port", str(port)],
                  env, restart=False)
        sup.spawn("workers", [sys.executable, "-m", "app.cli", "worker", "-n", str(num_workers)], env,
                  restart=True)
        sup.spawn("webhooks", [sys.executable, "-m", "app.cli", "webhooks", "worker"], env, restart=False)
        shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
        click.echo(f"workers   {num_workers}")
        click.echo(f"Verity is up: http://{shown}:{port}/   (Ctrl-C stops it)", color=False)
        sys.stdout.flush()
        rc = sup.run()
    finally:
        if redis_proc is not None:
            embedded_redis.stop(redis_proc, s.data_dir)
    click.echo("Verity stopped.")
    sys.exit(rc)


def _child_env(s) -> dict[str, str]:
    env = dict(os.environ)
    env["VERITY_DATA_DIR"] = str(s.data_dir)
    env["DATABASE_URL"] = s.database_url
    if s.redis_url:
        env["REDIS_URL"] = s.redis_url
    return env


class Supervisor:
    """Starts child processes, forwards SIGINT/SIGTERM to them, and stops all when one dies;
    a child marked `restart` (detector workers) is started again after a crash, unless it died
    within FAST_FAIL_SECONDS of its start (a configuration fault: retrying would only loop)."""

    FAST_FAIL_SECONDS = 20

    def __init__(self) -> None:
        self.children: dict[str, tuple[list[str], dict, bool, subprocess.Popen]] = {}
        self.started: dict[str, float] = {}
        self.stopping = False

    def spawn(self, name: str, cmd: list[str], env: dict, restart: bool) -> None:
        proc = subprocess.Popen(cmd, env=env)
        self.children[name] = (cmd, env, restart, proc)
        self.started[name] = time.monotonic()

    def _on_signal(self, signum, _frame) -> None:
        self.stopping = True

    def run(self) -> int:
        old = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        rc = 0
        try:
            while not self.stopping:
                for name, (cmd, env, restart, proc) in list(self.children.items()):
                    code = proc.poll()
                    if code is None:
                        continue
                    lived = time.monotonic() - self.started[name]
                    # Killed by a signal (code < 0: the OOM killer, an operator's kill -9) is a crash
                    # whenever it happens, not a configuration fault: restart it (tests/chaos).
                    if restart and code != 0 and (lived >= self.FAST_FAIL_SECONDS or code < 0):
                        click.echo(f"{name} exited with {code} after {lived:.0f}s; restarting", err=True)
                        time.sleep(1)
                        self.spawn(name, cmd, env, restart)
                    elif restart and code == 0:
                        del self.children[name]
                    else:
                        if code != 0:
                            click.echo(f"{name} exited with {code}; stopping", err=True)
                            rc = code
                        del self.children[name]
                        self.stopping = True
                if not self.children:
                    break
                time.sleep(0.2)
        finally:
            self.stop_all()
            for sig, h in old.items():
                signal.signal(sig, h)
        return rc

    def stop_all(self) -> None:
        procs = [p for (_, _, _, p) in self.children.values() if p.poll() is None]
        for p in procs:
            p.send_signal(signal.SIGTERM)  # rq: warm shutdown (finish the job); gunicorn: graceful
        deadline = time.monotonic() + defaults.SHUTDOWN_GRACE_SECONDS
        for p in procs:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


# --- platform API keys and webhooks (issue 5) ------------------------------------------------

def _db_session(s):
    from app.db import Database

    db = Database(s.database_url)
    return db, db.session()


@contextlib.contextmanager
def _key_session(data_dir: Path | None):
    """(settings, session) for the `verity key` commands; a ClientError becomes a CLI error."""
    from app.clients import ClientError

    s = _settings(data_dir)
    db, session = _db_session(s)
    try:
        yield s, session
    except ClientError as e:
        raise click.ClickException(str(e)) from None
    finally:
        session.close()
        db.dispose()


def _cli_actor() -> str:
    """Audit actor for changes made on the command line: cli:<the operating-system user>."""
    import getpass

    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no passwd entry (some containers) and no LOGNAME/USER
        return f"cli:uid{os.getuid()}"


@main.group("key")
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
    from app.clients import audit_key_event, create_client, creation_detail

    with _key_session(data_dir) as (s, session):
        new = create_client(session, name, webhook_url=webhook_url, rate_limit=rate_limit,
                            show_score=show_score, review_threshold=review_threshold,
                            block_threshold=block_threshold, allow_private_webhook=s.webhook_allow_private)
        audit_key_event(session, new.client, "key.created", _cli_actor(), creation_detail(new.client))
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
    from app.clients import audit_key_event, find_client, revoke_client

    with _key_session(data_dir) as (_, session):
        was_active = find_client(session, name_or_id).revoked_at is None
        c = revoke_client(session, name_or_id)
        if was_active:
            audit_key_event(session, c, "key.revoked", _cli_actor(), {"revoked_at": c.revoked_at.isoformat()})
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
    from app.clients import audit_key_event, changes_detail, find_client, update_client

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
            audit_key_event(session, c, "key.updated", _cli_actor(), changes_detail(changed))
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
    from app.clients import list_clients

    with _key_session(data_dir) as (_, session):
        for c in list_clients(session):
            state = "revoked" if c.revoked_at else "active"
            click.echo(f"{c.id}  {c.name:<24} {c.key_prefix}...  {state:<7} rate={c.rate_limit or 'default'} "
                       f"score={'yes' if c.show_score else 'no'} webhook={c.webhook_url or '-'}")


@main.group("webhooks")
def webhooks_group() -> None:
    """Webhook delivery: worker, reconciler, redeliver."""


@webhooks_group.command("worker")
@DATA_DIR_OPTION
@click.option("--burst", is_flag=True, help="Exit when the queue is empty.")
def webhooks_worker(data_dir: Path | None, burst: bool) -> None:
    """Deliver webhooks from the `webhooks` queue (never the analysis queue)."""
    from app.webhooks.worker import run_webhook_worker

    s = _settings(data_dir)
    s.require_redis_url()
    ok = run_webhook_worker(s, burst=burst)
    sys.exit(0 if ok or burst else 1)


@webhooks_group.command("reconcile")
@DATA_DIR_OPTION
@click.option("--stuck-after", type=int, default=None, help="Seconds overdue before a delivery is re-sent.")
def webhooks_reconcile(data_dir: Path | None, stuck_after: int | None) -> None:
    """Enqueue pending deliveries that Redis forgot (the webhook worker also does this)."""
    from app.db import Database
    from app.queue import redis_connection
    from app.webhooks.outbox import reconcile_deliveries

    s = _settings(data_dir)
    db = Database(s.database_url)
    ids = reconcile_deliveries(s, db.engine, redis_connection(s), stuck_after=stuck_after)
    db.dispose()
    click.echo(f"re-enqueued {len(ids)} delivery(ies)")


@webhooks_group.command("redeliver")
@DATA_DIR_OPTION
@click.argument("delivery_id")
def webhooks_redeliver(data_dir: Path | None, delivery_id: str) -> None:
    """Send a delivery again (its back-off starts over; the attempt log is kept)."""
    from app.queue import redis_connection
    from app.webhooks.models import WebhookDelivery
    from app.webhooks.outbox import redeliver

    s = _settings(data_dir)
    db, session = _db_session(s)
    try:
        d = session.get(WebhookDelivery, delivery_id)
        if d is None:
            raise click.ClickException(f"no delivery {delivery_id}")
        redeliver(session, s, redis_connection(s), d)
        click.echo(f"delivery {d.id} queued again")
    finally:
        session.close()
        db.dispose()


# --- doctor ---------------------------------------------------------------------------------

@main.command("doctor")
@DATA_DIR_OPTION
def doctor_command(data_dir: Path | None) -> None:
    """Check providers, model, Redis, database and storage, and say what is wrong."""
    from app.doctor import run_checks

    s = _settings(data_dir)
    failures = 0
    for name, ok, detail in run_checks(s):
        mark = "ok  " if ok else "FAIL"
        failures += 0 if ok else 1
        click.echo(f"[{mark}] {name:<10} {detail}")
    if failures:
        click.echo(f"{failures} problem(s) found", err=True)
        sys.exit(1)
    click.echo("all checks passed")


# --- detector commands (scan, eval), owned by workers/detector --------------------------------
from workers.detector.cli import register as _register_detector_commands

_register_detector_commands(main)

# --- accounts for the review UI (`verity user add NAME --role admin`), owned by app/auth ------
from app.auth.cli import user_group as _user_group

main.add_command(_user_group)


if __name__ == "__main__":
    main()
