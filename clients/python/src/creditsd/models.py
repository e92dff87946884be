"""The answers of the API as frozen dataclasses, one per schema of `openapi/openapi.json`.

Field names are the JSON names, except `from` (a Python keyword): `from_plan` in
`PlanChange` and `LedgerEntry`; in `Usage`, `from` and `to` are `start` and `end`. Instants are
timezone-aware `datetime`s in UTC. Per-bucket amounts (`balances`, `taken`, `change`, …) are
plain dicts, keyed by bucket name (`monthly`, `promo`, `free`, `packs`, and `held`/`available`
where the answer has them), so that `account.balances["monthly"]` reads as the JSON does.
Amounts by source (`taken`, `spent`, `returned`, `refunded`) have `monthly`, `free`, `packs`
and one `promo:g<N>` key per promo block drawn from. `affordable` is a dict of operation to
how many times the balance pays for it.

Parsing ignores members it does not know, so a newer daemon does not break an older client;
`tests/test_models.py` checks that every field here is in the document and the other way round.
"""

from __future__ import annotations

import datetime as _dt
import re
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Union

from .errors import CreditsdError

__all__ = [
    "Account",
    "AccountHold",
    "Alert",
    "AlertSettings",
    "AlertsSet",
    "BatchResult",
    "Capture",
    "Debit",
    "Event",
    "Forecast",
    "ForecastPeriod",
    "Grant",
    "HoldPlaced",
    "LedgerEntry",
    "Member",
    "MemberRemoved",
    "MemberSet",
    "Pack",
    "PlanChange",
    "Pricing",
    "PromoBlock",
    "Purchase",
    "Refund",
    "Release",
    "Usage",
    "UsageCell",
    "UsagePeriod",
    "parse_instant",
    "format_instant",
]

Json = Mapping[str, Any]

_INSTANT = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(Z|z|[+-]\d{2}:\d{2})$"
)


def parse_instant(s: str) -> _dt.datetime:
    """An RFC 3339 instant (as the daemon writes them) as an aware `datetime` in UTC."""
    m = _INSTANT.match(s)
    if m is None:
        raise ValueError(f"not an RFC 3339 instant: {s!r}")
    y, mo, d, h, mi, sec, frac, off = m.groups()
    micro = int((frac or "0").ljust(6, "0")[:6])
    if off in ("Z", "z"):
        tz = _dt.timezone.utc
    else:
        sign = 1 if off[0] == "+" else -1
        tz = _dt.timezone(sign * _dt.timedelta(hours=int(off[1:3]), minutes=int(off[4:6])))
    t = _dt.datetime(int(y), int(mo), int(d), int(h), int(mi), int(sec), micro, tzinfo=tz)
    return t.astimezone(_dt.timezone.utc)


def format_instant(t: Union[_dt.datetime, str]) -> str:
    """RFC 3339 in UTC for a query or a body; a naive `datetime` is taken as UTC."""
    if isinstance(t, str):
        return t
    if t.tzinfo is None:
        t = t.replace(tzinfo=_dt.timezone.utc)
    t = t.astimezone(_dt.timezone.utc)
    ms = t.microsecond // 1000
    base = t.strftime("%Y-%m-%dT%H:%M:%S")
    return f"{base}.{ms:03d}Z" if ms else f"{base}Z"


def _ts(d: Json, k: str) -> _dt.datetime:
    return parse_instant(str(d[k]))


def _opt_ts(d: Json, k: str) -> Optional[_dt.datetime]:
    v = d.get(k)
    return None if v is None else parse_instant(str(v))


def _opt_int(d: Json, k: str) -> Optional[int]:
    v = d.get(k)
    return None if v is None else int(v)


def _opt_str(d: Json, k: str) -> Optional[str]:
    v = d.get(k)
    return None if v is None else str(v)


def _amounts(d: Json, k: str) -> Dict[str, int]:
    return {str(b): int(n) for b, n in d[k].items()}


def _opt_amounts(d: Json, k: str) -> Optional[Dict[str, int]]:
    return None if d.get(k) is None else _amounts(d, k)


def _opt_bool(d: Json, k: str) -> Optional[bool]:
    v = d.get(k)
    return None if v is None else bool(v)


