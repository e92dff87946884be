"""`Client` (blocking) and `AsyncClient` (asyncio): the same methods, the second awaited.

Both send the requests that `_core` describes, retry them under its policy, and turn error
answers into the exceptions of `creditsd.errors`.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from types import TracebackType
from typing import (
    Any,
    AsyncIterator,
    Awaitable,
    Callable,
    Deque,
    Dict,
    Generator,
    Iterable,
    Iterator,
    List,
    Mapping,
    Optional,
    Sequence,
    Type,
    TypeVar,
    Union,
)

import httpx

from . import _core
from ._core import Answer, Call, ForecastHours, Instant, RetryPolicy
from .errors import CreditsdError
from .models import (
    Account,
    AlertsSet,
    BatchResult,
    Capture,
    Debit,
    Event,
    Forecast,
    Grant,
    HoldPlaced,
    LedgerEntry,
    MemberRemoved,
    MemberSet,
    PlanChange,
    Pricing,
    Purchase,
    Refund,
    Release,
    Usage,
)

T = TypeVar("T")

__all__ = ["Client", "AsyncClient", "Hold", "AsyncHold", "EventStream", "AsyncEventStream"]


class Client:
    """A blocking client.

    `base_url` is the daemon (`http://127.0.0.1:8640` by default); `token` a bearer token
    (None when the daemon has no tokens configured); `timeout` seconds per attempt (a
    request that may wait, `wait_seconds`, gets that much more); `retries` the most
    retries of one request. Mutations the caller gives no idempotency key (or, for a
    purchase, no `payment_ref`) get a UUID4, the same for every retry, so a retried debit
    is charged once.
    """

    def __init__(
        self,
        base_url: str = _core.DEFAULT_URL,
        token: Optional[str] = None,
        timeout: float = 10.0,
        retries: int = 5,
        *,
        backoff: float = 0.1,
        backoff_max: float = 10.0,
        headers: Optional[Mapping[str, str]] = None,
        transport: Optional[httpx.BaseTransport] = None,
    ) -> None:
        self.timeout = timeout
        self._policy = RetryPolicy(retries, backoff, backoff_max)
        self._http = httpx.Client(
            base_url=base_url,
            headers=_core.headers(token, headers),
            timeout=timeout,
            transport=transport,
        )

    # -- plumbing --

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.close()

    def _send(self, call: Call[Any]) -> Answer:
        attempt = 0
        while True:
            try:
                resp = self._http.request(
                    call.method,
                    call.path,
                    params=call.params,
                    json=call.body,
                    timeout=self.timeout + call.wait,
                )
            except httpx.TransportError as e:
                if not _core.retriable(e) or attempt >= self._policy.retries:
                    raise _core.transport_error(e, attempt + 1) from e
                delay = self._policy.delay(attempt, None)
            else:
                if resp.status_code not in _core.RETRY_STATUSES or attempt >= self._policy.retries:
                    return Answer(resp.status_code, _core.decode(resp), attempt + 1, resp.headers)
                delay = self._policy.delay(attempt, resp.headers.get("Retry-After"))
                resp.close()
            time.sleep(delay)
            attempt += 1

    def _run(self, call: Call[T]) -> T:
        return _core.result(call, self._send(call))

    # -- accounts --

    def create_account(
        self, id: str, plan: Optional[str] = None, billing_anchor: Optional[Instant] = None
    ) -> Account:
        """Creates an account (with the free tier). A retry that finds the account exists
        (the first attempt created it, its answer was lost) answers the account."""
        call = _core.create_account(id, plan, billing_anchor)
        answer = self._send(call)
        if answer.status == 409 and answer.attempts > 1 and _code(answer) == "account_exists":
            return self.account(id)
        return _core.result(call, answer)

    def account(self, id: str, at: Optional[Instant] = None) -> Account:
        """The account now, or with `at` as it stood at that past instant (`as_of` set;
        `NotFound` before it existed, `CreditsdError` `history_pruned` (410) before the
        retained history)."""
        return self._run(_core.get_account(id, at))

    # -- debits --

    def debit(
        self,
        account: str,
        operation: str,
        quantity: Optional[int] = None,
        *,
        idempotency_key: Optional[str] = None,
        metadata: Optional[Mapping[str, str]] = None,
        dry_run: bool = False,
        wait_seconds: Optional[int] = None,
        member: Optional[str] = None,
    ) -> Debit:
        """Debits price × quantity, as `member` when given. Raises `InsufficientCredits`
        (402) when short, `MemberCapReached` (402) past the member's cap, `NotFound` for
        an unknown member."""
        return self._run(
            _core.debit(account, operation, quantity, idempotency_key, metadata, dry_run, wait_seconds, member)
        )

    def debit_many(self, items: Iterable[Mapping[str, Any]]) -> List[BatchResult]:
        """Debits every item (`account`, `operation`, `quantity?`, `idempotency_key?`,
        `metadata?`, `member?`), 1000 a request; one result per item, in order. An item's refusal
        is in its result; a whole request that fails (after retries) raises, and the
        chunks before it stay charged (their keys make a repeat of them harmless only
        when the caller passed keys)."""
        prepared = _core.batch_items(items)
        out: List[BatchResult] = []
        for chunk in _core.chunks(prepared):
            results: List[BatchResult] = self._run(_core.debit_batch(chunk))
            out.extend(results)
        return out

    # -- holds --

    def hold(
        self,
        account: str,
        operation: str,
        quantity: Optional[int] = None,
        *,
        ttl_seconds: Optional[int] = None,
        idempotency_key: Optional[str] = None,
        wait_seconds: Optional[int] = None,
        member: Optional[str] = None,
    ) -> Hold:
        """Places a hold (as `member` when given) and answers its handle, also a context
        manager: on a normal exit from `with` it is captured (all of it) unless captured
        or released already, on an exception it is released."""
        placed = self._run(
            _core.place_hold(account, operation, quantity, ttl_seconds, idempotency_key, wait_seconds, member)
        )
        return Hold(self, placed)

    def capture(
        self, account: str, hold_id: str, credits: Optional[int] = None, *, idempotency_key: Optional[str] = None
    ) -> Capture:
        return self._run(_core.capture(account, hold_id, credits, idempotency_key))

    def release(self, account: str, hold_id: str, *, idempotency_key: Optional[str] = None) -> Release:
        return self._run(_core.release(account, hold_id, idempotency_key))

    # -- billing --

    def purchase(self, account: str, pack: str, payment_ref: Optional[str] = None) -> Purchase:
        return self._run(_core.purchase(account, pack, payment_ref))

    def change_plan(self, account: str, plan: str, *, idempotency_key: Optional[str] = None) -> PlanChange:
        return self._run(_core.change_plan(account, plan, idempotency_key))

    def grant(
        self,
        account: str,
        bucket: str,
        credits: int,
        reason: str,
        *,
        idempotency_key: Optional[str] = None,
        expires_at: Optional[Instant] = None,
    ) -> Grant:
        """Adds credits to a bucket; `bucket="promo"` needs `expires_at` (in the future)
        and makes a block of its own."""
        return self._run(_core.grant(account, bucket, credits, reason, idempotency_key, expires_at))

    def refund(
        self,
        account: str,
        debit_key: str,
        credits: Optional[int] = None,
        *,
        reason: str,
        idempotency_key: Optional[str] = None,
    ) -> Refund:
        """Refunds the debit made with idempotency key `debit_key` (all that is left of it
        by default). `NotFound` (`debit_not_found`) when there is none (or its key is no
        longer remembered), `RefundExceedsDebit` (409, `.refundable`) when asking more."""
        return self._run(_core.refund(account, debit_key, credits, reason, idempotency_key))

    # -- settings --

    def set_alerts(
        self,
        account: str,
        thresholds: Optional[Sequence[int]] = None,
        forecast_hours: ForecastHours = "config",
        *,
        idempotency_key: Optional[str] = None,
    ) -> AlertsSet:
        """The account's own alert settings: `thresholds` (None: the config's) and
        `forecast_hours` (1-720; None turns the forecast alert off; "config": the
        config's)."""
        return self._run(_core.set_alerts(account, thresholds, forecast_hours, idempotency_key))

    def set_member(
        self, account: str, member: str, cap_per_period: Optional[int] = None, *, idempotency_key: Optional[str] = None
    ) -> MemberSet:
        """Creates the member or changes its cap (credits per billing period; None: no cap)."""
        return self._run(_core.set_member(account, member, cap_per_period, idempotency_key))

    def remove_member(self, account: str, member: str, *, idempotency_key: Optional[str] = None) -> MemberRemoved:
        """Removes the member (its history stays); `NotFound` (`member_not_found`) when absent."""
        return self._run(_core.remove_member(account, member, idempotency_key))

    # -- reads --

    def ledger(self, account: str, page_size: int = 100) -> Iterator[LedgerEntry]:
        """Every entry, newest first, across pages of `page_size` (1-500)."""
        before: Optional[str] = None
        while True:
            entries, before = self._run(_core.ledger_page(account, page_size, before))
            yield from entries
            if before is None:
                return

    def usage(
        self,
        account: str,
        start: Optional[Instant] = None,
        end: Optional[Instant] = None,
        granularity: str = "day",
        member: Optional[str] = None,
        group_by: Optional[str] = None,
    ) -> Usage:
        """Usage per day or month; `member=` one member's only, `group_by="member"` each
        member's too (`UsagePeriod.members`)."""
        return self._run(_core.usage(account, start, end, granularity, member, group_by))

    def forecast(self, account: str) -> Forecast:
        return self._run(_core.forecast(account))

    def pricing(self) -> Pricing:
        return self._run(_core.pricing())

    def events(
        self,
        after: Union[int, str] = 0,
        wait_seconds: int = 30,
        stop_when_idle: bool = False,
        limit: int = 100,
    ) -> EventStream:
        """Follows the feed from the cursor `after` (0: the start). Each poll waits up to
        `wait_seconds` for something new; with `stop_when_idle` the iteration ends at the
        first poll that brings nothing. `.cursor` of the stream is where to resume."""
        return EventStream(
            lambda cursor: self._run(_core.events_page(cursor, limit, wait_seconds)),
            str(after),
            stop_when_idle,
        )


class Hold:
    """A placed hold: `capture()` or `release()` it, or use it in `with`."""

    def __init__(self, client: Client, placed: HoldPlaced) -> None:
        self._client = client
        self.placed = placed
        self.account = placed.account
        self.hold_id = placed.hold_id
        self.credits = placed.credits
        self.expires_at = placed.expires_at
        #: The capture or release that closed it, once one did.
        self.closed: Optional[Union[Capture, Release]] = None

    def capture(self, credits: Optional[int] = None, *, idempotency_key: Optional[str] = None) -> Capture:
        c = self._client.capture(self.account, self.hold_id, credits, idempotency_key=idempotency_key)
        self.closed = c
        return c

    def release(self, *, idempotency_key: Optional[str] = None) -> Release:
        r = self._client.release(self.account, self.hold_id, idempotency_key=idempotency_key)
        self.closed = r
        return r

    def __enter__(self) -> Hold:
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        if self.closed is not None:
            return
        if exc_type is None:
            self.capture()
            return
        # The block failed: give the credits back. A failure to do so must not hide the
        # block's own exception; the hold then expires at its TTL.
        try:
            self.release()
        except CreditsdError:
            pass


class EventStream:
    """An iterator over the feed; `cursor` is the feed cursor after the events handed out
    so far (it moves page by page: resuming from it may repeat events of the page in
    progress, so deduplicate on `Event.id`)."""

    def __init__(self, fetch: Callable[[str], _core.EventPage], after: str, stop_when_idle: bool) -> None:
        self._fetch = fetch
        self.cursor = after
        self._stop = stop_when_idle
        self._buf: Deque[Event] = deque()
        self._page_next: Optional[str] = None

    def __iter__(self) -> EventStream:
        return self

    def __next__(self) -> Event:
        while not self._buf:
            events, nxt = self._fetch(self.cursor)
            if not events:
                self.cursor = nxt
                if self._stop:
                    raise StopIteration
                continue
            self._buf.extend(events)
            self._page_next = nxt
        ev = self._buf.popleft()
        if not self._buf and self._page_next is not None:
            self.cursor, self._page_next = self._page_next, None
        return ev


def _code(answer: Answer) -> Optional[str]:
    body = answer.body
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        code = body["error"].get("code")
        return code if isinstance(code, str) else None
    return None


class AsyncClient:
    """The asyncio twin of `Client`: the same methods and arguments, awaited; `hold` is
    used with `async with` (or awaited), `ledger` and `events` with `async for`."""

    def __init__(
        self,
        base_url: str = _core.DEFAULT_URL,
        token: Optional[str] = None,
        timeout: float = 10.0,
        retries: int = 5,
        *,
        backoff: float = 0.1,
        backoff_max: float = 10.0,
        headers: Optional[Mapping[str, str]] = None,
        transport: Optional[httpx.AsyncBaseTransport] = None,
    ) -> None:
        self.timeout = timeout
        self._policy = RetryPolicy(retries, backoff, backoff_max)
        self._http = httpx.AsyncClient(
            base_url=base_url,
            headers=_core.headers(token, headers),
            timeout=timeout,
            transport=transport,
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        await self.aclose()

    async def _send(self, call: Call[Any]) -> Answer:
        attempt = 0
        while True:
            try:
                resp = await self._http.request(
                    call.method,
                    call.path,
                    params=call.params,
                    json=call.body,
                    timeout=self.timeout + call.wait,
                )
            except httpx.TransportError as e:
                if not _core.retriable(e) or attempt >= self._policy.retries:
                    raise _core.transport_error(e, attempt + 1) from e
                delay = self._policy.delay(attempt, None)
            else:
                if resp.status_code not in _core.RETRY_STATUSES or attempt >= self._policy.retries:
                    return Answer(resp.status_code, _core.decode(resp), attempt + 1, resp.headers)
                delay = self._policy.delay(attempt, resp.headers.get("Retry-After"))
                await resp.aclose()
            await asyncio.sleep(delay)
            attempt += 1

    async def _run(self, call: Call[T]) -> T:
        return _core.result(call, await self._send(call))

    async def create_account(
        self, id: str, plan: Optional[str] = None, billing_anchor: Optional[Instant] = None
    ) -> Account:
        call = _core.create_account(id, plan, billing_anchor)
        answer = await self._send(call)
        if answer.status == 409 and answer.attempts > 1 and _code(answer) == "account_exists":
            return await self.account(id)
        return _core.result(call, answer)

    async def account(self, id: str, at: Optional[Instant] = None) -> Account:
        return await self._run(_core.get_account(id, at))

    async def debit(
        self,
        account: str,
        operation: str,
        quantity: Optional[int] = None,
        *,
        idempotency_key: Optional[str] = None,
        metadata: Optional[Mapping[str, str]] = None,
        dry_run: bool = False,
        wait_seconds: Optional[int] = None,
        member: Optional[str] = None,
    ) -> Debit:
        return await self._run(
            _core.debit(account, operation, quantity, idempotency_key, metadata, dry_run, wait_seconds, member)
        )

    async def debit_many(self, items: Iterable[Mapping[str, Any]]) -> List[BatchResult]:
        prepared = _core.batch_items(items)
        out: List[BatchResult] = []
        for chunk in _core.chunks(prepared):
            results: List[BatchResult] = await self._run(_core.debit_batch(chunk))
            out.extend(results)
        return out

    def hold(
        self,
        account: str,
        operation: str,
        quantity: Optional[int] = None,
        *,
        ttl_seconds: Optional[int] = None,
        idempotency_key: Optional[str] = None,
        wait_seconds: Optional[int] = None,
        member: Optional[str] = None,
    ) -> _AsyncHoldPlacement:
        """`h = await c.hold(...)`, or `async with c.hold(...) as h:` (captured on a normal
        exit, released on an exception)."""
        call = _core.place_hold(account, operation, quantity, ttl_seconds, idempotency_key, wait_seconds, member)
        return _AsyncHoldPlacement(self, call)

    async def capture(
        self, account: str, hold_id: str, credits: Optional[int] = None, *, idempotency_key: Optional[str] = None
    ) -> Capture:
        return await self._run(_core.capture(account, hold_id, credits, idempotency_key))

    async def release(self, account: str, hold_id: str, *, idempotency_key: Optional[str] = None) -> Release:
        return await self._run(_core.release(account, hold_id, idempotency_key))

    async def purchase(self, account: str, pack: str, payment_ref: Optional[str] = None) -> Purchase:
        return await self._run(_core.purchase(account, pack, payment_ref))

    async def change_plan(self, account: str, plan: str, *, idempotency_key: Optional[str] = None) -> PlanChange:
        return await self._run(_core.change_plan(account, plan, idempotency_key))

    async def grant(
        self,
        account: str,
        bucket: str,
        credits: int,
        reason: str,
        *,
        idempotency_key: Optional[str] = None,
        expires_at: Optional[Instant] = None,
    ) -> Grant:
        return await self._run(_core.grant(account, bucket, credits, reason, idempotency_key, expires_at))

    async def refund(
        self,
        account: str,
        debit_key: str,
        credits: Optional[int] = None,
        *,
        reason: str,
        idempotency_key: Optional[str] = None,
    ) -> Refund:
        return await self._run(_core.refund(account, debit_key, credits, reason, idempotency_key))

    async def set_alerts(
        self,
        account: str,
        thresholds: Optional[Sequence[int]] = None,
        forecast_hours: ForecastHours = "config",
        *,
        idempotency_key: Optional[str] = None,
    ) -> AlertsSet:
        return await self._run(_core.set_alerts(account, thresholds, forecast_hours, idempotency_key))

    async def set_member(
        self, account: str, member: str, cap_per_period: Optional[int] = None, *, idempotency_key: Optional[str] = None
    ) -> MemberSet:
        return await self._run(_core.set_member(account, member, cap_per_period, idempotency_key))

    async def remove_member(
        self, account: str, member: str, *, idempotency_key: Optional[str] = None
    ) -> MemberRemoved:
        return await self._run(_core.remove_member(account, member, idempotency_key))

    async def ledger(self, account: str, page_size: int = 100) -> AsyncIterator[LedgerEntry]:
        before: Optional[str] = None
        while True:
            entries, before = await self._run(_core.ledger_page(account, page_size, before))
            for e in entries:
                yield e
            if before is None:
                return

    async def usage(
        self,
        account: str,
        start: Optional[Instant] = None,
        end: Optional[Instant] = None,
        granularity: str = "day",
        member: Optional[str] = None,
        group_by: Optional[str] = None,
    ) -> Usage:
        return await self._run(_core.usage(account, start, end, granularity, member, group_by))

    async def forecast(self, account: str) -> Forecast:
        return await self._run(_core.forecast(account))

    async def pricing(self) -> Pricing:
        return await self._run(_core.pricing())

    def events(
        self,
        after: Union[int, str] = 0,
        wait_seconds: int = 30,
        stop_when_idle: bool = False,
        limit: int = 100,
    ) -> AsyncEventStream:
        return AsyncEventStream(
            lambda cursor: self._run(_core.events_page(cursor, limit, wait_seconds)),
            str(after),
            stop_when_idle,
        )


class AsyncHold:
    """A placed hold of `AsyncClient`."""

    def __init__(self, client: AsyncClient, placed: HoldPlaced) -> None:
        self._client = client
        self.placed = placed
        self.account = placed.account
        self.hold_id = placed.hold_id
        self.credits = placed.credits
        self.expires_at = placed.expires_at
        self.closed: Optional[Union[Capture, Release]] = None

    async def capture(self, credits: Optional[int] = None, *, idempotency_key: Optional[str] = None) -> Capture:
        c = await self._client.capture(self.account, self.hold_id, credits, idempotency_key=idempotency_key)
        self.closed = c
        return c

    async def release(self, *, idempotency_key: Optional[str] = None) -> Release:
        r = await self._client.release(self.account, self.hold_id, idempotency_key=idempotency_key)
        self.closed = r
        return r

    async def __aenter__(self) -> AsyncHold:
        return self

    async def __aexit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        if self.closed is not None:
            return
        if exc_type is None:
            await self.capture()
            return
        try:
            await self.release()
        except CreditsdError:
            pass


class _AsyncHoldPlacement:
    """What `AsyncClient.hold` answers: awaitable (places the hold) and an async context
    manager (places it on entry, captures or releases it on exit)."""

    def __init__(self, client: AsyncClient, call: Call[HoldPlaced]) -> None:
        self._client = client
        self._call = call
        self._hold: Optional[AsyncHold] = None

    async def _place(self) -> AsyncHold:
        placed = await self._client._run(self._call)
        self._hold = AsyncHold(self._client, placed)
        return self._hold

    def __await__(self) -> Generator[Any, None, AsyncHold]:
        return self._place().__await__()

    async def __aenter__(self) -> AsyncHold:
        return await self._place()

    async def __aexit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        if self._hold is not None:
            await self._hold.__aexit__(exc_type, exc, tb)


class AsyncEventStream:
    """The async twin of `EventStream`."""

    def __init__(
        self, fetch: Callable[[str], Awaitable[_core.EventPage]], after: str, stop_when_idle: bool
    ) -> None:
        self._fetch = fetch
        self.cursor = after
        self._stop = stop_when_idle
        self._buf: Deque[Event] = deque()
        self._page_next: Optional[str] = None

    def __aiter__(self) -> AsyncEventStream:
        return self

    async def __anext__(self) -> Event:
        while not self._buf:
            events, nxt = await self._fetch(self.cursor)
            if not events:
                self.cursor = nxt
                if self._stop:
                    raise StopAsyncIteration
                continue
            self._buf.extend(events)
            self._page_next = nxt
        ev = self._buf.popleft()
        if not self._buf and self._page_next is not None:
            self.cursor, self._page_next = self._page_next, None
        return ev

