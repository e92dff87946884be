"""What the sync and the async client share: the requests of every route (path, query,
body, how to read the answer), idempotency keys, and the retry policy. Neither does I/O
here; `Client` and `AsyncClient` send the requests and sleep between attempts."""

from __future__ import annotations

import datetime as _dt
import email.utils
import random
import urllib.parse
import uuid
from dataclasses import dataclass, field
from typing import (
    Any,
    Callable,
    Dict,
    Generic,
    Iterable,
    List,
    Literal,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    TypeVar,
    Union,
)

import httpx

from .errors import CreditsdError, error_from_body
from .models import (
    Account,
    BatchResult,
    Capture,
    Debit,
    Event,
    Forecast,
    Grant,
    HoldPlaced,
    AlertsSet,
    LedgerEntry,
    MemberRemoved,
    MemberSet,
    PlanChange,
    Pricing,
    Purchase,
    Refund,
    Release,
    Usage,
    format_instant,
)

T = TypeVar("T")

DEFAULT_URL = "http://127.0.0.1:8640"
#: Items per `POST /v1/debits` (`[limits] batch_items_max`).
BATCH_MAX = 1000
#: Statuses that mean "not now" rather than "no": retried, after `Retry-After`.
RETRY_STATUSES = (429, 503)
#: A `Retry-After` longer than this is cut to it: a client never sleeps for minutes.
RETRY_AFTER_MAX_S = 60.0

Instant = Union[_dt.datetime, str]
#: `forecast_hours` of `set_alerts`: hours (1-720), None (off) or "config" (left out: the
#: config's `[alerts] forecast_hours`).
ForecastHours = Union[int, None, Literal["config"]]


def new_key() -> str:
    """An idempotency key for a request the caller gave none: a UUID4."""
    return str(uuid.uuid4())


def seg(s: str) -> str:
    """One path segment: percent-encoded, `:` kept (ids like `acme:team-2`), and the dot
    segments `.` and `..` (valid ids) encoded so that no URL normalisation removes them."""
    if s in (".", ".."):
        return s.replace(".", "%2E")
    return urllib.parse.quote(s, safe=":")


def acct(account: str, *rest: str) -> str:
    return "/".join(["/v1/accounts", seg(account), *(seg(r) for r in rest)])


@dataclass
class Call(Generic[T]):
    """One request and how to read its successful answer."""

    method: str
    path: str
    parse: Callable[[Any], T]
    params: Optional[Dict[str, str]] = None
    body: Optional[Dict[str, Any]] = None
    #: Seconds the daemon may legitimately hold the request (`wait_seconds`), added to the
    #: client's timeout.
    wait: float = 0.0


@dataclass
class Answer:
    status: int
    body: Any
    attempts: int
    headers: Mapping[str, str] = field(default_factory=dict)


def decode(resp: httpx.Response) -> Any:
    try:
        return resp.json()
    except ValueError:
        return None


def result(call: Call[T], answer: Answer) -> T:
    if 200 <= answer.status < 300:
        return call.parse(answer.body)
    raise error_from_body(answer.status, answer.body)


class RetryPolicy:
    """At most `retries` retries of transport errors, timeouts, 429 and 503; the wait is
    the answer's `Retry-After` when it has one, else exponential backoff from `backoff`
    seconds doubling up to `backoff_max`, with "equal jitter" (half of it random) so that
    many clients do not retry in step."""

    def __init__(self, retries: int, backoff: float, backoff_max: float) -> None:
        if retries < 0:
            raise ValueError("retries must be >= 0")
        self.retries = retries
        self.backoff = backoff
        self.backoff_max = backoff_max
        self._rng = random.Random()

    def backoff_delay(self, attempt: int) -> float:
        cap = min(self.backoff_max, self.backoff * (1 << min(attempt, 30)))
        return cap / 2 + self._rng.uniform(0, cap / 2)

    def delay(self, attempt: int, retry_after: Optional[str]) -> float:
        """The wait before retry number `attempt + 1` (attempt counts from 0)."""
        honoured = parse_retry_after(retry_after)
        if honoured is None:
            return self.backoff_delay(attempt)
        # A little jitter on top, never less than the server asked for.
        return min(honoured, RETRY_AFTER_MAX_S) + self._rng.uniform(0, self.backoff)


