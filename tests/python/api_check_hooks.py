"""Schemathesis hooks of `scripts/api-check`: the few refusals of schema-valid requests
that are right, because they depend on a rule JSON Schema cannot state.

`positive_data_acceptance` expects a schema-valid request to be accepted. These requests
are valid by the document and still, correctly, a 400:

- a limit on bytes where the document can only bound characters (`maxLength` counts code
  points; the daemon counts the UTF-8 bytes of idempotency keys, `payment_ref`,
  `reason`, and of all `metadata` keys and values together);
- a rule that depends on the account's state: a capture of more than the hold holds, a
  grant that would take a balance past 2^53 - 1;
- a rule across parameters: usage with `from` not before `to`, or spanning more than
  1000 periods; an instant of the years the document allows that its offset moves out
  of the supported range (before 1970-01-01T00:00:00Z or after 9000-01-01T00:00:00Z).

Each rule checks the request itself (the bytes, the instant, the range) or the daemon's
own words for a state it alone knows, so any other refusal still fails the run.
Schemathesis reports how many failures these drop ("dropped by `filter_failure`").
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
from typing import Any, Callable, Dict, Optional

import schemathesis

BYTES_MAX = {"idempotency_key": 128, "payment_ref": 128, "reason": 1024}
METADATA_BYTES_MAX = 1024
TS_MIN = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
TS_MAX = dt.datetime(9000, 1, 1, tzinfo=dt.timezone.utc)
PERIODS_MAX = 1000


def _error(response: Any) -> Optional[Dict[str, Any]]:
    try:
        body = json.loads(response.content)
    except (ValueError, TypeError):
        return None
    e = body.get("error") if isinstance(body, dict) else None
    return e if isinstance(e, dict) else None


def _value(case: Any, name: str) -> Any:
    for source in (case.body, case.query):
        if isinstance(source, dict) and name in source:
            return source[name]
    return None


def _instant(v: Any) -> Optional[dt.datetime]:
    if not isinstance(v, str):
        return None
    try:
        t = dt.datetime.fromisoformat(v.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo is not None else None


def _over_bytes(case: Any, field: str) -> bool:
    v = _value(case, field)
    limit = BYTES_MAX.get(field)
    return isinstance(v, str) and limit is not None and len(v) <= limit < len(v.encode())


def _metadata_over(case: Any, field: str) -> bool:
    m = _value(case, "metadata")
    if not isinstance(m, dict):
        # A batch: any item's metadata.
        items = case.body.get("debits") if isinstance(case.body, dict) else None
        ms = [i.get("metadata") for i in items or [] if isinstance(i, dict)]
    else:
        ms = [m]
    return any(
        isinstance(m, dict)
        and sum(len(k.encode()) + len(str(v).encode()) for k, v in m.items()) > METADATA_BYTES_MAX
        for m in ms
    )


def _out_of_range(case: Any, field: str) -> bool:
    t = _instant(_value(case, field))
    return t is not None and not (TS_MIN <= t <= TS_MAX)


def _usage_range(case: Any, field: str) -> bool:
    start, end = _instant(_value(case, "from")), _instant(_value(case, "to"))
    now = dt.datetime.now(dt.timezone.utc)
    end = end or now
    if start is None:
        return False
    if start >= end:
        return True
    days = (end - start).days + 2
    months = (end.year - start.year) * 12 + end.month - start.month + 1
    return (months if _value(case, "granularity") == "month" else days) > PERIODS_MAX


def _daemon_says(pattern: str) -> Callable[[Any, str, str], bool]:
    return lambda case, field, message: re.search(pattern, message) is not None


# (operation label regex, the error's field regex, why the refusal is right)
RULES = [
    (r".*", r"^(idempotency_key|payment_ref|reason)$", lambda c, f, m: _over_bytes(c, f)),
    (r".*", r"^metadata$", lambda c, f, m: _metadata_over(c, f)),
    (r".*", r"^(billing_anchor|from|to)$", lambda c, f, m: _out_of_range(c, f)),
    (r"/usage$", r"^from$", lambda c, f, m: _usage_range(c, f)),
    # The account's state, which only the daemon knows: said in its message.
    (r"/capture$", r"^credits$", _daemon_says(r"^cannot capture \d+ credits from a hold of \d+$")),
    (r"/grants$", r"^credits$", _daemon_says(r"would overflow the account.s books")),
]


@schemathesis.hook
def filter_failure(ctx: Any, failure: Any, case: Any, response: Any) -> bool:
    """False (drop it) for a rejected schema-valid request that one of the rules explains."""
    if type(failure).__name__ != "RejectedPositiveData" or response.status_code != 400:
        return True
    err = _error(response)
    if err is None:
        return True
    field, message = str(err.get("field", "")), str(err.get("message", ""))
    label = case.operation.label
    for op, f, why in RULES:
        if re.search(op, label) and re.search(f, field) and why(case, field, message):
            log = os.environ.get("API_CHECK_DROPPED_LOG")
            if log:
                with open(log, "a") as out:
                    out.write(json.dumps({"operation": label, "field": field, "message": message}) + "\n")
            return False
    return True
