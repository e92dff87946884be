"""Schemathesis hooks of `scripts/api-check`: the few refusals of schema-valid requests
that are right, because they depend on a rule JSON Schema cannot state.

`positive_data_acceptance` expects a schema-valid request to be accepted. These requests
are valid by the document and still, correctly, a 400:

- a limit on bytes where the document can only bound characters (`maxLength` counts code
  points; the daemon counts the UTF-8 bytes of idempotency keys (in a body, a query or
  the refund's `{debit_key}`), `payment_ref`, `reason`, and of all `metadata` keys and
  values together);
- a rule that depends on the account's state: a capture of more than the hold holds, a
  grant that would take a balance past 2^53 - 1;
- a rule that depends on the clock: a promo grant's `expires_at` must be in the future,
  an account's `?at=` must not be;
- a rule across parameters: usage with `from` not before `to`, or spanning more than
  1000 periods, or with both `member=` and `group_by=`; an instant of the years the
  document allows that its offset moves out of the supported range (before
  1970-01-01T00:00:00Z or after 9000-01-01T00:00:00Z).

One more is dropped the other way round: a path `{id}` written percent-encoded
(`acme%3Ateam-2`), which the generator counts as breaking the id's pattern but which the
daemon rightly decodes to a valid id.

Each rule checks the request itself (the bytes, the instant, the range) or the daemon's
own words for a state it alone knows, so any other refusal still fails the run.
Schemathesis reports how many failures these drop ("dropped by `filter_failure`").

`before_call` and `after_call` help the run reach state a generator cannot guess: they
remember the members and debits the daemon accepted and point some debits and holds at a
real member, some refunds at a real debit (see below).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import re
from typing import Any, Callable, Dict, List, Optional

import schemathesis

BYTES_MAX = {"idempotency_key": 128, "debit_key": 128, "payment_ref": 128, "reason": 1024}
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
    for source in (case.body, case.query, case.path_parameters):
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


def _not_future(case: Any, field: str) -> bool:
    """`expires_at` at or before now (the check runs after the request: a value still in
    the future now was in the future then)."""
    t = _instant(_value(case, field))
    return t is not None and t <= dt.datetime.now(dt.timezone.utc)


def _future(case: Any, field: str) -> bool:
    """`at` after the request was made: after the start of this check, less a margin for
    the request's own time."""
    t = _instant(_value(case, field))
    return t is not None and t > dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=120)


def _both_slices(case: Any, field: str) -> bool:
    return _value(case, "member") is not None and _value(case, "group_by") is not None


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
    (r".*", r"^(idempotency_key|debit_key|payment_ref|reason)$", lambda c, f, m: _over_bytes(c, f)),
    (r".*", r"^metadata$", lambda c, f, m: _metadata_over(c, f)),
    (r".*", r"^(billing_anchor|from|to|at|expires_at)$", lambda c, f, m: _out_of_range(c, f)),
    (r"/usage$", r"^from$", lambda c, f, m: _usage_range(c, f)),
    (r"/usage$", r"^group_by$", lambda c, f, m: _both_slices(c, f)),
    # The clock.
    (r"/grants$", r"^expires_at$", lambda c, f, m: _not_future(c, f)),
    (r"^GET /v1/accounts/\{id\}$", r"^at$", lambda c, f, m: _future(c, f) and "in the future" in m),
    # The account's state, which only the daemon knows: said in its message.
    (r"/capture$", r"^credits$", _daemon_says(r"^cannot capture \d+ credits from a hold of \d+$")),
    (r"/grants$", r"^credits$", _daemon_says(r"would overflow the account.s books")),
]


ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


def _percent_encoded_valid_id(case: Any) -> bool:
    """A path `{id}` that is invalid as written only because it is percent-encoded
    (`acme%3Ateam-2`): the generator counts the `%` against the id's pattern and sends it
    as it is, and the daemon reads `%3A` as `:`, as URLs mean, so the id it sees is valid."""
    path = case.path_parameters if isinstance(case.path_parameters, dict) else {}
    raw = path.get("id")
    if not isinstance(raw, str) or "%" not in raw:
        return False
    from urllib.parse import unquote

    return ID.match(unquote(raw, errors="strict")) is not None and all(
        "%" not in str(v) for k, v in path.items() if k != "id"
    )