def _opt_ints(d: Json, k: str) -> Optional[List[int]]:
    v = d.get(k)
    return None if v is None else [int(x) for x in v]


def _affordable(d: Json) -> Dict[str, int]:
    return {str(op): int(n) for op, n in d.get("affordable", {}).items()}


def _alerts(d: Json) -> List[Alert]:
    return [Alert.from_json(a) for a in d.get("alerts", [])]


@dataclass(frozen=True)
class Alert:
    """An alert a mutation fired: `balance.low` (with `threshold`), `balance.exhausted`
    (threshold 0), `balance.replenished` or `balance.forecast_low` (with
    `projected_exhaustion_at`)."""

    type: str
    threshold: Optional[int]
    projected_exhaustion_at: Optional[_dt.datetime] = None

    @classmethod
    def from_json(cls, d: Json) -> Alert:
        return cls(
            type=str(d["type"]),
            threshold=_opt_int(d, "threshold"),
            projected_exhaustion_at=_opt_ts(d, "projected_exhaustion_at"),
        )


@dataclass(frozen=True)
class AccountHold:
    """An open hold as the account view lists it (schema `Hold`)."""

    hold_id: str
    operation: str
    quantity: int
    credits: int
    taken: Dict[str, int]
    placed_at: _dt.datetime
    expires_at: _dt.datetime
    #: The member it was placed for, or None.
    member: Optional[str]

    @classmethod
    def from_json(cls, d: Json) -> AccountHold:
        return cls(
            hold_id=str(d["hold_id"]),
            operation=str(d["operation"]),
            quantity=int(d["quantity"]),
            credits=int(d["credits"]),
            taken=_amounts(d, "taken"),
            placed_at=_ts(d, "placed_at"),
            expires_at=_ts(d, "expires_at"),
            member=_opt_str(d, "member"),
        )


@dataclass(frozen=True)
class PromoBlock:
    """An open promo block (a `promo` grant): what is left of it and when it expires."""

    grant_id: str
    credits: int
    expires_at: _dt.datetime

    @classmethod
    def from_json(cls, d: Json) -> PromoBlock:
        return cls(grant_id=str(d["grant_id"]), credits=int(d["credits"]), expires_at=_ts(d, "expires_at"))


@dataclass(frozen=True)
class Member:
    """A member of an account (schema `Member`): its cap per billing period (None: no cap)
    and what it used this period."""

    member: str
    cap_per_period: Optional[int]
    used_this_period: int

    @classmethod
    def from_json(cls, d: Json) -> Member:
        return cls(
            member=str(d["member"]),
            cap_per_period=_opt_int(d, "cap_per_period"),
            used_this_period=int(d["used_this_period"]),
        )


@dataclass(frozen=True)
class AlertSettings:
    """The alert settings in force (schema `AlertSettings`): `forecast_hours` None is off;
    the `*_custom` flags say whether the account set its own or follows the config."""

    thresholds: List[int]
    thresholds_custom: bool
    forecast_hours: Optional[int]
    forecast_custom: bool

    @classmethod
    def from_json(cls, d: Json) -> AlertSettings:
        return cls(
            thresholds=[int(x) for x in d["thresholds"]],
            thresholds_custom=bool(d["thresholds_custom"]),
            forecast_hours=_opt_int(d, "forecast_hours"),
            forecast_custom=bool(d["forecast_custom"]),
        )


