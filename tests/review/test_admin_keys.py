"""The admin pages for platform API keys (/review/admin/keys): a key created in the UI is shown
once and works, settings take effect, revoke locks the key out, the delivery log lists one key's
deliveries with their attempts, and Redeliver puts a delivery back on the `webhooks` queue."""

from __future__ import annotations

import hashlib
import logging
import re
from datetime import timedelta

from sqlalchemy import func, select

from tests.review.kit import Browser, csrf_from, make_item

KEYS = "/review/admin/keys"
PUBLIC_HOOK = "https://93.184.215.14/hooks/verity"  # a public address literal: no DNS in the test


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _new_key(html: str) -> str:
    m = re.search(r'id="new-key-value">(vk_[^<]+)<', html)
    assert m, "the response shows no new key"
    return m.group(1)


def _make_client(app, name: str, **kw):
    from core.clients import create_client

    with app.extensions["verity.db"].session() as s:
        new = create_client(s, name, **kw)
        return new.client.id, new.key


def _client(app, name: str):
    from core.models import ApiClient

    with app.extensions["verity.db"].session() as s:
        c = s.scalar(select(ApiClient).where(ApiClient.name == name))
        s.expunge_all()
        return c


def _audit(app, action: str) -> list:
    from core.models import AuditEvent

    with app.extensions["verity.db"].session() as s:
        rows = s.scalars(select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.id)).all()
        s.expunge_all()
        return rows


def _client_upload(app, client_id: str, score: float = 0.7) -> tuple[str, int]:
    """An analysed upload owned by `client_id` (with its review item); returns (upload id, item id)."""
    from core.models import ReviewItem, Upload

    item_id = make_item(app, score=score)
    with app.extensions["verity.db"].session() as s:
        upload = s.get(Upload, s.get(ReviewItem, item_id).upload_id)
        upload.client_id = client_id
        s.commit()
        return upload.id, item_id


def test_a_key_created_in_the_ui_is_shown_once_works_and_is_stored_hashed(app, browser, caplog):
    from core.models import ApiClient

    caplog.set_level(logging.DEBUG)
    admin = browser("admin")
    assert f'href="{KEYS}"' in admin.get("/review/").get_data(as_text=True)
    assert f'href="{KEYS}"' not in browser("mod").get("/review/").get_data(as_text=True)

    r = admin.post(KEYS, {"name": "acme", "webhook_url": PUBLIC_HOOK, "rate_limit": "100/minute",
                          "show_score": "on"})
    html = r.get_data(as_text=True)
    assert r.status_code == 200, html[:500]
    key = _new_key(html)
    assert key.startswith("vk_") and len(key) > 40
    assert "not shown again" in html and 'data-copy="new-key-value"' in html
    assert r.headers["Cache-Control"] == "no-store"
    c = _client(app, "acme")
    assert c.webhook_secret in html  # a webhook was set: its signing secret is shown once too

    # only the hash is stored; the key is in no column
    assert c.key_hash == hashlib.sha256(key.encode()).hexdigest()
    with app.extensions["verity.db"].session() as s:
        row = s.get(ApiClient, c.id)
        assert all(key not in str(getattr(row, col.name)) for col in ApiClient.__table__.columns)
    assert c.rate_limit == "100/minute" and c.show_score and c.webhook_url == PUBLIC_HOOK

    # the key works on the API
    api = app.test_client()
    r = api.get("/api/v1/uploads?external_id=x", headers=_bearer(key))
    assert r.status_code == 200 and r.get_json() == {"items": []}
    assert api.get("/api/v1/me", headers=_bearer(key)).get_json()["name"] == "acme"

    # ... and is never shown again, nor kept in the session cookie, the audit log or the logs
    again = admin.get(KEYS).get_data(as_text=True)
    assert "acme" in again and c.key_prefix in again and key not in again and c.webhook_secret not in again
    assert key not in admin.get(f"{KEYS}/{c.id}").get_data(as_text=True)
    cookie = admin.client.get_cookie(app.config["SESSION_COOKIE_NAME"])
    session = app.session_interface.get_signing_serializer(app).loads(cookie.value)
    assert key not in repr(session) and c.webhook_secret not in repr(session)
    (event,) = _audit(app, "key.created")
    assert event.actor == "moderator:admin" and event.detail["name"] == "acme"
    assert key not in repr(event.detail) and c.webhook_secret not in repr(event.detail)
    assert all(key not in rec.getMessage() for rec in caplog.records)

    # the same name again is refused, and shows no key
    r = admin.post(KEYS, {"name": "acme"})
    assert r.status_code == 400 and "exists already" in r.get_data(as_text=True)
    assert 'id="new-key-value"' not in r.get_data(as_text=True)


