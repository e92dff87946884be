"""Python client of creditsd, the credits accounting daemon.

    from creditsd import Client
    c = Client("http://127.0.0.1:8640", token=None, timeout=10.0, retries=5)
    c.create_account("acct-1", plan="starter")
    d = c.debit("acct-1", "sample_image", quantity=2, metadata={"job": "17"})
    c.refund("acct-1", d.idempotency_key, credits=None, reason="job failed")

`Client` blocks; `AsyncClient` has the same methods, awaited. Every error is a
`CreditsdError` with `.code` and `.status`; see `creditsd.errors`. `creditsd.webhooks`
verifies webhook signatures.
"""

from ._client import AsyncClient, AsyncEventStream, AsyncHold, Client, EventStream, Hold
from .errors import (
    CreditsdError,
    IdempotencyConflict,
    InsufficientCredits,
    MemberCapReached,
    NotFound,
    RefundExceedsDebit,
)
from .models import (
    Account,
    AccountHold,
    Alert,
    AlertSettings,
    AlertsSet,
    BatchResult,
    Capture,
    Debit,
    Event,
    Forecast,
    ForecastPeriod,
    Grant,
    HoldPlaced,
    LedgerEntry,
    Member,
    MemberRemoved,
    MemberSet,
    Pack,
    PlanChange,
    Pricing,
    PromoBlock,
    Purchase,
    Refund,
    Release,
    Usage,
    UsageCell,
    UsagePeriod,
)

__version__ = "0.1.0"

__all__ = [
    "Client",
    "AsyncClient",
    "Hold",
    "AsyncHold",
    "EventStream",
    "AsyncEventStream",
    "CreditsdError",
    "InsufficientCredits",
    "IdempotencyConflict",
    "NotFound",
    "MemberCapReached",
    "RefundExceedsDebit",
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
]
