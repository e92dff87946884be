"""`AsyncClient`, the awaited twin: each test runs its coroutine with asyncio.run."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any, Awaitable, Callable, List, TypeVar

import pytest

from conftest import Daemon, Proxy
from creditsd import AsyncClient, CreditsdError, IdempotencyConflict, InsufficientCredits, NotFound
from creditsd.models import Capture, Release

T = TypeVar("T")


def run(daemon_url: str, body: Callable[[AsyncClient], Awaitable[T]], **kw: Any) -> T:
    async def main() -> T:
        async with AsyncClient(daemon_url, retries=3, backoff=0.05, **kw) as c:
            return await body(c)

    return asyncio.run(main())


def test_accounts_debits_and_errors(daemon: Daemon, acct: str) -> None:
    async def body(c: AsyncClient) -> None:
        a = await c.create_account(acct, plan="starter")
        assert a.available == 100
        d = await c.debit(acct, "sample_image", quantity=2, metadata={"job": "17"})
        assert (d.credits, d.taken["monthly"], d.available) == (6, 6, 94)
        again = await c.debit(acct, "sample_image", quantity=2, metadata={"job": "17"}, idempotency_key=d.idempotency_key)
        assert again.duplicate
        with pytest.raises(IdempotencyConflict):
            await c.debit(acct, "sample_image", idempotency_key=d.idempotency_key)
        with pytest.raises(InsufficientCredits) as short:
            await c.debit(acct, "face_generation", quantity=100)
        assert (short.value.required, short.value.available) == (500, 94)
        with pytest.raises(NotFound):
            await c.account("no-such-" + acct)
        assert (await c.account(acct)).available == 94

    run(daemon.url, body)


def test_debit_many_2500(daemon: Daemon, acct: str) -> None:
    async def body(c: AsyncClient) -> None:
        await c.create_account(acct)
        await c.grant(acct, bucket="packs", credits=3000, reason="async batch")
        items = [{"account": acct, "operation": "caption_generation", "idempotency_key": f"a-{i}"} for i in range(2500)]
        items[1700] = {"account": acct, "operation": "nope", "idempotency_key": "a-1700"}
        rs = await c.debit_many(items)
        assert len(rs) == 2500 and [i for i, r in enumerate(rs) if not r.ok] == [1700]
        assert rs[1700].status == 400 and rs[1700].error is not None and rs[1700].error.field == "operation"
        assert rs[2499].debit is not None and rs[2499].debit.idempotency_key == "a-2499"
        assert (await c.account(acct)).available == 3050 - 2499

    run(daemon.url, body, timeout=30.0)


def test_hold_async_with_both_ways(daemon: Daemon, acct: str) -> None:
    async def body(c: AsyncClient) -> None:
        await c.create_account(acct)
        async with c.hold(acct, "video_generation", ttl_seconds=60) as h:
            assert (await c.account(acct)).held == 8
        assert isinstance(h.closed, Capture) and (await c.account(acct)).available == 42
        with pytest.raises(ValueError):
            async with c.hold(acct, "video_generation") as h2:
                raise ValueError("render failed")
        assert isinstance(h2.closed, Release) and (await c.account(acct)).available == 42
        h3 = await c.hold(acct, "sample_image")
        cap = await h3.capture(credits=1)
        assert cap.credits == 1 and (await c.account(acct)).available == 41
        async with c.hold(acct, "sample_image") as h4:
            await h4.release()
        assert isinstance(h4.closed, Release) and (await c.account(acct)).available == 41
        with pytest.raises(CreditsdError) as closed:
            await c.capture(acct, h4.hold_id)
        assert closed.value.code == "hold_closed"

    run(daemon.url, body)


def test_billing_reads_and_iterators(daemon: Daemon, acct: str) -> None:
    async def body(c: AsyncClient) -> None:
        await c.create_account(acct, plan="starter")
        assert (await c.purchase(acct, "pack_250")).credits == 250
        assert (await c.change_plan(acct, "agency")).credits == 450
        assert (await c.grant(acct, bucket="free", credits=5, reason="sorry")).balances["free"] == 55
        for i in range(4):
            await c.debit(acct, "face_generation", idempotency_key=f"af-{i}")
        kinds: List[str] = [e.kind async for e in c.ledger(acct, page_size=3)]
        assert kinds == ["debit"] * 4 + ["grant", "plan_change", "purchase", "account_created"]
        now = dt.datetime.now(dt.timezone.utc)
        u = await c.usage(acct, now - dt.timedelta(days=1), now + dt.timedelta(hours=1))
        assert sum(p.credits for p in u.periods) == 20
        f = await c.forecast(acct)
        assert f.credits_7d == 20 and f.plan == "agency"
        p = await c.pricing()
        assert p.hold_ttl_seconds == 900
        # The period budget is 100 + 250 + 450 + 5 = 805; 785 left, minus 765: 20 (2.5 %).
        await c.debit(acct, "caption_generation", quantity=765)
        stream = c.events(after=0, wait_seconds=1, stop_when_idle=True)
        mine = [(e.type, e.threshold) async for e in stream if e.account == acct]
        assert mine == [
            ("purchase.completed", None),
            ("plan.changed", None),
            ("balance.low", 25),
            ("balance.low", 10),
            # 785 credits burnt today, 20 left: out within the forecast horizon.
            ("balance.forecast_low", None),
        ]
        assert stream.cursor != "0"

    run(daemon.url, body)


def test_retry_through_the_proxy(proxy: Proxy, acct: str) -> None:
    async def body(c: AsyncClient) -> None:
        await c.create_account(acct)
        proxy.plan("drop")
        d = await c.debit(acct, "video_generation")
        assert d.duplicate and (await c.account(acct)).available == 42
        proxy.plan("503")
        assert not (await c.debit(acct, "caption_generation")).duplicate
        sent = [b["idempotency_key"] for _, _, b, _ in proxy.sent(f"/{acct}/debits")]
        assert len(sent) == 4 and sent[0] == sent[1] and sent[2] == sent[3]
        with pytest.raises(InsufficientCredits):
            await c.debit(acct, "face_generation", quantity=100)
        assert len(proxy.sent(f"/{acct}/debits")) == 5

    run(proxy.url, body)


def test_second_edition_twins(daemon: Daemon, acct: str) -> None:
    """Refund, promo grant, members, alerts and `at=` through the awaited twin."""
    from creditsd import MemberCapReached, RefundExceedsDebit

    async def body(c: AsyncClient) -> None:
        a = await c.create_account(acct, plan="starter")
        assert a.affordable["video_generation"] == 12 and a.balances["promo"] == 0
        expires = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=2)
        g = await c.grant(acct, "promo", 20, "welcome", expires_at=expires)
        assert g.expires_at is not None and g.balances["promo"] == 20
        m = await c.set_member(acct, "seat-1", cap_per_period=5)
        assert m.created
        d = await c.debit(acct, "face_generation", member="seat-1")
        assert d.member == "seat-1" and d.taken[f"promo:g{g.seq}"] == 5
        with pytest.raises(MemberCapReached) as capped:
            await c.debit(acct, "caption_generation", member="seat-1")
        assert (capped.value.cap, capped.value.used) == (5, 5)
        r = await c.refund(acct, d.idempotency_key, reason="job failed")
        assert r.credits == 5 and r.member == "seat-1"
        with pytest.raises(RefundExceedsDebit):
            await c.refund(acct, d.idempotency_key, credits=1, reason="again")
        view = await c.account(acct)
        assert [(x.member, x.used_this_period) for x in view.members] == [("seat-1", 0)]
        assert [b.credits for b in view.promo_blocks] == [20]
        s = await c.set_alerts(acct, thresholds=[30], forecast_hours=None)
        assert s.thresholds == [30] and s.forecast_custom and s.forecast_hours is None
        past = await c.account(acct, at=g.time)
        assert past.as_of is not None and past.balances["promo"] == 20 and past.members == []
        u = await c.usage(acct, member="seat-1")
        assert u.member == "seat-1"
        gone = await c.remove_member(acct, "seat-1")
        assert gone.kind == "member_removed"
        with pytest.raises(NotFound):
            await c.remove_member(acct, "seat-1")

    run(daemon.url, body)