def test_moderators_get_403_and_anonymous_users_the_login(app, browser):
    from core.models import WebhookDelivery

    client_id, _ = _make_client(app, "acme", webhook_url=PUBLIC_HOOK)
    with app.extensions["verity.db"].session() as s:
        d = WebhookDelivery(client_id=client_id, upload_id="u1", event="upload.analyzed", payload="{}",
                            state="failed", attempts=3)
        s.add(d)
        s.commit()
        delivery_id = d.id
    key_url = f"{KEYS}/{client_id}"
    gets = [KEYS, key_url, f"{key_url}?state=failed"]
    posts = [(KEYS, {"name": "sneaky"}), (key_url, {"show_score": "on"}), (f"{key_url}/revoke", {}),
             (f"{key_url}/deliveries/{delivery_id}/redeliver", {})]

    mod = browser("mod")
    anon = Browser(app)
    anon.token = csrf_from(anon.get("/auth/login").get_data(as_text=True))  # a valid token, no login
    for url in gets:
        assert mod.get(url).status_code == 403, url
        r = anon.get(url)
        assert r.status_code == 302 and "/auth/login" in r.headers["Location"], url
    for url, data in posts:
        assert mod.post(url, data).status_code == 403, url
        r = anon.post(url, data)
        assert r.status_code == 302 and "/auth/login" in r.headers["Location"], url

    c = _client(app, "acme")
    assert c.active and not c.show_score and _client(app, "sneaky") is None
    with app.extensions["verity.db"].session() as s:
        assert s.get(WebhookDelivery, delivery_id).state == "failed"


def test_posts_without_the_csrf_token_are_refused(app, browser):
    client_id, key = _make_client(app, "acme")
    admin = browser("admin")
    for url in (KEYS, f"{KEYS}/{client_id}", f"{KEYS}/{client_id}/revoke"):
        for token in ("", "forged"):
            r = admin.post(url, {"csrf_token": token, "name": "other", "show_score": "on"})
            assert r.status_code == 400, (url, token, r.status_code)
    assert _client(app, "other") is None
    c = _client(app, "acme")
    assert c.active and not c.show_score
    assert app.test_client().get("/api/v1/me", headers=_bearer(key)).status_code == 200


def test_invalid_input_gets_a_form_error_and_changes_nothing(app, browser):
    from core.models import ApiClient

    admin = browser("admin")
    for data, says in [
        ({"name": "x", "webhook_url": "file:///etc/passwd"}, "http(s)"),
        ({"name": "x", "webhook_url": "http://127.0.0.1:8080/hook"}, "non-public address"),
        ({"name": "x", "webhook_url": "http://10.1.2.3/hook"}, "VERITY_WEBHOOK_ALLOW_PRIVATE"),
        ({"name": "x", "webhook_url": "https://user:pw@93.184.215.14/h"}, "credentials"),
        ({"name": "x", "rate_limit": "lots"}, "rate limit"),
        ({"name": "   "}, "name"),
    ]:
        r = admin.post(KEYS, data)
        html = r.get_data(as_text=True)
        assert r.status_code == 400, data
        assert 'class="notice err"' in html and says in html, (data, html[:300])
        assert 'id="new-key-value"' not in html
        assert (data.get("webhook_url") or data.get("rate_limit") or "") in html  # the form keeps the input

    client_id, _ = _make_client(app, "acme", rate_limit="100/minute")
    url = f"{KEYS}/{client_id}"
    for data, says in [
        ({"review_threshold": "0.9", "block_threshold": "0.5"}, "block threshold must be &gt;= review threshold"),
        ({"review_threshold": "1.5"}, "within [0, 1]"),
        ({"block_threshold": "lots"}, "must be a number"),
        ({"rate_limit": "often"}, "rate limit"),
        ({"webhook_url": "gopher://93.184.215.14/"}, "http(s)"),
        ({"webhook_url": "http://[::1]:9/x"}, "non-public address"),
    ]:
        r = admin.post(url, {"show_score": "on", "rate_limit": "100/minute", **data})
        assert r.status_code == 400, data
        assert says in r.get_data(as_text=True), (data, r.get_data(as_text=True)[:400])
    with app.extensions["verity.db"].session() as s:
        assert s.scalar(select(func.count()).select_from(ApiClient)) == 1
        c = s.get(ApiClient, client_id)
        assert (c.rate_limit, c.show_score, c.webhook_url, c.review_threshold, c.block_threshold) == \
            ("100/minute", False, None, None, None)
    assert _audit(app, "key.created") == [] and _audit(app, "key.updated") == []


