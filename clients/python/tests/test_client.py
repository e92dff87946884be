"""Every method of `Client` against the real daemon."""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid
from typing import Iterator, List

import pytest

from conftest import Daemon, Proxy, raw
from creditsd import (
    Client,
    CreditsdError,
    IdempotencyConflict,
    InsufficientCredits,
    NotFound,
)
from creditsd.models import Capture, Release


@pytest.fixture
def c(daemon: Daemon) -> Iterator[Client]:
    with Client(daemon.url, timeout=10.0, retries=3, backoff=0.05) as client:
        yield client


def test_create_and_read_an_account(c: Client, acct: str) -> None:
    a = c.create_account(acct, plan="starter")
    assert (a.id, a.plan, a.status, a.pending_plan) == (acct, "starter", "active", None)
    assert a.balances == {"monthly": 50, "promo": 0, "free": 50, "packs": 0}
    assert (a.available, a.held, a.holds) == (100, 0, [])
    b = c.account(acct)
    assert b.available == 100 and b.balances["monthly"] == 50
    assert b.next_reset_at > b.period_start and b.next_reset_at.tzinfo is not None
    with pytest.raises(CreditsdError) as e:
        c.create_account(acct)
    assert (e.value.code, e.value.status) == ("account_exists", 409)


def test_create_with_a_billing_anchor(c: Client, acct: str) -> None:
    anchor = dt.datetime(2026, 1, 31, tzinfo=dt.timezone.utc)
    a = c.create_account(acct, billing_anchor=anchor)
    assert a.plan == "free" and a.billing_anchor == anchor


def test_debit(c: Client, acct: str) -> None:
    c.create_account(acct, plan="starter")
    d = c.debit(acct, "sample_image", quantity=2, metadata={"job": "17"})
    assert (d.credits, d.taken, d.available, d.duplicate, d.dry_run) == (
        6,
        {"monthly": 6, "free": 0, "packs": 0},
        94,
        False,
        False,
    )
    assert d.kind == "debit" and d.status == "active" and d.alerts == [] and d.metadata == {"job": "17"}
    assert d.seq == 2 and d.idempotency_key  # the client made one
    again = c.debit(acct, "sample_image", quantity=2, metadata={"job": "17"}, idempotency_key=d.idempotency_key)
    assert again.duplicate and again.seq == d.seq and c.account(acct).available == 94


def test_dry_run_changes_nothing(c: Client, acct: str) -> None:
    c.create_account(acct)
    d = c.debit(acct, "video_generation", dry_run=True)
    assert d.dry_run and d.seq is None and d.credits == 8 and d.available == 42
    assert c.account(acct).available == 50


def test_errors_are_typed(c: Client, acct: str) -> None:
    c.create_account(acct)
    with pytest.raises(InsufficientCredits) as short:
        c.debit(acct, "face_generation", quantity=11)
    assert (short.value.code, short.value.status, short.value.required, short.value.available) == (
        "insufficient_credits",
        402,
        55,
        50,
    )
    with pytest.raises(NotFound) as missing:
        c.account("no-such-" + acct)
    assert (missing.value.code, missing.value.status) == ("account_not_found", 404)
    key = f"k-{uuid.uuid4()}"
    c.debit(acct, "caption_generation", idempotency_key=key)
    with pytest.raises(IdempotencyConflict) as conflict:
        c.debit(acct, "caption_generation", quantity=2, idempotency_key=key)
    assert (conflict.value.code, conflict.value.status) == ("idempotency_conflict", 409)
    with pytest.raises(CreditsdError) as bad:
        c.debit(acct, "no_such_operation")
    assert (bad.value.code, bad.value.status, bad.value.field) == ("invalid_request", 400, "operation")
    with pytest.raises(NotFound) as no_hold:
        c.capture(acct, "h999")
    assert no_hold.value.code == "hold_not_found"


def test_a_refused_debit_leaves_its_key_free(c: Client, acct: str) -> None:
    c.create_account(acct)
    key = f"k-{uuid.uuid4()}"
    with pytest.raises(InsufficientCredits):
        c.debit(acct, "face_generation", quantity=20, idempotency_key=key)
    c.purchase(acct, "pack_100")
    d = c.debit(acct, "face_generation", quantity=20, idempotency_key=key)
    assert not d.duplicate and d.credits == 100