@dataclass(frozen=True)
class Account:
    """One consistent read of an account (schema `Account`); `as_of` is the instant asked
    for with `account(id, at=...)`, None for a read of now."""

    id: str
    plan: str
    pending_plan: Optional[str]
    status: str
    balances: Dict[str, int]
    available: int
    affordable: Dict[str, int]
    held: int
    holds: List[AccountHold]
    promo_blocks: List[PromoBlock]
    members: List[Member]
    alerts: AlertSettings
    billing_anchor: _dt.datetime
    period_start: _dt.datetime
    next_reset_at: _dt.datetime
    period_budget: int
    created_at: _dt.datetime
    seq: int
    as_of: Optional[_dt.datetime] = None

    @classmethod
    def from_json(cls, d: Json) -> Account:
        return cls(
            id=str(d["id"]),
            plan=str(d["plan"]),
            pending_plan=_opt_str(d, "pending_plan"),
            status=str(d["status"]),
            balances=_amounts(d, "balances"),
            available=int(d["available"]),
            affordable=_affordable(d),
            held=int(d["held"]),
            holds=[AccountHold.from_json(h) for h in d["holds"]],
            promo_blocks=[PromoBlock.from_json(b) for b in d.get("promo_blocks", [])],
            members=[Member.from_json(m) for m in d.get("members", [])],
            alerts=AlertSettings.from_json(d["alerts"]),
            billing_anchor=_ts(d, "billing_anchor"),
            period_start=_ts(d, "period_start"),
            next_reset_at=_ts(d, "next_reset_at"),
            period_budget=int(d["period_budget"]),
            created_at=_ts(d, "created_at"),
            seq=int(d["seq"]),
            as_of=_opt_ts(d, "as_of"),
        )


class _Balances:
    """`available` and `held` of an answer's `balances`, as attributes."""

    balances: Dict[str, int]

    @property
    def available(self) -> int:
        return self.balances["available"]

    @property
    def held(self) -> int:
        return self.balances["held"]


@dataclass(frozen=True)
class Debit(_Balances):
    """A debit's answer (schema `Debit`); `seq` is None for a dry run."""

    account: str
    seq: Optional[int]
    kind: str
    time: _dt.datetime
    operation: str
    quantity: int
    credits: int
    taken: Dict[str, int]
    #: The member it was for, when the request named one.
    member: Optional[str]
    idempotency_key: str
    metadata: Dict[str, str]
    balances: Dict[str, int]
    affordable: Dict[str, int]
    status: str
    alerts: List[Alert]
    duplicate: bool
    dry_run: bool

    @classmethod
    def from_json(cls, d: Json) -> Debit:
        return cls(
            account=str(d["account"]),
            seq=_opt_int(d, "seq"),
            kind=str(d["kind"]),
            time=_ts(d, "time"),
            operation=str(d["operation"]),
            quantity=int(d["quantity"]),
            credits=int(d["credits"]),
            taken=_amounts(d, "taken"),
            member=_opt_str(d, "member"),
            idempotency_key=str(d["idempotency_key"]),
            metadata={str(k): str(v) for k, v in d.get("metadata", {}).items()},
            balances=_amounts(d, "balances"),
            affordable=_affordable(d),
            status=str(d["status"]),
            alerts=_alerts(d),
            duplicate=bool(d["duplicate"]),
            dry_run=bool(d["dry_run"]),
        )


@dataclass(frozen=True)
class BatchResult:
    """One item's result of `debit_many`: `ok` and `debit` when it was charged, else
    `error`; `status` is the HTTP status the single debit would have had (the item's
    `code`)."""

    ok: bool
    status: int
    error: Optional[CreditsdError]
    debit: Optional[Debit]


@dataclass(frozen=True)
class HoldPlaced(_Balances):
    """A placed hold's answer (schema `HoldPlaced`)."""

    account: str
    seq: int
    kind: str
    time: _dt.datetime
    hold_id: str
    operation: str
    quantity: int
    credits: int
    taken: Dict[str, int]
    expires_at: _dt.datetime
    member: Optional[str]
    idempotency_key: str
    balances: Dict[str, int]
    affordable: Dict[str, int]
    status: str
    alerts: List[Alert]
    duplicate: bool
    dry_run: bool

    @classmethod
    def from_json(cls, d: Json) -> HoldPlaced:
        return cls(
            account=str(d["account"]),
            seq=int(d["seq"]),
            kind=str(d["kind"]),
            time=_ts(d, "time"),
            hold_id=str(d["hold_id"]),
            operation=str(d["operation"]),
            quantity=int(d["quantity"]),
            credits=int(d["credits"]),
            taken=_amounts(d, "taken"),
            expires_at=_ts(d, "expires_at"),
            member=_opt_str(d, "member"),
            idempotency_key=str(d["idempotency_key"]),
            balances=_amounts(d, "balances"),
            affordable=_affordable(d),
            status=str(d["status"]),
            alerts=_alerts(d),
            duplicate=bool(d["duplicate"]),
            dry_run=bool(d["dry_run"]),
        )


