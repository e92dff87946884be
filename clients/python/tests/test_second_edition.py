"""SPEC section 5 through `Client`, against the real daemon: refunds, promo grants,
`affordable`, the account at a past instant, per-account alerts and members."""

from __future__ import annotations

import datetime as dt
import inspect
import time
from typing import Iterator

import pytest

from conftest import Daemon
from creditsd import (
    AsyncClient,
    Client,
    CreditsdError,
    InsufficientCredits,
    MemberCapReached,
    NotFound,
    RefundExceedsDebit,
)

PRICES = {"caption_generation": 1, "face_generation": 5, "sample_image": 3, "video_generation": 8}


@pytest.fixture
def c(daemon: Daemon) -> Iterator[Client]:
    with Client(daemon.url, timeout=10.0, retries=3, backoff=0.05) as client:
        yield client


def afford(available: int) -> dict:
    return {op: available // price for op, price in PRICES.items()}


def test_refund_round_trip(c: Client, acct: str) -> None:
    c.create_account(acct, plan="starter")
    d = c.debit(acct, "sample_image", quantity=2, idempotency_key="job-17")
    assert d.available == 94
    part = c.refund(acct, d.idempotency_key, credits=2, reason="one image failed", idempotency_key="r-1")
    assert (part.kind, part.debit_key, part.debit_seq, part.operation) == ("refund", "job-17", d.seq, "sample_image")
    assert (part.credits, part.refunded, part.returned, part.expired) == (
        2,
        {"monthly": 2, "free": 0, "packs": 0},
        {"monthly": 2, "free": 0, "packs": 0},
        0,
    )
    assert part.available == 96 and part.balances["monthly"] == 46 and part.reason == "one image failed"
    assert part.affordable == afford(96)
    # The same key answers the first answer again.
    again = c.refund(acct, "job-17", credits=2, reason="one image failed", idempotency_key="r-1")
    assert again.duplicate and again.seq == part.seq
    # The rest, by default; then nothing is left.
    rest = c.refund(acct, "job-17", reason="job failed")
    assert rest.credits == 4 and rest.available == 100 and not rest.duplicate
    with pytest.raises(RefundExceedsDebit) as over:
        c.refund(acct, "job-17", credits=1, reason="once more")
    assert (over.value.status, over.value.code, over.value.refundable) == (409, "refund_exceeds_debit", 0)
    with pytest.raises(NotFound) as missing:
        c.refund(acct, "no-such-debit", reason="job failed")
    assert (missing.value.status, missing.value.code) == (404, "debit_not_found")
    # The ledger names the debit; usage credits are net of refunds, counts are not.
    entries = list(c.ledger(acct))
    refunds = [e for e in entries if e.kind == "refund"]
    assert [(e.debit_key, e.credits) for e in refunds] == [("job-17", 4), ("job-17", 2)]
    assert refunds[0].refunded == {"monthly": 4, "free": 0, "packs": 0} and refunds[0].change["monthly"] == 4
    u = c.usage(acct)
    assert sum(p.credits for p in u.periods) == 0 and sum(p.count for p in u.periods) == 2
    assert u.member is None


def test_a_refund_of_more_than_the_debit_is_refused(c: Client, acct: str) -> None:
    c.create_account(acct)
    d = c.debit(acct, "video_generation")
    with pytest.raises(RefundExceedsDebit) as over:
        c.refund(acct, d.idempotency_key, credits=9, reason="too much")
    assert over.value.refundable == 8
    assert c.account(acct).available == 42


def test_promo_grant_is_listed_and_spent_first(c: Client, acct: str) -> None:
    c.create_account(acct, plan="starter")
    expires = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=1)).replace(microsecond=0)
    g = c.grant(acct, "promo", 30, "black friday", expires_at=expires)
    assert (g.bucket, g.credits, g.expires_at, g.grant_id) == ("promo", 30, expires, f"g{g.seq}")
    assert g.balances["promo"] == 30 and g.available == 130 and g.affordable == afford(130)
    a = c.account(acct)
    assert a.balances == {"monthly": 50, "promo": 30, "free": 50, "packs": 0} and a.available == 130
    assert [(b.grant_id, b.credits, b.expires_at) for b in a.promo_blocks] == [(f"g{g.seq}", 30, expires)]
    # The block expires before the monthly credits (at the reset, a month away): spent first.
    d = c.debit(acct, "sample_image", quantity=2)
    assert d.taken == {"monthly": 0, "free": 0, "packs": 0, f"promo:g{g.seq}": 6}
    assert c.account(acct).promo_blocks[0].credits == 24
    # A refund gives it back to the block it came from.
    r = c.refund(acct, d.idempotency_key, reason="job failed")
    assert r.returned == {"monthly": 0, "free": 0, "packs": 0, f"promo:g{g.seq}": 6}
    assert c.account(acct).balances["promo"] == 30
    entry = next(e for e in c.ledger(acct) if e.kind == "grant")
    assert (entry.bucket, entry.grant_id, entry.expires_at) == ("promo", g.grant_id, expires)
    # expires_at is for promo only, and promo needs it.
    with pytest.raises(CreditsdError) as bad:
        c.grant(acct, "packs", 5, "support", expires_at=expires)
    assert (bad.value.status, bad.value.field) == (400, "expires_at")
    with pytest.raises(CreditsdError) as missing:
        c.grant(acct, "promo", 5, "support")
    assert (missing.value.status, missing.value.field) == (400, "expires_at")
    with pytest.raises(CreditsdError) as past:
        c.grant(acct, "promo", 5, "support", expires_at="2020-01-01T00:00:00Z")
    assert (past.value.status, past.value.field) == (400, "expires_at")