def test_debit_many_in_order_across_chunks(daemon: Daemon, proxy: Proxy, acct: str) -> None:
    with Client(proxy.url, retries=3, backoff=0.05) as c:
        c.create_account(acct)
        c.grant(acct, bucket="packs", credits=10_000, reason="batch test")
        items: List[dict] = [
            {"account": acct, "operation": "caption_generation", "idempotency_key": f"b-{i}", "metadata": {"i": str(i)}}
            for i in range(2500)
        ]
        items[1250] = {"account": "no-such-" + acct, "operation": "caption_generation", "idempotency_key": "b-1250"}
        rs = c.debit_many(items)
        assert len(rs) == 2500
        assert [r.ok for r in rs].count(False) == 1
        bad = rs[1250]
        assert not bad.ok and bad.status == 404 and bad.debit is None
        assert isinstance(bad.error, NotFound) and bad.error.code == "account_not_found"
        for i in (0, 999, 1000, 1249, 1251, 2499):
            r = rs[i]
            assert r.ok and r.status == 200 and r.error is None and r.debit is not None
            assert r.debit.idempotency_key == f"b-{i}" and r.debit.metadata == {"i": str(i)}
            assert r.debit.status == "active"
        assert len(proxy.sent("/v1/debits")) == 3
        assert c.account(acct).available == 50 + 10_000 - 2499


def test_debit_many_makes_keys(c: Client, acct: str) -> None:
    c.create_account(acct)
    rs = c.debit_many([{"account": acct, "operation": "caption_generation"} for _ in range(3)])
    keys = {r.debit.idempotency_key for r in rs if r.debit}
    assert len(keys) == 3 and c.account(acct).available == 47


def test_hold_is_captured_on_a_normal_exit(c: Client, acct: str) -> None:
    c.create_account(acct)
    with c.hold(acct, "video_generation", ttl_seconds=900) as h:
        assert h.hold_id.startswith("h") and h.credits == 8
        a = c.account(acct)
        assert a.held == 8 and a.available == 42 and [x.hold_id for x in a.holds] == [h.hold_id]
    assert isinstance(h.closed, Capture) and h.closed.credits == 8
    a = c.account(acct)
    assert (a.held, a.available) == (0, 42)


def test_hold_is_released_on_an_exception(c: Client, acct: str) -> None:
    c.create_account(acct)
    with pytest.raises(RuntimeError, match="render failed"):
        with c.hold(acct, "video_generation") as h:
            raise RuntimeError("render failed")
    assert isinstance(h.closed, Release) and h.closed.reason == "released"
    a = c.account(acct)
    assert (a.held, a.available) == (0, 50)


def test_hold_explicit_capture_and_release(c: Client, acct: str) -> None:
    c.create_account(acct)
    with c.hold(acct, "video_generation") as h:
        cap = h.capture(credits=5)
    assert cap.credits == 5 and cap.returned["free"] == 3 and cap.operation == "video_generation"
    assert h.closed is cap and c.account(acct).available == 45
    h2 = c.hold(acct, "sample_image", quantity=2)
    rel = h2.release()
    assert rel.credits == 6 and c.account(acct).available == 45
    with pytest.raises(CreditsdError) as closed:
        c.release(acct, h2.hold_id)
    assert (closed.value.code, closed.value.status) == ("hold_closed", 409)


def test_purchase_plan_and_grant(c: Client, acct: str) -> None:
    c.create_account(acct, plan="starter")
    p = c.purchase(acct, "pack_100", payment_ref="ch_" + acct)
    assert (p.pack, p.credits, p.price_cents, p.payment_ref, p.balances["packs"]) == ("pack_100", 100, 900, "ch_" + acct, 100)
    assert c.purchase(acct, "pack_100", payment_ref="ch_" + acct).duplicate
    up = c.change_plan(acct, "growth")
    assert (up.from_plan, up.plan, up.pending, up.credits) == ("starter", "growth", False, 150)
    down = c.change_plan(acct, "starter")
    assert down.pending and c.account(acct).pending_plan == "starter"
    g = c.grant(acct, bucket="packs", credits=10, reason="support")
    assert (g.bucket, g.credits, g.reason) == ("packs", 10, "support")
    assert c.account(acct).available == 50 + 200 + 100 + 10


def test_ledger_iterates_every_page(c: Client, acct: str) -> None:
    c.create_account(acct)
    for i in range(6):
        c.debit(acct, "caption_generation", idempotency_key=f"l-{i}")
    entries = list(c.ledger(acct, page_size=2))
    assert [e.seq for e in entries] == [7, 6, 5, 4, 3, 2, 1]
    assert entries[-1].kind == "account_created" and entries[0].kind == "debit"
    assert entries[0].idempotency_key == "l-5" and entries[0].change["free"] == -1
    assert entries[0].balance_after["available"] == 44