def test_edited_settings_take_effect_on_the_api(app, browser):
    client_id, key = _make_client(app, "acme")
    upload_id, item_id = _client_upload(app, client_id, score=0.7)
    api = app.test_client()
    assert api.get(f"/api/v1/uploads/{upload_id}", headers=_bearer(key)).get_json()["score"] is None

    admin = browser("admin")
    r = admin.post(f"{KEYS}/{client_id}", {"show_score": "on", "rate_limit": "30/minute", "review_threshold": "0.3",
                                           "block_threshold": "0.6", "webhook_url": PUBLIC_HOOK})
    html = r.get_data(as_text=True)
    assert r.status_code == 200 and "Saved:" in html, html[:500]
    c = _client(app, "acme")
    assert c.webhook_secret in html  # the first webhook URL: its signing secret is shown, once

    body = api.get(f"/api/v1/uploads/{upload_id}", headers=_bearer(key)).get_json()
    assert body["score"] == 0.7 and body["analysis"]["evidence"] is not None
    me = api.get("/api/v1/me", headers=_bearer(key)).get_json()
    assert (me["rate_limit"], me["review_threshold"], me["block_threshold"], me["webhook_url"]) == \
        ("30/minute", 0.3, 0.6, PUBLIC_HOOK)
    (event,) = _audit(app, "key.updated")
    assert event.actor == "moderator:admin"
    assert event.detail["show_score"] == {"before": False, "after": True}
    assert c.webhook_secret not in repr(event.detail)

    # the same values again: nothing changes, no event, no secret; blanks go back to the defaults
    r = admin.post(f"{KEYS}/{client_id}", {"show_score": "on", "rate_limit": "30/minute", "review_threshold": "0.3",
                                           "block_threshold": "0.6", "webhook_url": PUBLIC_HOOK})
    assert "No change." in r.get_data(as_text=True) and c.webhook_secret not in r.get_data(as_text=True)
    assert len(_audit(app, "key.updated")) == 1
    assert admin.post(f"{KEYS}/{client_id}", {}).status_code == 200
    c = _client(app, "acme")
    assert (c.show_score, c.rate_limit, c.review_threshold, c.block_threshold, c.webhook_url) == \
        (False, None, None, None, None)
    assert api.get(f"/api/v1/uploads/{upload_id}", headers=_bearer(key)).get_json()["score"] is None
    assert item_id  # the upload has a review item (it links from the delivery log)


def test_revoke_locks_the_key_out_and_leaves_the_page_read_only(app, browser):
    client_id, key = _make_client(app, "acme")
    api = app.test_client()
    assert api.get("/api/v1/uploads?external_id=x", headers=_bearer(key)).status_code == 200
    admin = browser("admin")
    page = admin.get(f"{KEYS}/{client_id}").get_data(as_text=True)
    assert 'id="key-settings"' in page and "data-confirm=" in page

    r = admin.post(f"{KEYS}/{client_id}/revoke")
    assert r.status_code == 302 and r.headers["Location"].endswith(f"{KEYS}/{client_id}?revoked=1")
    assert api.get("/api/v1/uploads?external_id=x", headers=_bearer(key)).status_code == 401
    page = admin.get(r.headers["Location"]).get_data(as_text=True)
    assert 'id="revoked-chip"' in page and "Key revoked" in page and 'id="key-settings"' not in page
    assert "revoked" in admin.get(KEYS).get_data(as_text=True)

    r = admin.post(f"{KEYS}/{client_id}", {"show_score": "on"})
    assert r.status_code == 400 and "read-only" in r.get_data(as_text=True)
    assert not _client(app, "acme").show_score
    revoked_at = _client(app, "acme").revoked_at
    assert admin.post(f"{KEYS}/{client_id}/revoke").status_code == 302  # twice: no-op
    assert _client(app, "acme").revoked_at == revoked_at
    (event,) = _audit(app, "key.revoked")
    assert event.actor == "moderator:admin" and event.detail["client_id"] == client_id
    assert admin.get(f"{KEYS}/{'0' * 32}").status_code == 404