def test_affordable_is_in_the_view_and_the_answers(c: Client, acct: str) -> None:
    a = c.create_account(acct)
    assert a.affordable == afford(50) == {
        "caption_generation": 50,
        "face_generation": 10,
        "sample_image": 16,
        "video_generation": 6,
    }
    assert set(a.affordable) == set(c.pricing().operations)
    d = c.debit(acct, "face_generation")
    assert d.affordable == afford(45)
    with c.hold(acct, "video_generation") as h:
        assert h.placed.affordable == afford(37)
    assert c.account(acct).affordable == afford(37)


def test_the_account_at_a_past_instant(c: Client, acct: str) -> None:
    a = c.create_account(acct, plan="starter")
    time.sleep(0.05)
    d = c.debit(acct, "video_generation")
    time.sleep(0.05)
    c.grant(acct, "packs", 10, "support")
    between = a.created_at + (d.time - a.created_at) / 2
    then = c.account(acct, at=between)
    assert (then.available, then.seq, then.plan, then.status) == (100, 1, "starter", "active")
    assert then.as_of is not None and abs(then.as_of - between) < dt.timedelta(milliseconds=1)
    assert then.affordable == afford(100) and then.holds == [] and then.promo_blocks == []
    after = c.account(acct, at=d.time)
    assert after.available == 92 and after.seq == 2
    now = c.account(acct)
    assert now.as_of is None and now.available == 102 and now.balances["packs"] == 10
    with pytest.raises(NotFound) as before:
        c.account(acct, at=a.created_at - dt.timedelta(seconds=5))
    assert before.value.code == "account_not_found"
    with pytest.raises(CreditsdError) as future:
        c.account(acct, at=dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1))
    assert (future.value.status, future.value.field) == (400, "at")


