"""Queue order, filters, counts; claims, expiry, heartbeat, release/reassign, "next", and the
races: concurrent claims and decisions from threads against the real database."""

from __future__ import annotations

import re
import threading
from datetime import timedelta

from sqlalchemy import select, update

from core.models import Decision, ReviewItem, Upload, utcnow
from tests.review.kit import make_item


def rows(html: str) -> list[int]:
    return [int(x) for x in re.findall(r'<tr class="[^"]*" data-item="(\d+)"', html)]


def test_order_overdue_then_priority_then_score(app, browser):
    low = make_item(app, score=0.55, priority=10)
    high = make_item(app, score=0.85, priority=10)
    blocked = make_item(app, score=0.97, priority=30, reason="blocked", status="blocked")
    late = make_item(app, score=0.51, priority=10, age=timedelta(hours=30), due_in=timedelta(hours=24))
    html = browser("mod").get("/review/").get_data(as_text=True)
    assert rows(html) == [late, blocked, high, low]
    assert "overdue" in html and "1 overdue" in html


def test_filters_and_counts(app, browser):
    a = make_item(app, label="suspected_fake", score=0.8)
    b = make_item(app, label="unreadable", score=None, reason="unreadable", priority=20)
    c = make_item(app, label="suspected_fake", score=0.6, status="blocked", age=timedelta(days=2))
    m = browser("mod")
    assert set(rows(m.get("/review/?label=unreadable").get_data(as_text=True))) == {b}
    assert set(rows(m.get("/review/?status=blocked").get_data(as_text=True))) == {c}
    assert set(rows(m.get("/review/?overdue=1").get_data(as_text=True))) == {c}
    assert rows(m.get("/review/?kind=video").get_data(as_text=True)) == []
    m.post(f"/review/items/{a}/claim")
    from app.review import queue

    with app.extensions["verity.db"].session() as s:
        n = queue.counts(s)
    assert n == {"open": 2, "claimed": 1, "escalated": 0, "decided": 0, "overdue": 1, "waiting": 3}
    html = m.get("/review/?state=claimed").get_data(as_text=True)
    assert rows(html) == [a]


def _item(app, item_id) -> ReviewItem:
    with app.extensions["verity.db"].session() as s:
        return s.get(ReviewItem, item_id)


def test_a_claimed_item_is_not_handed_to_another_moderator(app, browser):
    item = make_item(app)
    m1, m2 = browser("mod"), browser("mod2")
    assert m1.post(f"/review/items/{item}/claim").headers["Location"].endswith(f"/review/items/{item}")
    r = m2.post(f"/review/items/{item}/claim")
    assert "taken=1" in r.headers["Location"]
    assert _item(app, item).claimed_by == "mod"
    assert "claimed by mod" in m2.get(r.headers["Location"]).get_data(as_text=True)
    # "next" skips it too, and mod2 cannot decide it
    assert m2.post("/review/next").headers["Location"].endswith("/review/?empty=1")
    assert m2.post(f"/review/items/{item}/decide", {"verdict": "authentic"}).status_code == 409


def test_an_expired_claim_returns_to_the_queue(app, browser):
    item = make_item(app)
    m1, m2 = browser("mod"), browser("mod2")
    m1.post(f"/review/items/{item}/claim")
    with app.extensions["verity.db"].session() as s:
        s.execute(update(ReviewItem).where(ReviewItem.id == item)
                  .values(claimed_until=utcnow() - timedelta(seconds=1)))
        s.commit()
    assert item in rows(m2.get("/review/?state=open").get_data(as_text=True))
    assert m2.post("/review/next").headers["Location"].endswith(f"/review/items/{item}")
    assert _item(app, item).claimed_by == "mod2"
    # the first moderator's late decision and heartbeat are refused
    assert m1.post(f"/review/items/{item}/decide", {"verdict": "authentic"}).status_code == 409
    assert m1.post(f"/review/items/{item}/heartbeat").status_code == 409


def test_heartbeat_renews_the_claim(app, browser):
    item = make_item(app)
    m = browser("mod")
    m.post(f"/review/items/{item}/claim")
    with app.extensions["verity.db"].session() as s:
        s.execute(update(ReviewItem).where(ReviewItem.id == item).values(claimed_until=utcnow() + timedelta(seconds=5)))
        s.commit()
    r = m.post(f"/review/items/{item}/heartbeat")
    assert r.status_code == 200 and r.json["claimed"]
    from app.review.queue import aware

    assert aware(_item(app, item).claimed_until) > utcnow() + timedelta(minutes=9)