def test_delivery_log_lists_one_keys_deliveries_and_redeliver_requeues(app, browser, settings, redis_conn):
    from rq import Queue

    from core.models import WebhookAttempt, WebhookDelivery, utcnow
    from core.webhooks.outbox import job_id

    acme_id, _ = _make_client(app, "acme", webhook_url=PUBLIC_HOOK)
    other_id, _ = _make_client(app, "other", webhook_url=PUBLIC_HOOK)
    upload_id, item_id = _client_upload(app, acme_id)
    t0 = utcnow() - timedelta(hours=2)
    with app.extensions["verity.db"].session() as s:
        failed = WebhookDelivery(client_id=acme_id, upload_id=upload_id, event="upload.analyzed", payload="{}",
                                 state="failed", attempts=2, last_status_code=500, last_error="HTTP 500",
                                 created_at=t0, updated_at=t0)
        done = WebhookDelivery(client_id=acme_id, upload_id="a" * 32, event="upload.decided", payload="{}",
                               state="delivered", attempts=1, last_status_code=204,
                               created_at=t0 + timedelta(minutes=5), updated_at=t0 + timedelta(minutes=5))
        foreign = WebhookDelivery(client_id=other_id, upload_id="b" * 32, event="upload.analyzed", payload="{}",
                                  state="failed", attempts=4, last_error="refused by the outbound guard",
                                  created_at=t0, updated_at=t0)
        s.add_all([failed, done, foreign])
        s.flush()
        s.add_all([WebhookAttempt(delivery_id=failed.id, url=PUBLIC_HOOK, status_code=500, latency_ms=123.4,
                                  error="HTTP 500", created_at=t0),
                   WebhookAttempt(delivery_id=failed.id, url=PUBLIC_HOOK, status_code=None, latency_ms=5001.0,
                                  error="TimeoutError: timed out", created_at=t0 + timedelta(seconds=30)),
                   WebhookAttempt(delivery_id=done.id, url=PUBLIC_HOOK, status_code=204, latency_ms=42.0,
                                  created_at=t0 + timedelta(minutes=5))])
        s.commit()
        failed_id, done_id, foreign_id = failed.id, done.id, foreign.id

    admin = browser("admin")
    listing = admin.get(KEYS).get_data(as_text=True)
    row = re.search(rf'<tr data-client="{acme_id}">.*?</tr>', listing, re.DOTALL).group(0)
    assert 'state=failed">1</a>' in row  # one failed delivery, linked to the filtered log

    html = admin.get(f"{KEYS}/{acme_id}").get_data(as_text=True)
    assert failed_id in html and done_id in html and foreign_id not in html
    assert html.index(done_id) < html.index(failed_id)  # newest first
    block = html.split(f'<tr data-delivery="{failed_id}">')[1].split("<tr data-delivery=")[0]
    assert "2 attempts" in block and "123 ms" in block and "5001 ms" in block and "TimeoutError" in block
    assert f'href="/review/items/{item_id}"' in block  # the upload links to its review item
    assert "Redeliver" in block
    html = admin.get(f"{KEYS}/{acme_id}?state=failed").get_data(as_text=True)
    assert failed_id in html and done_id not in html

    r = admin.post(f"{KEYS}/{acme_id}/deliveries/{failed_id}/redeliver?state=failed")
    assert r.status_code == 302 and f"redelivered={failed_id}" in r.headers["Location"]
    assert "state=failed" in r.headers["Location"]
    with app.extensions["verity.db"].session() as s:
        d = s.get(WebhookDelivery, failed_id)
        assert (d.state, d.attempts) == ("pending", 0) and len(d.attempt_log) == 2  # the log is kept
    q = Queue(settings.webhook_queue, connection=redis_conn, serializer="json")
    assert job_id(failed_id) in q.job_ids
    job = q.fetch_job(job_id(failed_id))
    assert job.func_name == "workers.webhooks.deliver" and job.args == [failed_id]
    assert "queued again" in admin.get(r.headers["Location"]).get_data(as_text=True)
    (event,) = _audit(app, "webhook.redelivered")
    assert event.upload_id == upload_id and event.detail["delivery_id"] == failed_id

    # another key's delivery is not reachable through this key; a revoked key cannot redeliver
    assert admin.post(f"{KEYS}/{acme_id}/deliveries/{foreign_id}/redeliver").status_code == 404
    assert job_id(foreign_id) not in q.job_ids
    admin.post(f"{KEYS}/{other_id}/revoke")
    assert admin.post(f"{KEYS}/{other_id}/deliveries/{foreign_id}/redeliver").status_code == 409
    page = admin.get(f"{KEYS}/{other_id}").get_data(as_text=True)
    assert foreign_id in page and "Redeliver</button>" not in page  # the log stays readable


def test_delivery_log_pages_by_fifty(app, browser):
    from core.models import WebhookDelivery, utcnow

    client_id, _ = _make_client(app, "busy", webhook_url=PUBLIC_HOOK)
    t0 = utcnow()
    with app.extensions["verity.db"].session() as s:
        s.add_all([WebhookDelivery(client_id=client_id, upload_id=f"{i:032d}", event="upload.analyzed",
                                   payload="{}", state="delivered", attempts=1,
                                   created_at=t0 - timedelta(minutes=i)) for i in range(53)])
        s.commit()
    admin = browser("admin")
    first = admin.get(f"{KEYS}/{client_id}").get_data(as_text=True)
    second = admin.get(f"{KEYS}/{client_id}?page=2").get_data(as_text=True)
    assert first.count("<tr data-delivery=") == 50 and second.count("<tr data-delivery=") == 3
    assert f"{0:032d}" in first and f"{52:032d}" in second and "Older →" in first and "Older →" not in second
