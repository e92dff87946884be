"""The errors the client raises: one family, every member with `.code` and `.status`.

`code` is the daemon's stable error code (`insufficient_credits`, `account_not_found`, …);
`status` the HTTP status. A request that never got an answer (the daemon unreachable after
every retry) is a `CreditsdError` with code `transport_error` and status 0.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Type

__all__ = [
    "CreditsdError",
    "InsufficientCredits",
    "MemberCapReached",
    "NotFound",
    "IdempotencyConflict",
    "RefundExceedsDebit",
    "error_from_body",
]


class CreditsdError(Exception):
    """An answer that is an error, or no answer at all."""

    code: str
    status: int
    message: str
    field: Optional[str]
    body: Dict[str, Any]

    def __init__(
        self,
        code: str,
        status: int,
        message: str,
        field: Optional[str] = None,
        body: Optional[Mapping[str, Any]] = None,
    ) -> None:
        super().__init__(f"{status} {code}: {message}" if status else f"{code}: {message}")
        self.code = code
        self.status = status
        self.message = message
        self.field = field
        self.body = dict(body) if body is not None else {}


class InsufficientCredits(CreditsdError):
    """402 `insufficient_credits`: nothing was taken."""

    required: int
    available: int

    def __init__(
        self,
        code: str,
        status: int,
        message: str,
        field: Optional[str] = None,
        body: Optional[Mapping[str, Any]] = None,
    ) -> None:
        super().__init__(code, status, message, field, body)
        detail = _detail(self.body)
        self.required = int(detail.get("required", 0))
        self.available = int(detail.get("available", 0))


class MemberCapReached(CreditsdError):
    """402 `member_cap_reached`: the member named would pass its cap per period (even when
    the pool has credits); nothing was taken. `.cap`, `.used` (this period) and
    `.required` (what the request needs)."""

    cap: int
    used: int
    required: int

    def __init__(
        self,
        code: str,
        status: int,
        message: str,
        field: Optional[str] = None,
        body: Optional[Mapping[str, Any]] = None,
    ) -> None:
        super().__init__(code, status, message, field, body)
        detail = _detail(self.body)
        self.cap = int(detail.get("cap", 0))
        self.used = int(detail.get("used", 0))
        self.required = int(detail.get("required", 0))


class RefundExceedsDebit(CreditsdError):
    """409 `refund_exceeds_debit`: more credits asked than are left to refund of the debit
    (`.refundable`)."""

    refundable: int

    def __init__(
        self,
        code: str,
        status: int,
        message: str,
        field: Optional[str] = None,
        body: Optional[Mapping[str, Any]] = None,
    ) -> None:
        super().__init__(code, status, message, field, body)
        self.refundable = int(_detail(self.body).get("refundable", 0))


class NotFound(CreditsdError):
    """404: `account_not_found`, `hold_not_found`, `debit_not_found`, `member_not_found` or
    `not_found`."""


class IdempotencyConflict(CreditsdError):
    """409 `idempotency_conflict`: the key was used with a different request."""


def _detail(body: Mapping[str, Any]) -> Mapping[str, Any]:
    e = body.get("error")
    return e if isinstance(e, Mapping) else {}


_BY_CODE: Dict[str, Type[CreditsdError]] = {
    "insufficient_credits": InsufficientCredits,
    "member_cap_reached": MemberCapReached,
    "account_not_found": NotFound,
    "hold_not_found": NotFound,
    "debit_not_found": NotFound,
    "member_not_found": NotFound,
    "not_found": NotFound,
    "idempotency_conflict": IdempotencyConflict,
    "refund_exceeds_debit": RefundExceedsDebit,
}


def error_from_body(status: int, body: Any) -> CreditsdError:
    """The exception for an error answer (`{"error": {"code", "message", ...}}`)."""
    detail = _detail(body) if isinstance(body, Mapping) else {}
    code = detail.get("code")
    if not isinstance(code, str):
        code = f"http_{status}"
    message = detail.get("message")
    if not isinstance(message, str):
        message = f"HTTP {status}"
    field = detail.get("field")
    cls = _BY_CODE.get(code, NotFound if status == 404 else CreditsdError)
    return cls(
        code,
        status,
        message,
        field if isinstance(field, str) else None,
        body if isinstance(body, Mapping) else None,
    )