def test_members_caps_and_usage(c: Client, acct: str) -> None:
    c.create_account(acct, plan="starter")
    m = c.set_member(acct, "brand-a", cap_per_period=10)
    assert (m.kind, m.member, m.cap_per_period, m.created) == ("member_set", "brand-a", 10, True)
    c.set_member(acct, "brand-b")
    d = c.debit(acct, "sample_image", quantity=3, member="brand-a")
    assert d.member == "brand-a" and d.credits == 9
    # The pool has 91 credits; the member's cap has 1 left.
    with pytest.raises(MemberCapReached) as capped:
        c.debit(acct, "sample_image", member="brand-a")
    e = capped.value
    assert (e.status, e.code, e.cap, e.used, e.required) == (402, "member_cap_reached", 10, 9, 3)
    assert not isinstance(e, InsufficientCredits)
    assert c.account(acct).available == 91
    c.debit(acct, "caption_generation", member="brand-a")  # exactly the cap
    c.debit(acct, "face_generation", member="brand-b")
    c.debit(acct, "caption_generation")  # the pool itself
    view = {x.member: (x.cap_per_period, x.used_this_period) for x in c.account(acct).members}
    assert view == {"brand-a": (10, 10), "brand-b": (None, 5)}
    # A refund gives the member's use back.
    c.refund(acct, d.idempotency_key, credits=3, reason="failed")
    assert {x.member: x.used_this_period for x in c.account(acct).members}["brand-a"] == 7
    # Usage: one member's, and each member's.
    mine = c.usage(acct, member="brand-a")
    assert mine.member == "brand-a"
    assert sum(p.credits for p in mine.periods) == 7 and sum(p.count for p in mine.periods) == 4
    grouped = c.usage(acct, group_by="member")
    today = [p for p in grouped.periods if p.members][-1]
    assert today.members is not None and set(today.members) == {"brand-a", "brand-b"}
    assert today.members["brand-b"]["face_generation"].credits == 5
    with pytest.raises(CreditsdError) as both:
        c.usage(acct, member="brand-a", group_by="member")
    assert (both.value.status, both.value.field) == (400, "group_by")
    # Batch items and holds name members too.
    rs = c.debit_many(
        [
            {"account": acct, "operation": "caption_generation", "member": "brand-b"},
            {"account": acct, "operation": "video_generation", "member": "brand-a"},
            {"account": acct, "operation": "caption_generation", "member": "nobody"},
        ]
    )
    assert [r.status for r in rs] == [200, 402, 404]
    assert rs[0].debit is not None and rs[0].debit.member == "brand-b"
    assert isinstance(rs[1].error, MemberCapReached) and rs[1].error.used == 7
    assert isinstance(rs[2].error, NotFound) and rs[2].error.code == "member_not_found"
    with c.hold(acct, "caption_generation", member="brand-b") as h:
        assert h.placed.member == "brand-b"
        assert [x.member for x in c.account(acct).holds] == ["brand-b"]
    # Changing the cap; removing; the history stays.
    changed = c.set_member(acct, "brand-a", cap_per_period=None)
    assert (changed.created, changed.cap_per_period) == (False, None)
    c.debit(acct, "video_generation", member="brand-a")
    gone = c.remove_member(acct, "brand-a", idempotency_key="rm-a")
    assert (gone.kind, gone.member) == ("member_removed", "brand-a")
    assert c.remove_member(acct, "brand-a", idempotency_key="rm-a").duplicate
    assert [x.member for x in c.account(acct).members] == ["brand-b"]
    with pytest.raises(NotFound) as unknown:
        c.debit(acct, "caption_generation", member="brand-a")
    assert unknown.value.code == "member_not_found"
    with pytest.raises(NotFound) as again:
        c.remove_member(acct, "brand-a")
    assert again.value.code == "member_not_found"
    kinds = [e.kind for e in c.ledger(acct)]
    assert kinds.count("member_set") == 3 and kinds.count("member_removed") == 1
    assert [e.member for e in c.ledger(acct) if e.kind == "member_removed"] == ["brand-a"]
    assert any(e.kind == "debit" and e.member == "brand-a" for e in c.ledger(acct))


def test_alerts_per_account(c: Client, acct: str) -> None:
    c.create_account(acct, plan="starter")
    a = c.account(acct).alerts
    assert (a.thresholds, a.thresholds_custom, a.forecast_hours, a.forecast_custom) == ([25, 10, 0], False, 24, False)
    c.debit(acct, "caption_generation", quantity=60)  # 40 % of the budget left
    s = c.set_alerts(acct, thresholds=[20, 50], forecast_hours=48)
    assert (s.kind, s.thresholds, s.thresholds_custom, s.forecast_custom, s.forecast_hours) == (
        "alerts_set",
        [50, 20],
        True,
        True,
        48,
    )
    # A new threshold already crossed fires at once.
    assert [(x.type, x.threshold) for x in s.alerts] == [("balance.low", 50)]
    v = c.account(acct).alerts
    assert (v.thresholds, v.thresholds_custom, v.forecast_hours, v.forecast_custom) == ([50, 20], True, 48, True)
    off = c.set_alerts(acct, forecast_hours=None)
    assert (off.thresholds_custom, off.forecast_custom, off.forecast_hours) == (False, True, None)
    v = c.account(acct).alerts
    assert (v.thresholds, v.forecast_hours, v.forecast_custom) == ([25, 10, 0], None, True)
    back = c.set_alerts(acct)
    assert (back.thresholds_custom, back.forecast_custom, back.forecast_hours) == (False, False, None)
    assert c.account(acct).alerts.forecast_hours == 24
    with pytest.raises(CreditsdError) as bad:
        c.set_alerts(acct, thresholds=[1, 2, 3, 4, 5, 6, 7, 8, 9])
    assert (bad.value.status, bad.value.field) == (400, "thresholds")
    entries = [e for e in c.ledger(acct) if e.kind == "alerts_set"]
    assert [e.thresholds for e in entries] == [[25, 10, 0], [25, 10, 0], [50, 20]]
    assert entries[-1].forecast_hours == 48 and entries[0].credits is None


def test_the_twins_have_the_same_methods() -> None:
    def public(cls: type) -> dict:
        return {
            n: inspect.signature(f)
            for n, f in inspect.getmembers(cls, inspect.isfunction)
            if not n.startswith("_") and n not in ("close", "aclose")
        }

    sync, asyn = public(Client), public(AsyncClient)
    assert set(sync) == set(asyn)
    for name, sig in sync.items():
        other = asyn[name]
        assert list(sig.parameters) == list(other.parameters), name
        for p in sig.parameters.values():
            q = other.parameters[p.name]
            assert (p.kind, p.default) == (q.kind, q.default), (name, p.name)
