"""Retries through a proxy that loses, delays and refuses answers: a retried request keeps
its idempotency key, so the daemon charges once; 429 and 503 wait for `Retry-After`; a
refusal is never retried."""

from __future__ import annotations

import time
from typing import Any, List

import pytest

from conftest import Daemon, Proxy
from creditsd import Client, CreditsdError, InsufficientCredits, NotFound
from creditsd._core import RetryPolicy, parse_retry_after


def keys(sent: List[Any]) -> List[str]:
    return [body["idempotency_key"] for _, _, body, _ in sent]


def client(proxy: Proxy, **kw: Any) -> Client:
    kw.setdefault("retries", 3)
    kw.setdefault("backoff", 0.05)
    return Client(proxy.url, **kw)


def test_a_lost_answer_is_retried_with_the_same_key_and_charged_once(proxy: Proxy, acct: str) -> None:
    with client(proxy) as c:
        c.create_account(acct)
        proxy.plan("drop")
        d = c.debit(acct, "sample_image")
        sent = proxy.sent(f"/{acct}/debits")
        assert len(sent) == 2 and keys(sent)[0] == keys(sent)[1]
        assert d.duplicate, "the second attempt finds the first one's debit"
        assert c.account(acct).available == 47
        assert [e.kind for e in c.ledger(acct)] == ["debit", "account_created"]


def test_a_timeout_is_retried_and_charged_once(proxy: Proxy, acct: str) -> None:
    with client(proxy, timeout=1.0) as c:
        c.create_account(acct)
        proxy.plan("delay:2.5")
        d = c.debit(acct, "video_generation")
        assert d.duplicate and len(proxy.sent(f"/{acct}/debits")) == 2
        assert c.account(acct).available == 42


@pytest.mark.parametrize("status", ["503", "429"])
def test_503_and_429_wait_for_retry_after(proxy: Proxy, acct: str, status: str) -> None:
    with client(proxy) as c:
        c.create_account(acct)
        proxy.plan(status)
        d = c.debit(acct, "caption_generation")
        sent = proxy.sent(f"/{acct}/debits")
        assert len(sent) == 2 and keys(sent)[0] == keys(sent)[1]
        assert sent[1][3] - sent[0][3] >= 1.0, "Retry-After: 1 is honoured"
        assert not d.duplicate, "the proxy answered the first one: the daemon saw one"
        assert c.account(acct).available == 49


def test_a_503_after_the_work_is_a_duplicate_on_retry(proxy: Proxy, acct: str) -> None:
    with client(proxy) as c:
        c.create_account(acct)
        proxy.plan("503-after")
        d = c.debit(acct, "caption_generation")
        assert d.duplicate and c.account(acct).available == 49


def test_refusals_are_not_retried(proxy: Proxy, acct: str) -> None:
    with client(proxy) as c:
        c.create_account(acct)
        with pytest.raises(InsufficientCredits):
            c.debit(acct, "face_generation", quantity=100)
        assert len(proxy.sent(f"/{acct}/debits")) == 1
        with pytest.raises(NotFound):
            c.debit("no-such-" + acct, "face_generation")
        assert len(proxy.sent(f"/no-such-{acct}/debits")) == 1
        with pytest.raises(CreditsdError) as bad:
            c.debit(acct, "face_generation", quantity=0)
        assert bad.value.status == 400 and len(proxy.sent(f"/{acct}/debits")) == 2


def test_retries_run_out(proxy: Proxy, acct: str) -> None:
    with client(proxy, retries=2) as c:
        proxy.plan("refuse", "refuse", "refuse")
        with pytest.raises(CreditsdError) as e:
            c.account(acct)
        assert (e.value.code, e.value.status) == ("transport_error", 0)
        assert "3 attempts" in e.value.message
        assert len(proxy.sent(f"/{acct}")) == 3
    with client(proxy, retries=1) as c:
        proxy.plan("503", "503")
        with pytest.raises(CreditsdError) as e:
            c.account(acct)
        assert (e.value.code, e.value.status) == ("unavailable", 503)


def test_every_mutation_keeps_its_key_across_retries(proxy: Proxy, acct: str) -> None:
    with client(proxy) as c:
        c.create_account(acct)
        for call in (
            lambda: c.purchase(acct, "pack_100"),
            lambda: c.change_plan(acct, "growth"),
            lambda: c.grant(acct, bucket="packs", credits=5, reason="retry test"),
        ):
            proxy.plan("drop")
            assert call().duplicate
        h = c.hold(acct, "video_generation")
        proxy.plan("drop")
        assert h.capture(credits=3).duplicate
        assert c.account(acct).available == 50 + 200 + 100 + 5 - 3
        for _, path, body, _ in proxy.sent(acct):
            if body is not None and "/v1/accounts" != path:
                assert body.get("idempotency_key") or body.get("payment_ref"), path
        bodies = [b for _, p, b, _ in proxy.sent("/purchases")]
        assert bodies[0]["payment_ref"] == bodies[1]["payment_ref"]


def test_a_create_whose_answer_was_lost_answers_the_account(proxy: Proxy, acct: str) -> None:
    with client(proxy) as c:
        proxy.plan("drop")
        a = c.create_account(acct, plan="starter")
        assert a.id == acct and a.available == 100
        assert len(proxy.sent("/v1/accounts")) >= 2


def test_a_lost_batch_answer_charges_each_item_once(proxy: Proxy, acct: str) -> None:
    with client(proxy, timeout=30.0) as c:
        c.create_account(acct)
        c.grant(acct, bucket="packs", credits=5000, reason="batch retry")
        proxy.plan("drop")
        rs = c.debit_many([{"account": acct, "operation": "caption_generation"} for _ in range(1500)])
        assert all(r.ok for r in rs) and len(rs) == 1500
        assert [r.debit.duplicate for r in rs[:1000] if r.debit] == [True] * 1000
        assert c.account(acct).available == 5050 - 1500
        sent = proxy.sent("/v1/debits")
        assert len(sent) == 3 and sent[0][2] == sent[1][2]


def test_backoff_is_exponential_jittered_and_capped() -> None:
    p = RetryPolicy(retries=5, backoff=0.1, backoff_max=1.0)
    for attempt, cap in [(0, 0.1), (1, 0.2), (2, 0.4), (3, 0.8), (4, 1.0), (9, 1.0)]:
        ds = [p.delay(attempt, None) for _ in range(200)]
        assert all(cap / 2 <= d <= cap for d in ds), (attempt, min(ds), max(ds))
        assert len(set(ds)) > 100, "jittered"
    assert 3.0 <= p.delay(0, "3") <= 3.1
    assert 60.0 <= p.delay(0, "3600") <= 60.1, "a huge Retry-After is capped"
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None


def test_the_client_retries_a_daemon_that_restarts(daemon: Daemon, acct: str) -> None:
    """A connection refused (nothing listening yet) is a transport error, retried."""
    d = Daemon("")
    try:
        url = d.url
        with Client(url, retries=2, backoff=0.05) as c:
            c.create_account(acct)
        d.terminate()
        start = time.monotonic()
        with Client(url, retries=2, backoff=0.05) as c:
            with pytest.raises(CreditsdError) as e:
                c.account(acct)
        assert e.value.code == "transport_error" and time.monotonic() - start < 5
    finally:
        d.close()