def parse_retry_after(value: Optional[str]) -> Optional[float]:
    """`Retry-After` as seconds: delta-seconds or an HTTP date; None if absent or bad."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=_dt.timezone.utc)
    return max(0.0, (when - _dt.datetime.now(_dt.timezone.utc)).total_seconds())


def retriable(exc: Exception) -> bool:
    """A transport failure worth another attempt: timeouts, connection failures, a
    connection closed before the answer. Not a malformed URL or a local protocol misuse."""
    return isinstance(exc, (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError))


def transport_error(exc: Exception, attempts: int) -> CreditsdError:
    e = CreditsdError(
        "transport_error",
        0,
        f"no answer after {attempts} attempt{'s' if attempts != 1 else ''}: {type(exc).__name__}: {exc}",
    )
    e.__cause__ = exc
    return e


def headers(token: Optional[str], extra: Optional[Mapping[str, str]]) -> Dict[str, str]:
    h = {"Accept": "application/json", "User-Agent": "creditsd-python/0.1.0"}
    if token is not None:
        h["Authorization"] = f"Bearer {token}"
    if extra:
        h.update(extra)
    return h


def _drop_none(d: Dict[str, Any]) -> Dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


# ---- the routes ----


def create_account(id: str, plan: Optional[str], billing_anchor: Optional[Instant]) -> Call[Account]:
    return Call(
        "POST",
        "/v1/accounts",
        Account.from_json,
        body=_drop_none(
            {
                "id": id,
                "plan": plan,
                "billing_anchor": None if billing_anchor is None else format_instant(billing_anchor),
            }
        ),
    )


def get_account(account: str, at: Optional[Instant] = None) -> Call[Account]:
    params = None if at is None else {"at": format_instant(at)}
    return Call("GET", acct(account), Account.from_json, params=params)


def debit(
    account: str,
    operation: str,
    quantity: Optional[int],
    idempotency_key: Optional[str],
    metadata: Optional[Mapping[str, str]],
    dry_run: bool,
    wait_seconds: Optional[int],
    member: Optional[str] = None,
) -> Call[Debit]:
    body = _drop_none(
        {
            "operation": operation,
            "quantity": quantity,
            "idempotency_key": idempotency_key or new_key(),
            "metadata": None if metadata is None else dict(metadata),
            "member": member,
            "dry_run": True if dry_run else None,
            "wait_seconds": wait_seconds,
        }
    )
    return Call("POST", acct(account, "debits"), Debit.from_json, body=body, wait=float(wait_seconds or 0))


def batch_items(items: Iterable[Mapping[str, Any]]) -> List[Dict[str, Any]]:
    """The items as the batch sends them, each with its idempotency key (made here when
    absent, so that every retry of the chunk sends the same keys)."""
    out = []
    for item in items:
        d = {k: v for k, v in item.items() if v is not None}
        if not d.get("idempotency_key"):
            d["idempotency_key"] = new_key()
        out.append(d)
    return out


def _batch_result(r: Mapping[str, Any]) -> BatchResult:
    code = int(r["code"])
    if "error" in r:
        return BatchResult(ok=False, status=code, error=error_from_body(code, r), debit=None)
    return BatchResult(ok=True, status=code, error=None, debit=Debit.from_json(r))


def debit_batch(chunk: Sequence[Dict[str, Any]]) -> Call[List[BatchResult]]:
    def parse(body: Any) -> List[BatchResult]:
        results = [_batch_result(r) for r in body["results"]]
        if len(results) != len(chunk):
            raise CreditsdError(
                "bad_answer", 200, f"{len(results)} results for a batch of {len(chunk)} items"
            )
        return results

    return Call("POST", "/v1/debits", parse, body={"debits": list(chunk)})


def chunks(items: Sequence[Dict[str, Any]], size: int = BATCH_MAX) -> List[Sequence[Dict[str, Any]]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def place_hold(
    account: str,
    operation: str,
    quantity: Optional[int],
    ttl_seconds: Optional[int],
    idempotency_key: Optional[str],
    wait_seconds: Optional[int],
    member: Optional[str] = None,
) -> Call[HoldPlaced]:
    body = _drop_none(
        {
            "operation": operation,
            "quantity": quantity,
            "idempotency_key": idempotency_key or new_key(),
            "ttl_seconds": ttl_seconds,
            "wait_seconds": wait_seconds,
            "member": member,
        }
    )
    return Call("POST", acct(account, "holds"), HoldPlaced.from_json, body=body, wait=float(wait_seconds or 0))


def capture(account: str, hold_id: str, credits: Optional[int], idempotency_key: Optional[str]) -> Call[Capture]:
    body = _drop_none({"credits": credits, "idempotency_key": idempotency_key or new_key()})
    return Call("POST", acct(account, "holds", hold_id, "capture"), Capture.from_json, body=body)


def release(account: str, hold_id: str, idempotency_key: Optional[str]) -> Call[Release]:
    body = {"idempotency_key": idempotency_key or new_key()}
    return Call("POST", acct(account, "holds", hold_id, "release"), Release.from_json, body=body)


def change_plan(account: str, plan: str, idempotency_key: Optional[str]) -> Call[PlanChange]:
    body = {"plan": plan, "idempotency_key": idempotency_key or new_key()}
    return Call("PUT", acct(account, "plan"), PlanChange.from_json, body=body)


def purchase(account: str, pack: str, payment_ref: Optional[str]) -> Call[Purchase]:
    body = {"pack": pack, "payment_ref": payment_ref or new_key()}
    return Call("POST", acct(account, "purchases"), Purchase.from_json, body=body)


def grant(
    account: str,
    bucket: str,
    credits: int,
    reason: str,
    idempotency_key: Optional[str],
    expires_at: Optional[Instant] = None,
) -> Call[Grant]:
    body: Dict[str, Any] = {
        "bucket": bucket,
        "credits": credits,
        "reason": reason,
        "idempotency_key": idempotency_key or new_key(),
    }
    if expires_at is not None:
        body["expires_at"] = format_instant(expires_at)
    return Call("POST", acct(account, "grants"), Grant.from_json, body=body)


def refund(
    account: str, debit_key: str, credits: Optional[int], reason: str, idempotency_key: Optional[str]
) -> Call[Refund]:
    body = _drop_none({"credits": credits, "reason": reason, "idempotency_key": idempotency_key or new_key()})
    return Call("POST", acct(account, "debits", debit_key, "refund"), Refund.from_json, body=body)


def set_alerts(
    account: str,
    thresholds: Optional[Sequence[int]],
    forecast_hours: ForecastHours,
    idempotency_key: Optional[str],
) -> Call[AlertsSet]:
    body: Dict[str, Any] = {"idempotency_key": idempotency_key or new_key()}
    if thresholds is not None:
        body["thresholds"] = [int(t) for t in thresholds]
    if forecast_hours != "config":
        body["forecast_hours"] = forecast_hours
    return Call("PUT", acct(account, "alerts"), AlertsSet.from_json, body=body)


def set_member(
    account: str, member: str, cap_per_period: Optional[int], idempotency_key: Optional[str]
) -> Call[MemberSet]:
    body = {"cap_per_period": cap_per_period, "idempotency_key": idempotency_key or new_key()}
    return Call("PUT", acct(account, "members", member), MemberSet.from_json, body=body)


def remove_member(account: str, member: str, idempotency_key: Optional[str]) -> Call[MemberRemoved]:
    params = {"idempotency_key": idempotency_key or new_key()}
    return Call("DELETE", acct(account, "members", member), MemberRemoved.from_json, params=params)


LedgerPage = Tuple[List[LedgerEntry], Optional[str]]


def ledger_page(account: str, page_size: int, before: Optional[str]) -> Call[LedgerPage]:
    def parse(body: Any) -> LedgerPage:
        nxt = body.get("next")
        return [LedgerEntry.from_json(e) for e in body["entries"]], None if nxt is None else str(nxt)

    params = _drop_none({"limit": str(page_size), "before": before})
    return Call("GET", acct(account, "ledger"), parse, params=params)


def usage(
    account: str,
    start: Optional[Instant],
    end: Optional[Instant],
    granularity: str,
    member: Optional[str] = None,
    group_by: Optional[str] = None,
) -> Call[Usage]:
    params = _drop_none(
        {
            "from": None if start is None else format_instant(start),
            "to": None if end is None else format_instant(end),
            "granularity": granularity,
            "member": member,
            "group_by": group_by,
        }
    )
    return Call("GET", acct(account, "usage"), Usage.from_json, params=params)


def forecast(account: str) -> Call[Forecast]:
    return Call("GET", acct(account, "forecast"), Forecast.from_json)


def pricing() -> Call[Pricing]:
    return Call("GET", "/v1/pricing", Pricing.from_json)


EventPage = Tuple[List[Event], str]


def events_page(after: str, limit: int, wait_seconds: int) -> Call[EventPage]:
    def parse(body: Any) -> EventPage:
        events = [Event.from_json(e) for e in body["events"]]
        nxt = body.get("next")
        # `next` is the cursor to go on from; with nothing new it is the cursor given.
        return events, after if nxt is None else str(nxt)

    params = {"after": after, "limit": str(limit), "wait_seconds": str(wait_seconds)}
    return Call("GET", "/v1/events", parse, params=params, wait=float(wait_seconds))