@dataclass(frozen=True)
class Capture(_Balances):
    """A capture's answer (schema `Capture`): `credits` spent, the rest `returned`."""

    account: str
    seq: int
    kind: str
    time: _dt.datetime
    hold_id: str
    #: The hold's operation and quantity; None only for a capture recorded by v0.1.0.
    operation: Optional[str]
    quantity: Optional[int]
    credits: int
    spent: Dict[str, int]
    returned: Dict[str, int]
    expired: int
    idempotency_key: Optional[str]
    balances: Dict[str, int]
    affordable: Dict[str, int]
    status: str
    alerts: List[Alert]
    duplicate: bool
    dry_run: bool

    @classmethod
    def from_json(cls, d: Json) -> Capture:
        return cls(
            account=str(d["account"]),
            seq=int(d["seq"]),
            kind=str(d["kind"]),
            time=_ts(d, "time"),
            hold_id=str(d["hold_id"]),
            operation=_opt_str(d, "operation"),
            quantity=_opt_int(d, "quantity"),
            credits=int(d["credits"]),
            spent=_amounts(d, "spent"),
            returned=_amounts(d, "returned"),
            expired=int(d["expired"]),
            idempotency_key=_opt_str(d, "idempotency_key"),
            balances=_amounts(d, "balances"),
            affordable=_affordable(d),
            status=str(d["status"]),
            alerts=_alerts(d),
            duplicate=bool(d["duplicate"]),
            dry_run=bool(d["dry_run"]),
        )


@dataclass(frozen=True)
class Release(_Balances):
    """A release's answer (schema `Release`): `credits` returned."""

    account: str
    seq: int
    kind: str
    time: _dt.datetime
    hold_id: str
    credits: int
    returned: Dict[str, int]
    expired: int
    reason: str
    idempotency_key: Optional[str]
    balances: Dict[str, int]
    affordable: Dict[str, int]
    status: str
    alerts: List[Alert]
    duplicate: bool
    dry_run: bool

    @classmethod
    def from_json(cls, d: Json) -> Release:
        return cls(
            account=str(d["account"]),
            seq=int(d["seq"]),
            kind=str(d["kind"]),
            time=_ts(d, "time"),
            hold_id=str(d["hold_id"]),
            credits=int(d["credits"]),
            returned=_amounts(d, "returned"),
            expired=int(d["expired"]),
            reason=str(d["reason"]),
            idempotency_key=_opt_str(d, "idempotency_key"),
            balances=_amounts(d, "balances"),
            affordable=_affordable(d),
            status=str(d["status"]),
            alerts=_alerts(d),
            duplicate=bool(d["duplicate"]),
            dry_run=bool(d["dry_run"]),
        )


@dataclass(frozen=True)
class PlanChange(_Balances):
    """A plan change's answer (schema `PlanChange`; JSON `from` is `from_plan`)."""

    account: str
    seq: int
    kind: str
    time: _dt.datetime
    from_plan: str
    plan: str
    pending: bool
    effective_at: _dt.datetime
    credits: int
    idempotency_key: str
    balances: Dict[str, int]
    affordable: Dict[str, int]
    status: str
    alerts: List[Alert]
    duplicate: bool
    dry_run: bool

    @classmethod
    def from_json(cls, d: Json) -> PlanChange:
        return cls(
            account=str(d["account"]),
            seq=int(d["seq"]),
            kind=str(d["kind"]),
            time=_ts(d, "time"),
            from_plan=str(d["from"]),
            plan=str(d["plan"]),
            pending=bool(d["pending"]),
            effective_at=_ts(d, "effective_at"),
            credits=int(d["credits"]),
            idempotency_key=str(d["idempotency_key"]),
            balances=_amounts(d, "balances"),
            affordable=_affordable(d),
            status=str(d["status"]),
            alerts=_alerts(d),
            duplicate=bool(d["duplicate"]),
            dry_run=bool(d["dry_run"]),
        )