@schemathesis.hook
def filter_failure(ctx: Any, failure: Any, case: Any, response: Any) -> bool:
    """False (drop it) for a rejected schema-valid request that one of the rules explains,
    or a "schema-violating" request that violates nothing once its path is decoded."""
    if type(failure).__name__ == "AcceptedNegativeData" and _percent_encoded_valid_id(case):
        return False
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


# ---- reaching state: members to debit as, debits to refund ----
#
# A generated `member` or `{debit_key}` almost never names one that exists, so debits as a
# member and refunds would only ever be refused (404). The hooks remember the members and
# debits the daemon accepted, and point some later requests at them; the request stays
# schema-valid, and every check still applies to its answer.

DEBIT = "POST /v1/accounts/{id}/debits"
HOLD = "POST /v1/accounts/{id}/holds"
REFUND = "POST /v1/accounts/{id}/debits/{debit_key}/refund"
PUT_MEMBER = "PUT /v1/accounts/{id}/members/{member}"
DELETE_MEMBER = "DELETE /v1/accounts/{id}/members/{member}"

_rng = random.Random(int(os.environ.get("API_CHECK_HOOK_SEED", "20261201")))
_members: Dict[str, List[str]] = {}
_debits: Dict[str, List[str]] = {}


def _positive(case: Any) -> bool:
    """Whether schemathesis made the case to be valid: a negative case (made to be
    refused) is left as it is, or swapping in a real member or debit would make it valid
    and its acceptance would read as a schema-violating request accepted."""
    generation = getattr(getattr(case, "meta", None), "generation", None)
    mode = getattr(generation, "mode", None)
    return mode is not None and str(getattr(mode, "value", mode)).endswith("positive")


@schemathesis.hook
def before_call(ctx: Any, case: Any, kwargs: Dict[str, Any]) -> None:
    label = case.operation.label
    path = case.path_parameters if isinstance(case.path_parameters, dict) else None
    if path is None or not isinstance(path.get("id"), str) or not _positive(case):
        return
    if label in (DEBIT, HOLD) and isinstance(case.body, dict) and isinstance(case.body.get("member"), str):
        if _members.get(path["id"]) and _rng.random() < 0.7:
            case.body["member"] = _rng.choice(_members[path["id"]])
        elif _members and _rng.random() < 0.5:
            account = _rng.choice(sorted(_members))
            path["id"], case.body["member"] = account, _rng.choice(_members[account])
    elif label == REFUND and _rng.random() < 0.7:
        if _debits.get(path["id"]):
            path["debit_key"] = _rng.choice(_debits[path["id"]])
        elif _debits:
            account = _rng.choice(sorted(_debits))
            path["id"], path["debit_key"] = account, _rng.choice(_debits[account])


@schemathesis.hook
def after_call(ctx: Any, case: Any, response: Any) -> None:
    """Remembers the members and debits made. With `API_CHECK_STATUS_LOG` set, also
    appends each answer's operation and status, so a run shows which routes it reached
    with real state (a refund of a real debit, a debit as a real member)."""
    label = case.operation.label
    path = case.path_parameters if isinstance(case.path_parameters, dict) else {}
    body = case.body if isinstance(case.body, dict) else {}
    account, ok = path.get("id"), 200 <= response.status_code < 300
    if ok and isinstance(account, str):
        if label == PUT_MEMBER and isinstance(path.get("member"), str):
            known = _members.setdefault(account, [])
            if path["member"] not in known:
                known.append(path["member"])
        elif label == DELETE_MEMBER and path.get("member") in _members.get(account, []):
            _members[account].remove(path["member"])
            if not _members[account]:
                del _members[account]
        elif label == DEBIT and not body.get("dry_run") and isinstance(body.get("idempotency_key"), str):
            keys = _debits.setdefault(account, [])
            if body["idempotency_key"] not in keys and len(keys) < 50:
                keys.append(body["idempotency_key"])
    log = os.environ.get("API_CHECK_STATUS_LOG")
    if log:
        with open(log, "a") as out:
            out.write(json.dumps({"operation": label, "status": response.status_code, "member": "member" in body}) + "\n")
