"""No route reachable without the right key or login. The walker goes over app.url_map as it is
when the test runs: every rule is classified (public, health, page, api, moderator, admin) by a
rule below, and a rule no rule covers fails the test loudly, so a new route must be placed."""

from __future__ import annotations

import re

import pytest
from securitykit import add_user, login

PUBLIC = {
    "page.index", "page.upload", "page.status",        # the anonymous upload page (CSRF: test_csrf.py)
    "health.healthz", "health.readyz", "metrics.metrics",  # probes and Prometheus (bind them privately)
    "auth.login", "auth.logout", "api_v1.openapi",
    "static", "review.static", "favicon",             # the shared static files (app/static/) and /favicon.ico
    "_review_slash",                                  # a bare redirect to /review/ (which needs login)
}
ADMIN = {"review.reassign", "review.revise", "review.audit", "review.audit_csv", "review.audit_json",
         "review.dashboard", "review.settings",
         "review.keys", "review.key", "review.key_revoke", "review.key_redeliver",
         "review.bank", "review.bank_remove",
         "review.calibration", "review.calibration_apply", "review.calibration_undo"}


def classify(endpoint: str) -> str:
    if endpoint in PUBLIC:
        return "public"
    if endpoint in ADMIN or endpoint.startswith("rq_dashboard."):
        return "admin"
    if endpoint.startswith("api_v1."):
        return "api"
    if endpoint.startswith("review."):
        return "moderator"
    raise AssertionError(f"route {endpoint!r} is not classified: add it to tests/security/test_access.py")


def concrete(rule) -> str:
    """The rule's URL with every variable filled (an id that does not exist: auth must come first)."""
    def fill(m):
        conv = m.group(1) or "default"
        return {"int": "0", "path": "x.css"}.get(conv.split("(")[0], "0" * 32)
    return re.sub(r"<(?:([a-z]+(?:\([^)]*\))?):)?[a-zA-Z_]+>", fill, rule.rule)


def routes(app, signed_in: bool = False):
    out = []
    for rule in app.url_map.iter_rules():
        if signed_in and rule.endpoint == "auth.logout":
            continue  # it would end the walk's own session
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            out.append((rule.endpoint, method, concrete(rule), classify(rule.endpoint)))
    assert len(out) > 20
    return out


@pytest.fixture
def access_app(make_app):
    app = make_app(csrf=False)  # here only authentication and roles are judged; CSRF in test_csrf.py
    add_user(app, "mod", "moderator")
    add_user(app, "boss", "admin")
    return app


def _call(client, method, url, **kw):
    """One request; werkzeug's canonical-URL redirects (308, before any view runs) are followed."""
    for _ in range(3):
        r = client.open(url, method=method, **kw)
        if r.status_code != 308:
            return r
        url = r.headers["Location"]
    return r


def test_every_route_is_classified(access_app):
    kinds = {}
    for endpoint, method, url, kind in routes(access_app):
        kinds.setdefault(kind, 0)
        kinds[kind] += 1
    print(f"\nroutes by class: {kinds}")
    assert {"public", "api", "moderator", "admin"} <= set(kinds)


def test_anonymous_gets_nothing_but_public_routes(access_app):
    c = access_app.test_client()
    for endpoint, method, url, kind in routes(access_app):
        r = _call(c, method, url)
        where = f"{method} {url} ({endpoint}, {kind}) -> {r.status_code}"
        assert r.status_code != 500, where
        if kind == "api":
            assert r.status_code == 401 and "Bearer" in r.headers.get("WWW-Authenticate", ""), where
        elif kind in ("moderator", "admin"):
            assert r.status_code in (302, 401), where
            if r.status_code == 302:
                assert "/auth/login" in r.headers["Location"], where


def test_wrong_or_revoked_keys_get_401(access_app):
    from core.clients import create_client, revoke_client

    with access_app.extensions["verity.db"].session() as s:
        create_client(s, "gone")
        revoke_client(s, "gone")
    bad = ["Bearer vk_" + "0" * 43, "Bearer ", "Basic dXNlcjpwYXNz", "bearer\tvk_x", "vk_nope"]
    c = access_app.test_client()
    for endpoint, method, url, kind in routes(access_app):
        if kind != "api":
            continue
        for header in bad:
            r = _call(c, method, url, headers={"Authorization": header})
            assert r.status_code == 401, (method, url, header, r.status_code)


def test_a_revoked_key_is_refused(access_app):
    from core.clients import create_client, revoke_client

    with access_app.extensions["verity.db"].session() as s:
        key = create_client(s, "soon-gone").key
    c = access_app.test_client()
    assert c.get("/api/v1/me", headers={"Authorization": f"Bearer {key}"}).status_code == 200
    with access_app.extensions["verity.db"].session() as s:
        revoke_client(s, "soon-gone")
    assert c.get("/api/v1/me", headers={"Authorization": f"Bearer {key}"}).status_code == 401


def test_a_moderator_gets_403_on_admin_routes_and_no_api(access_app):
    c = login(access_app, "mod")
    for endpoint, method, url, kind in routes(access_app, signed_in=True):
        r = _call(c, method, url)
        where = f"{method} {url} ({endpoint}, {kind}) -> {r.status_code}"
        assert r.status_code != 500, where
        if kind == "admin":
            assert r.status_code == 403, where
        elif kind == "api":
            assert r.status_code == 401, where  # a session cookie is not an API key
        elif kind == "moderator":
            assert r.status_code not in (401, 403), where
            if r.status_code == 302:
                assert "/auth/login" not in r.headers["Location"], where


def test_an_admin_reaches_admin_routes(access_app):
    c = login(access_app, "boss")
    for endpoint, method, url, kind in routes(access_app, signed_in=True):
        if kind != "admin" or method != "GET":
            continue
        r = _call(c, method, url)
        assert r.status_code not in (401, 403), (method, url, r.status_code)
        if r.status_code == 500:
            # rq-dashboard's own views raise on an id that does not exist (admin-only, third party)
            assert endpoint.startswith("rq_dashboard."), (method, url, r.status_code)
            print(f"rq-dashboard 500 on a made-up id: {method} {url}")


def test_an_api_key_opens_no_review_or_admin_route(access_app, authorize):
    c = access_app.test_client()
    authorize(access_app, c)
    for endpoint, method, url, kind in routes(access_app):
        if kind in ("moderator", "admin"):
            r = _call(c, method, url)
            assert r.status_code in (302, 401), (method, url, r.status_code)


def test_a_client_sees_only_its_own_uploads(access_app, authorize):
    import io

    from mediagen import jpeg_bytes, no_face_image

    a, b = access_app.test_client(), access_app.test_client()
    authorize(access_app, a, name="a")
    authorize(access_app, b, name="b")
    r = a.post("/api/v1/uploads", data={"file": (io.BytesIO(jpeg_bytes(no_face_image((64, 48)))), "x.jpg")},
               content_type="multipart/form-data")
    uid = r.get_json()["id"]
    assert a.get(f"/api/v1/uploads/{uid}").status_code == 200
    assert b.get(f"/api/v1/uploads/{uid}").status_code == 404
    assert b.delete(f"/api/v1/uploads/{uid}").status_code == 404
    assert uid not in b.get("/api/v1/uploads").get_data(as_text=True)