@dataclass(frozen=True)
class Purchase(_Balances):
    """A purchase's answer (schema `Purchase`)."""

    account: str
    seq: int
    kind: str
    time: _dt.datetime
    pack: str
    credits: int
    price_cents: int
    payment_ref: str
    balances: Dict[str, int]
    affordable: Dict[str, int]
    status: str
    alerts: List[Alert]
    duplicate: bool
    dry_run: bool

    @classmethod
    def from_json(cls, d: Json) -> Purchase:
        return cls(
            account=str(d["account"]),
            seq=int(d["seq"]),
            kind=str(d["kind"]),
            time=_ts(d, "time"),
            pack=str(d["pack"]),
            credits=int(d["credits"]),
            price_cents=int(d["price_cents"]),
            payment_ref=str(d["payment_ref"]),
            balances=_amounts(d, "balances"),
            affordable=_affordable(d),
            status=str(d["status"]),
            alerts=_alerts(d),
            duplicate=bool(d["duplicate"]),
            dry_run=bool(d["dry_run"]),
        )


@dataclass(frozen=True)
class Grant(_Balances):
    """A grant's answer (schema `Grant`)."""

    account: str
    seq: int
    kind: str
    time: _dt.datetime
    bucket: str
    credits: int
    reason: str
    #: When the block expires and the block's id (`g<seq>`), for a `promo` grant.
    expires_at: Optional[_dt.datetime]
    grant_id: Optional[str]
    idempotency_key: str
    balances: Dict[str, int]
    affordable: Dict[str, int]
    status: str
    alerts: List[Alert]
    duplicate: bool
    dry_run: bool

    @classmethod
    def from_json(cls, d: Json) -> Grant:
        return cls(
            account=str(d["account"]),
            seq=int(d["seq"]),
            kind=str(d["kind"]),
            time=_ts(d, "time"),
            bucket=str(d["bucket"]),
            credits=int(d["credits"]),
            reason=str(d["reason"]),
            expires_at=_opt_ts(d, "expires_at"),
            grant_id=_opt_str(d, "grant_id"),
            idempotency_key=str(d["idempotency_key"]),
            balances=_amounts(d, "balances"),
            affordable=_affordable(d),
            status=str(d["status"]),
            alerts=_alerts(d),
            duplicate=bool(d["duplicate"]),
            dry_run=bool(d["dry_run"]),
        )


@dataclass(frozen=True)
class Refund(_Balances):
    """A refund's answer (schema `Refund`): `credits` refunded of the debit under
    `debit_key`, by source in `refunded`; `returned` went back, `expired` did not (its
    source had expired since)."""

    account: str
    seq: int
    kind: str
    time: _dt.datetime
    debit_key: str
    debit_seq: int
    operation: str
    credits: int
    refunded: Dict[str, int]
    returned: Dict[str, int]
    expired: int
    reason: str
    member: Optional[str]
    idempotency_key: str
    balances: Dict[str, int]
    affordable: Dict[str, int]
    status: str
    alerts: List[Alert]
    duplicate: bool
    dry_run: bool

    @classmethod
    def from_json(cls, d: Json) -> Refund:
        return cls(
            account=str(d["account"]),
            seq=int(d["seq"]),
            kind=str(d["kind"]),
            time=_ts(d, "time"),
            debit_key=str(d["debit_key"]),
            debit_seq=int(d["debit_seq"]),
            operation=str(d["operation"]),
            credits=int(d["credits"]),
            refunded=_amounts(d, "refunded"),
            returned=_amounts(d, "returned"),
            expired=int(d["expired"]),
            reason=str(d["reason"]),
            member=_opt_str(d, "member"),
            idempotency_key=str(d["idempotency_key"]),
            balances=_amounts(d, "balances"),
            affordable=_affordable(d),
            status=str(d["status"]),
            alerts=_alerts(d),
            duplicate=bool(d["duplicate"]),
            dry_run=bool(d["dry_run"]),
        )