def test_ledger_capture_entries_name_the_operation(c: Client, acct: str) -> None:
    c.create_account(acct)
    with c.hold(acct, "sample_image", quantity=2):
        pass
    capture = next(c.ledger(acct))
    assert capture.kind == "capture" and (capture.operation, capture.quantity) == ("sample_image", 2)


def test_usage_forecast_pricing(c: Client, acct: str) -> None:
    c.create_account(acct)
    c.debit(acct, "sample_image", quantity=2)
    now = dt.datetime.now(dt.timezone.utc)
    u = c.usage(acct, now - dt.timedelta(days=2), now + dt.timedelta(days=1), granularity="day")
    assert u.account == acct and u.granularity == "day" and len(u.periods) >= 3
    today = [p for p in u.periods if p.start <= now < p.end]
    assert today[0].operations["sample_image"].count == 2 and today[0].credits == 6
    assert c.usage(acct, granularity="month").granularity == "month"
    f = c.forecast(acct)
    assert f.account == acct and f.credits_7d == 6 and f.available == 44 and f.burn_rate_7d > 0
    assert f.projected_exhaustion_at is not None and f.projected_exhaustion_at > now
    assert f.last_period is None and f.suggested_plan is None
    p = c.pricing()
    assert p.operations["video_generation"] == 8 and p.plans["starter"] == 50
    assert p.packs["pack_100"].price_cents == 900 and p.free_tier == 50 and p.thresholds == [25, 10, 0]


def test_events_follow_the_feed(c: Client, acct: str) -> None:
    c.create_account(acct)
    # 10 of 50 left: balance.low 25; and at 40 credits a day the 10 last 6 hours, within
    # the default forecast_hours (24) and before the reset: balance.forecast_low.
    d = c.debit(acct, "caption_generation", quantity=40)
    stream = c.events(after=0, wait_seconds=1, stop_when_idle=True)
    mine = [e for e in stream if e.account == acct]
    assert [(e.type, e.threshold) for e in mine] == [("balance.low", 25), ("balance.forecast_low", None)]
    assert mine[0].balances["available"] == 10
    assert mine[1].projected_exhaustion_at is not None
    assert [a.type for a in d.alerts] == ["balance.low", "balance.forecast_low"]
    assert d.alerts[1].projected_exhaustion_at == mine[1].projected_exhaustion_at
    cursor = stream.cursor
    c.debit(acct, "caption_generation", quantity=10)  # exhausted
    later = list(c.events(after=cursor, wait_seconds=1, stop_when_idle=True))
    assert [e.type for e in later if e.account == acct] == ["balance.low", "balance.exhausted"]
    assert all(e.id > int(cursor) for e in later)
    assert c.account(acct).status == "paused"


def test_the_daemon_serves_the_document(daemon: Daemon, document: dict) -> None:
    status, body, headers = raw(daemon.url, "GET", "/v1/openapi.json")
    assert status == 200 and body == document
    assert headers["content-type"].startswith("application/json")


def test_tokens(acct: str) -> None:
    admin, reader = "admin-" + acct, "reader-" + acct
    h = lambda t: hashlib.sha256(t.encode()).hexdigest()  # noqa: E731
    d = Daemon(
        f'[[auth.tokens]]\nname = "admin"\nsha256 = "{h(admin)}"\nscopes = ["admin"]\n'
        f'[[auth.tokens]]\nname = "reader"\nsha256 = "{h(reader)}"\nscopes = ["read"]\n'
    )
    try:
        with Client(d.url, token=admin) as c:
            c.create_account(acct)
            c.debit(acct, "caption_generation")
        with Client(d.url, token=reader, retries=0) as c:
            assert c.account(acct).available == 49
            with pytest.raises(CreditsdError) as forbidden:
                c.debit(acct, "caption_generation")
            assert (forbidden.value.code, forbidden.value.status) == ("forbidden", 403)
        with Client(d.url, retries=0) as c:
            with pytest.raises(CreditsdError) as anon:
                c.account(acct)
            assert (anon.value.code, anon.value.status) == ("unauthorized", 401)
        status, _, headers = raw(d.url, "GET", f"/v1/accounts/{acct}")
        assert status == 401 and headers["www-authenticate"].startswith("Bearer")
        assert raw(d.url, "GET", "/v1/openapi.json")[0] == 200
    finally:
        d.close()