def test_admin_release_and_reassign(app, browser):
    item = make_item(app)
    m1, m2, admin = browser("mod"), browser("mod2"), browser("admin")
    m1.post(f"/review/items/{item}/claim")
    assert m2.post(f"/review/items/{item}/release").status_code == 302
    assert _item(app, item).claimed_by == "mod"  # a moderator cannot release someone else's claim
    assert m2.post(f"/review/items/{item}/reassign", {"to": "mod2"}).status_code == 403
    admin.post(f"/review/items/{item}/release")
    it = _item(app, item)
    assert it.state == "open" and it.claimed_by is None
    assert admin.post(f"/review/items/{item}/reassign", {"to": "mod2"}).status_code == 302
    assert _item(app, item).claimed_by == "mod2"
    assert m2.post(f"/review/items/{item}/decide", {"verdict": "authentic"}).status_code == 302
    assert admin.post(f"/review/items/{item}/reassign", {"to": "nobody"}).status_code == 400


def test_next_takes_the_top_unclaimed_item(app, browser):
    top = make_item(app, score=0.95, priority=30, reason="blocked", status="blocked")
    second = make_item(app, score=0.6)
    m1, m2 = browser("mod"), browser("mod2")
    assert m1.post("/review/next").headers["Location"].endswith(f"/review/items/{top}")
    assert m2.post("/review/next").headers["Location"].endswith(f"/review/items/{second}")
    assert m1.post("/review/next", {"current": str(top)}).headers["Location"].endswith("/review/?empty=1")
    assert _item(app, top).state == "open"  # "next" with the current item hands it back


def _race(n, fn):
    barrier = threading.Barrier(n)
    results = [None] * n

    def run(i):
        barrier.wait()
        results[i] = fn(i)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


def test_concurrent_claims_of_one_item_have_one_winner(app, browser, users):
    from tests.review.kit import add_user

    for i in range(3):
        add_user(app, f"m{i}")
    item = make_item(app)
    clients = [browser(n) for n in ("mod", "mod2", "m0", "m1", "m2")]
    results = _race(len(clients), lambda i: clients[i].post(f"/review/items/{item}/claim",
                                                          headers={"Accept": "application/json"}).status_code)
    assert sorted(results) == [200, 409, 409, 409, 409]
    holder = _item(app, item).claimed_by
    winner = clients[results.index(200)]
    assert winner.post(f"/review/items/{item}/decide", {"verdict": "authentic"}).status_code == 302
    assert holder in ("mod", "mod2", "m0", "m1", "m2")


def test_concurrent_next_hands_out_distinct_items(app, browser):
    from tests.review.kit import add_user

    for i in range(3):
        add_user(app, f"m{i}")
    items = {make_item(app, score=0.5 + i / 100) for i in range(4)}
    clients = [browser(n) for n in ("mod", "mod2", "m0", "m1", "m2")]
    got = _race(len(clients), lambda i: clients[i].post("/review/next", headers={"Accept": "application/json"}).json["item_id"])
    claimed = [g for g in got if g is not None]
    assert len(claimed) == 4 and set(claimed) == items  # one each, the fifth finds none
    with app.extensions["verity.db"].session() as s:
        holders = {i.id: i.claimed_by for i in s.scalars(select(ReviewItem))}
    assert len(set(holders.values())) == 4


def test_concurrent_decisions_write_exactly_one(app, browser):
    item = make_item(app)
    m1, m2 = browser("mod"), browser("mod2")
    m1.post(f"/review/items/{item}/claim")
    # the holder double-submits (two tabs) while another moderator tries too
    attempts = [(m1, "confirmed_fake"), (m1, "authentic"), (m2, "authentic"), (m1, "inconclusive")]
    codes = _race(len(attempts), lambda i: attempts[i][0].post(
        f"/review/items/{item}/decide", {"verdict": attempts[i][1]},
        headers={"Accept": "application/json"}).status_code)
    assert sorted(codes) == [200, 409, 409, 409]
    with app.extensions["verity.db"].session() as s:
        ds = s.scalars(select(Decision)).all()
        assert len(ds) == 1
        upload = s.get(Upload, s.get(ReviewItem, item).upload_id)
        assert upload.status == ds[0].outcome