@dataclass(frozen=True)
class AlertsSet(_Balances):
    """The answer to `set_alerts` (schema `AlertsSet`): the thresholds in force, highest
    first. `forecast_hours` is the account's own horizon when `forecast_custom` (None:
    off); when not custom it is None and the config's applies."""

    account: str
    seq: int
    kind: str
    time: _dt.datetime
    thresholds: List[int]
    thresholds_custom: bool
    forecast_custom: bool
    forecast_hours: Optional[int]
    idempotency_key: str
    balances: Dict[str, int]
    affordable: Dict[str, int]
    status: str
    alerts: List[Alert]
    duplicate: bool
    dry_run: bool

    @classmethod
    def from_json(cls, d: Json) -> AlertsSet:
        return cls(
            account=str(d["account"]),
            seq=int(d["seq"]),
            kind=str(d["kind"]),
            time=_ts(d, "time"),
            thresholds=[int(x) for x in d["thresholds"]],
            thresholds_custom=bool(d["thresholds_custom"]),
            forecast_custom=bool(d["forecast_custom"]),
            forecast_hours=_opt_int(d, "forecast_hours"),
            idempotency_key=str(d["idempotency_key"]),
            balances=_amounts(d, "balances"),
            affordable=_affordable(d),
            status=str(d["status"]),
            alerts=_alerts(d),
            duplicate=bool(d["duplicate"]),
            dry_run=bool(d["dry_run"]),
        )


@dataclass(frozen=True)
class MemberSet(_Balances):
    """The answer to `set_member` (schema `MemberSet`): `created` is False when it changed
    an existing member's cap."""

    account: str
    seq: int
    kind: str
    time: _dt.datetime
    member: str
    cap_per_period: Optional[int]
    created: bool
    idempotency_key: str
    balances: Dict[str, int]
    affordable: Dict[str, int]
    status: str
    alerts: List[Alert]
    duplicate: bool
    dry_run: bool

    @classmethod
    def from_json(cls, d: Json) -> MemberSet:
        return cls(
            account=str(d["account"]),
            seq=int(d["seq"]),
            kind=str(d["kind"]),
            time=_ts(d, "time"),
            member=str(d["member"]),
            cap_per_period=_opt_int(d, "cap_per_period"),
            created=bool(d["created"]),
            idempotency_key=str(d["idempotency_key"]),
            balances=_amounts(d, "balances"),
            affordable=_affordable(d),
            status=str(d["status"]),
            alerts=_alerts(d),
            duplicate=bool(d["duplicate"]),
            dry_run=bool(d["dry_run"]),
        )


@dataclass(frozen=True)
class MemberRemoved(_Balances):
    """The answer to `remove_member` (schema `MemberRemoved`)."""

    account: str
    seq: int
    kind: str
    time: _dt.datetime
    member: str
    idempotency_key: str
    balances: Dict[str, int]
    affordable: Dict[str, int]
    status: str
    alerts: List[Alert]
    duplicate: bool
    dry_run: bool

    @classmethod
    def from_json(cls, d: Json) -> MemberRemoved:
        return cls(
            account=str(d["account"]),
            seq=int(d["seq"]),
            kind=str(d["kind"]),
            time=_ts(d, "time"),
            member=str(d["member"]),
            idempotency_key=str(d["idempotency_key"]),
            balances=_amounts(d, "balances"),
            affordable=_affordable(d),
            status=str(d["status"]),
            alerts=_alerts(d),
            duplicate=bool(d["duplicate"]),
            dry_run=bool(d["dry_run"]),
        )


