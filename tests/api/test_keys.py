"""API keys: created on the CLI (shown once, stored hashed), 401 for missing/unknown/revoked."""

from __future__ import annotations

import hashlib
import logging

from apihelpers import bearer
from click.testing import CliRunner
from sqlalchemy import select

from core.models import ApiClient


def _cli_env(settings) -> dict[str, str]:
    return {"DATABASE_URL": settings.database_url, "REDIS_URL": settings.redis_url,
            "VERITY_DATA_DIR": str(settings.data_dir)}


def test_missing_unknown_and_revoked_keys_get_401_json(api_app, api_settings, caplog):
    from cli import main

    client = api_app.test_client()
    r = client.get("/api/v1/me")
    assert r.status_code == 401
    body = r.get_json()
    assert body["code"] == "unauthorized" and body["message"] and body["request_id"]
    assert r.headers["WWW-Authenticate"].startswith("Bearer")
    assert client.get("/api/v1/me", headers=bearer("vk_not-a-real-key")).status_code == 401
    assert client.get("/api/v1/me", headers={"Authorization": "Basic Zm9vOmJhcg=="}).status_code == 401

    caplog.set_level(logging.DEBUG)
    runner = CliRunner()
    r = runner.invoke(main, ["key", "create", "acme", "--rate-limit", "100/minute", "--show-score",
                             "--webhook-url", "https://hooks.example.com/verity"], env=_cli_env(api_settings))
    assert r.exit_code == 0, r.output
    key = r.output.strip().splitlines()[-1]
    assert key.startswith("vk_") and len(key) > 40 and " " not in key
    assert "whsec_" in r.output  # the webhook secret is shown once too

    with api_app.extensions["verity.db"].session() as s:
        c = s.scalar(select(ApiClient).where(ApiClient.name == "acme"))
        assert c.key_hash == hashlib.sha256(key.encode()).hexdigest() and key not in (c.key_prefix + "x")
        assert c.show_score and c.rate_limit == "100/minute"
    me = client.get("/api/v1/me", headers=bearer(key))
    assert me.status_code == 200 and me.get_json()["name"] == "acme"
    assert me.get_json()["key_prefix"] == key[:10]

    r = runner.invoke(main, ["key", "list"], env=_cli_env(api_settings))
    assert "acme" in r.output and "active" in r.output and key not in r.output

    r = runner.invoke(main, ["key", "revoke", "acme"], env=_cli_env(api_settings))
    assert r.exit_code == 0, r.output
    r = client.get("/api/v1/me", headers=bearer(key))
    assert r.status_code == 401 and r.get_json()["code"] == "unauthorized"
    assert "revoked" in runner.invoke(main, ["key", "list"], env=_cli_env(api_settings)).output
    # the key never reaches the logs
    assert all(key not in rec.getMessage() for rec in caplog.records)


def test_create_refuses_bad_settings(api_settings):
    from cli import main

    runner = CliRunner()
    # a private target is refused when configured (VERITY_WEBHOOK_ALLOW_PRIVATE is not set here)
    for args in (["--rate-limit", "lots"], ["--webhook-url", "ftp://x/y"], ["--webhook-url", "http://127.0.0.1:9/x"],
                 ["--review-threshold", "0.9", "--block-threshold", "0.5"]):
        r = runner.invoke(main, ["key", "create", "bad", *args], env=_cli_env(api_settings))
        assert r.exit_code != 0 and "Error" in r.output, (args, r.output)
    r = runner.invoke(main, ["key", "revoke", "nobody"], env=_cli_env(api_settings))
    assert r.exit_code != 0


def test_health_and_spec_need_no_key(api_app):
    client = api_app.test_client()
    assert client.get("/healthz").status_code == 200
    assert client.get("/api/v1/openapi.json").status_code == 200


def test_key_set_changes_settings_keeps_the_key_and_refuses_bad_values(api_app, api_settings):
    from cli import main

    runner = CliRunner()
    env = _cli_env(api_settings)
    key = runner.invoke(main, ["key", "create", "shop"], env=env).output.strip().splitlines()[-1]
    client = api_app.test_client()
    assert client.get("/api/v1/me", headers=bearer(key)).get_json()["show_score"] is False

    r = runner.invoke(main, ["key", "set", "shop", "--show-score", "--rate-limit", "50/minute",
                             "--review-threshold", "0.6", "--webhook-url", "https://hooks.example.com/v"], env=env)
    assert r.exit_code == 0, r.output
    assert "whsec_" in r.output  # first webhook: its signing secret is shown now, once
    me = client.get("/api/v1/me", headers=bearer(key)).get_json()  # same key, new settings
    assert me["show_score"] is True and me["rate_limit"] == "50/minute" and me["review_threshold"] == 0.6
    assert me["webhook_url"] == "https://hooks.example.com/v"

    # unset options are kept; "" and "default" go back to the operator's values
    r = runner.invoke(main, ["key", "set", "shop", "--rate-limit", "", "--review-threshold", "default"], env=env)
    assert r.exit_code == 0, r.output
    me = client.get("/api/v1/me", headers=bearer(key)).get_json()
    assert me["show_score"] is True and me["review_threshold"] is None
    assert me["rate_limit"] == api_settings.api_rate_limit

    for args in (["--rate-limit", "lots"], ["--webhook-url", "http://10.0.0.1/x"], ["--block-threshold", "1.5"],
                 ["--review-threshold", "0.9", "--block-threshold", "0.5"], ["--review-threshold", "high"]):
        r = runner.invoke(main, ["key", "set", "shop", *args], env=env)
        assert r.exit_code != 0 and "Error" in r.output, (args, r.output)
    assert client.get("/api/v1/me", headers=bearer(key)).get_json()["webhook_url"] == "https://hooks.example.com/v"
    runner.invoke(main, ["key", "revoke", "shop"], env=env)
    r = runner.invoke(main, ["key", "set", "shop", "--show-score"], env=env)
    assert r.exit_code != 0 and "revoked" in r.output
    runner.invoke(main, ["key", "revoke", "shop"], env=env)  # again: nothing to audit

    # every change made on the CLI is in the audit log, as the admin pages' are: who (the OS
    # user), what, before -> after; refused changes leave nothing, and never the key or secret
    from core.models import AuditEvent

    with api_app.extensions["verity.db"].session() as s:
        events = s.scalars(select(AuditEvent).where(AuditEvent.action.like("key.%")).order_by(AuditEvent.id)).all()
        secret = s.scalar(select(ApiClient.webhook_secret).where(ApiClient.name == "shop"))
        rows = [(e.action, e.actor, e.detail) for e in events]
    assert [a for a, _, _ in rows] == ["key.created", "key.updated", "key.updated", "key.revoked"]
    assert all(actor.startswith("cli:") and detail["name"] == "shop" for _, actor, detail in rows)
    assert rows[1][2]["show_score"] == {"before": False, "after": True}
    assert rows[2][2]["rate_limit"] == {"before": "50/minute", "after": None}
    assert key not in repr(rows) and secret not in repr(rows)
