"""Checking that a webhook delivery comes from creditsd.

The daemon POSTs each feed event as JSON with `X-Creditsd-Signature: sha256=<hex>`, the
HMAC-SHA256 of the body's exact bytes under the webhook's `secret`, and
`X-Creditsd-Event-Id: <id>` (deliveries are at least once: deduplicate on it). Verify the
raw body before parsing it::

    from creditsd.webhooks import verify
    if not verify(request.body, request.headers["X-Creditsd-Signature"], secret):
        return 401
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Union

__all__ = ["verify", "sign", "SIGNATURE_HEADER", "EVENT_ID_HEADER"]

SIGNATURE_HEADER = "X-Creditsd-Signature"
EVENT_ID_HEADER = "X-Creditsd-Event-Id"
_PREFIX = "sha256="


def sign(body: bytes, secret: Union[str, bytes]) -> str:
    """The signature header's value for `body`: `sha256=<hex HMAC-SHA256>`."""
    key = secret.encode() if isinstance(secret, str) else secret
    return _PREFIX + hmac.new(key, body, hashlib.sha256).hexdigest()


def verify(body: bytes, signature_header: str, secret: Union[str, bytes]) -> bool:
    """True when `signature_header` is the signature of `body` under `secret`, compared in
    constant time. A header of another scheme or malformed hex is False."""
    if not isinstance(signature_header, str):
        return False
    value = signature_header.strip()
    if not value.startswith(_PREFIX):
        return False
    given = value[len(_PREFIX):].strip().lower()
    return hmac.compare_digest(given, sign(body, secret)[len(_PREFIX):])