@dataclass(frozen=True)
class LedgerEntry:
    """One ledger entry (schemas `LedgerEntry_<kind>`): the fields every entry has, and
    those of its `kind` (None where the kind has none; JSON `from` is `from_plan`)."""

    seq: int
    time: _dt.datetime
    kind: str
    change: Dict[str, int]
    balance_after: Dict[str, int]
    alerts: List[Alert]
    #: None for the kinds that move no credits (alerts_set, member_set, member_removed).
    credits: Optional[int] = None
    operation: Optional[str] = None
    quantity: Optional[int] = None
    taken: Optional[Dict[str, int]] = None
    idempotency_key: Optional[str] = None
    metadata: Optional[Dict[str, str]] = None
    plan: Optional[str] = None
    billing_anchor: Optional[_dt.datetime] = None
    period: Optional[int] = None
    expired: Optional[int] = None
    from_plan: Optional[str] = None
    pending: Optional[bool] = None
    effective_at: Optional[_dt.datetime] = None
    pack: Optional[str] = None
    price_cents: Optional[int] = None
    payment_ref: Optional[str] = None
    bucket: Optional[str] = None
    reason: Optional[str] = None
    hold_id: Optional[str] = None
    expires_at: Optional[_dt.datetime] = None
    spent: Optional[Dict[str, int]] = None
    returned: Optional[Dict[str, int]] = None
    member: Optional[str] = None
    debit_key: Optional[str] = None
    debit_seq: Optional[int] = None
    refunded: Optional[Dict[str, int]] = None
    grant_id: Optional[str] = None
    thresholds: Optional[List[int]] = None
    thresholds_custom: Optional[bool] = None
    forecast_custom: Optional[bool] = None
    forecast_hours: Optional[int] = None
    cap_per_period: Optional[int] = None
    created: Optional[bool] = None

    @classmethod
    def from_json(cls, d: Json) -> LedgerEntry:
        md = d.get("metadata")
        pending = d.get("pending")
        return cls(
            seq=int(d["seq"]),
            time=_ts(d, "time"),
            kind=str(d["kind"]),
            credits=_opt_int(d, "credits"),
            change=_amounts(d, "change"),
            balance_after=_amounts(d, "balance_after"),
            alerts=_alerts(d),
            operation=_opt_str(d, "operation"),
            quantity=_opt_int(d, "quantity"),
            taken=_opt_amounts(d, "taken"),
            idempotency_key=_opt_str(d, "idempotency_key"),
            metadata=None if md is None else {str(k): str(v) for k, v in md.items()},
            plan=_opt_str(d, "plan"),
            billing_anchor=_opt_ts(d, "billing_anchor"),
            period=_opt_int(d, "period"),
            expired=_opt_int(d, "expired"),
            from_plan=_opt_str(d, "from"),
            pending=None if pending is None else bool(pending),
            effective_at=_opt_ts(d, "effective_at"),
            pack=_opt_str(d, "pack"),
            price_cents=_opt_int(d, "price_cents"),
            payment_ref=_opt_str(d, "payment_ref"),
            bucket=_opt_str(d, "bucket"),
            reason=_opt_str(d, "reason"),
            hold_id=_opt_str(d, "hold_id"),
            expires_at=_opt_ts(d, "expires_at"),
            spent=_opt_amounts(d, "spent"),
            returned=_opt_amounts(d, "returned"),
            member=_opt_str(d, "member"),
            debit_key=_opt_str(d, "debit_key"),
            debit_seq=_opt_int(d, "debit_seq"),
            refunded=_opt_amounts(d, "refunded"),
            grant_id=_opt_str(d, "grant_id"),
            thresholds=_opt_ints(d, "thresholds"),
            thresholds_custom=_opt_bool(d, "thresholds_custom"),
            forecast_custom=_opt_bool(d, "forecast_custom"),
            forecast_hours=_opt_int(d, "forecast_hours"),
            cap_per_period=_opt_int(d, "cap_per_period"),
            created=_opt_bool(d, "created"),
        )


@dataclass(frozen=True)
class UsageCell:
    """Units (`count`, the sum of the quantities) and credits."""

    count: int
    credits: int

    @classmethod
    def from_json(cls, d: Json) -> UsageCell:
        return cls(count=int(d["count"]), credits=int(d["credits"]))


@dataclass(frozen=True)
class UsagePeriod:
    """One UTC day or month: totals and `operations` by name (credits net of refunds);
    with `group_by="member"`, `members` maps each member to its operations."""

    start: _dt.datetime
    end: _dt.datetime
    count: int
    credits: int
    operations: Dict[str, UsageCell]
    members: Optional[Dict[str, Dict[str, UsageCell]]] = None

    @classmethod
    def from_json(cls, d: Json) -> UsagePeriod:
        ms = d.get("members")
        return cls(
            start=_ts(d, "start"),
            end=_ts(d, "end"),
            count=int(d["count"]),
            credits=int(d["credits"]),
            operations={str(k): UsageCell.from_json(v) for k, v in d["operations"].items()},
            members=None
            if ms is None
            else {str(m): {str(k): UsageCell.from_json(v) for k, v in ops.items()} for m, ops in ms.items()},
        )


@dataclass(frozen=True)
class Usage:
    """Usage trends (schema `Usage`; JSON `from` is `start`, `to` is `end`)."""

    account: str
    granularity: str
    start: _dt.datetime
    end: _dt.datetime
    #: The member asked for with `member=`; None otherwise.
    member: Optional[str]
    periods: List[UsagePeriod]

    @classmethod
    def from_json(cls, d: Json) -> Usage:
        return cls(
            account=str(d["account"]),
            granularity=str(d["granularity"]),
            start=_ts(d, "from"),
            end=_ts(d, "to"),
            member=_opt_str(d, "member"),
            periods=[UsagePeriod.from_json(p) for p in d["periods"]],
        )


@dataclass(frozen=True)
class ForecastPeriod:
    """The last billing period that ended and the credits used in it."""

    start: _dt.datetime
    end: _dt.datetime
    credits: int

    @classmethod
    def from_json(cls, d: Json) -> ForecastPeriod:
        return cls(start=_ts(d, "start"), end=_ts(d, "end"), credits=int(d["credits"]))


@dataclass(frozen=True)
class Forecast:
    """Burn rates (credits per day), projected exhaustion and the plan suggestion."""

    account: str
    as_of: _dt.datetime
    available: int
    burn_rate_7d: float
    burn_rate_30d: float
    credits_7d: int
    credits_30d: int
    window_7d_start: _dt.datetime
    window_30d_start: _dt.datetime
    projected_exhaustion_at: Optional[_dt.datetime]
    plan: str
    last_period: Optional[ForecastPeriod]
    suggested_plan: Optional[str]

    @classmethod
    def from_json(cls, d: Json) -> Forecast:
        lp = d.get("last_period")
        return cls(
            account=str(d["account"]),
            as_of=_ts(d, "as_of"),
            available=int(d["available"]),
            burn_rate_7d=float(d["burn_rate_7d"]),
            burn_rate_30d=float(d["burn_rate_30d"]),
            credits_7d=int(d["credits_7d"]),
            credits_30d=int(d["credits_30d"]),
            window_7d_start=_ts(d, "window_7d_start"),
            window_30d_start=_ts(d, "window_30d_start"),
            projected_exhaustion_at=_opt_ts(d, "projected_exhaustion_at"),
            plan=str(d["plan"]),
            last_period=None if lp is None else ForecastPeriod.from_json(lp),
            suggested_plan=_opt_str(d, "suggested_plan"),
        )


@dataclass(frozen=True)
class Pack:
    """A pack of the price list."""

    credits: int
    price_cents: int

    @classmethod
    def from_json(cls, d: Json) -> Pack:
        return cls(credits=int(d["credits"]), price_cents=int(d["price_cents"]))


@dataclass(frozen=True)
class Pricing:
    """The price list as configured."""

    operations: Dict[str, int]
    plans: Dict[str, int]
    packs: Dict[str, Pack]
    free_tier: int
    thresholds: List[int]
    hold_ttl_seconds: int

    @classmethod
    def from_json(cls, d: Json) -> Pricing:
        return cls(
            operations=_amounts(d, "operations"),
            plans=_amounts(d, "plans"),
            packs={str(k): Pack.from_json(v) for k, v in d["packs"].items()},
            free_tier=int(d["free_tier"]),
            thresholds=[int(t) for t in d["thresholds"]],
            hold_ttl_seconds=int(d["hold_ttl_seconds"]),
        )


@dataclass(frozen=True)
class Event:
    """A notification of the feed (schema `FeedEvent`), as `/v1/events` lists it and a
    webhook delivers it."""

    id: int
    type: str
    account: str
    seq: int
    time: _dt.datetime
    balances: Dict[str, int]
    threshold: Optional[int]
    projected_exhaustion_at: Optional[_dt.datetime] = None

    @classmethod
    def from_json(cls, d: Json) -> Event:
        return cls(
            id=int(d["id"]),
            type=str(d["type"]),
            account=str(d["account"]),
            seq=int(d["seq"]),
            time=_ts(d, "time"),
            balances=_amounts(d, "balances"),
            threshold=_opt_int(d, "threshold"),
            projected_exhaustion_at=_opt_ts(d, "projected_exhaustion_at"),
        )
