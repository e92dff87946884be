"""The models match the OpenAPI document: every dataclass field is a property of its
schema and the other way round, optional exactly where the schema does not require it or
allows null, and of the schema's type. The documented examples parse."""

from __future__ import annotations

import dataclasses
import datetime as dt
import typing
from typing import Any, Dict, List, Optional, Set, Tuple, Type

import pytest

import creditsd
from creditsd import models

# model -> (schema name, {json name: field name}) ; None: resolved by a function below
MODELS: Dict[Type[Any], Tuple[str, Dict[str, str]]] = {
    models.Account: ("Account", {}),
    models.AccountHold: ("Hold", {}),
    models.Debit: ("Debit", {}),
    models.HoldPlaced: ("HoldPlaced", {}),
    models.Capture: ("Capture", {}),
    models.Release: ("Release", {}),
    models.PlanChange: ("PlanChange", {"from": "from_plan"}),
    models.Purchase: ("Purchase", {}),
    models.Grant: ("Grant", {}),
    models.Refund: ("Refund", {}),
    models.AlertsSet: ("AlertsSet", {}),
    models.MemberSet: ("MemberSet", {}),
    models.MemberRemoved: ("MemberRemoved", {}),
    models.PromoBlock: ("PromoBlock", {}),
    models.Member: ("Member", {}),
    models.AlertSettings: ("AlertSettings", {}),
    models.UsageCell: ("UsageCell", {}),
    models.UsagePeriod: ("UsagePeriod", {}),
    models.Usage: ("Usage", {"from": "start", "to": "end"}),
    models.Forecast: ("Forecast", {}),
    models.Pricing: ("Pricing", {}),
    models.Event: ("FeedEvent", {}),
}


def resolve(doc: Dict[str, Any], s: Dict[str, Any]) -> Dict[str, Any]:
    while "$ref" in s:
        name = s["$ref"].rsplit("/", 1)[1]
        extra = {k: v for k, v in s.items() if k != "$ref"}
        s = {**doc["components"]["schemas"][name], **extra}
    return s


def nullable_inner(doc: Dict[str, Any], s: Dict[str, Any]) -> Tuple[Dict[str, Any], bool]:
    """(the schema without its null alternative, whether null is allowed)."""
    s = resolve(doc, s)
    if "anyOf" in s:
        alts = [resolve(doc, a) for a in s["anyOf"]]
        non_null = [a for a in alts if a.get("type") != "null"]
        if len(non_null) == 1 and len(non_null) < len(alts):
            return non_null[0], True
    t = s.get("type")
    if isinstance(t, list) and "null" in t:
        rest = [x for x in t if x != "null"]
        return {**s, "type": rest[0] if len(rest) == 1 else rest}, True
    return s, False


def json_type(doc: Dict[str, Any], s: Dict[str, Any]) -> str:
    s = resolve(doc, s)
    if "const" in s:
        v = s["const"]
        return {bool: "boolean", int: "integer", str: "string", float: "number"}[type(v)]
    if "oneOf" in s:
        kinds = {json_type(doc, a) for a in s["oneOf"]}
        assert len(kinds) == 1, s
        return kinds.pop()
    t = s["type"]
    assert isinstance(t, str), s
    return t


def unwrap_optional(t: Any) -> Tuple[Any, bool]:
    args = typing.get_args(t)
    if typing.get_origin(t) is typing.Union and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        assert len(rest) == 1
        return rest[0], True
    return t, False


def python_matches(t: Any, schema_type: str, fmt: Optional[str]) -> bool:
    origin = typing.get_origin(t)
    if schema_type == "integer":
        return t is int
    if schema_type == "number":
        return t is float
    if schema_type == "boolean":
        return t is bool
    if schema_type == "string":
        return t is (dt.datetime if fmt == "date-time" else str)
    if schema_type == "array":
        return origin is list
    if schema_type == "object":
        return origin is dict or dataclasses.is_dataclass(t)
    return False


def check(doc: Dict[str, Any], cls: Type[Any], props: Dict[str, Any], required: Set[str], rename: Dict[str, str]) -> None:
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    by_field = {rename.get(p, p): p for p in props}
    assert fields == set(by_field), (
        f"{cls.__name__}: fields not in the schema: {sorted(fields - set(by_field))}; "
        f"schema properties without a field: {sorted(set(by_field) - fields)}"
    )
    for field, prop in by_field.items():
        inner, nullable = nullable_inner(doc, props[prop])
        t, optional = unwrap_optional(hints[field])
        should = nullable or prop not in required
        assert optional == should, f"{cls.__name__}.{field}: Optional is {optional}, the schema says {should}"
        st = json_type(doc, inner)
        fmt = resolve(doc, inner).get("format")
        assert python_matches(t, st, fmt), f"{cls.__name__}.{field}: {t} for a schema {st} ({fmt})"


@pytest.mark.parametrize("cls", list(MODELS), ids=lambda c: c.__name__)
def test_model_matches_its_schema(document: Dict[str, Any], cls: Type[Any]) -> None:
    name, rename = MODELS[cls]
    s = resolve(document, document["components"]["schemas"][name])
    check(document, cls, s["properties"], set(s.get("required", [])), rename)


def test_ledger_entry_is_the_union_of_the_entry_kinds(document: Dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    kinds = [resolve(document, r) for r in schemas["LedgerEntry"]["oneOf"]]
    props: Dict[str, Any] = {}
    for k in kinds:
        for p, v in k["properties"].items():
            if p != "kind":
                props.setdefault(p, v)
    props["kind"] = {"type": "string"}
    # A field is required in the model only when every kind requires it.
    required = set.intersection(*(set(k["required"]) for k in kinds))
    check(document, models.LedgerEntry, props, required, {"from": "from_plan"})


def test_alert_is_the_union_of_its_forms(document: Dict[str, Any]) -> None:
    forms = [resolve(document, a) for a in document["components"]["schemas"]["Alert"]["oneOf"]]
    props = {
        "type": {"type": "string"},
        "threshold": {"type": "integer"},
        "projected_exhaustion_at": {"type": "string", "format": "date-time"},
    }
    assert set().union(*(f["properties"] for f in forms)) == set(props)
    check(document, models.Alert, props, {"type"}, {})


def test_pack_and_forecast_period(document: Dict[str, Any]) -> None:
    s = document["components"]["schemas"]
    pack = s["Pricing"]["properties"]["packs"]["additionalProperties"]
    check(document, models.Pack, pack["properties"], set(pack["required"]), {})
    lp, nullable = nullable_inner(document, s["Forecast"]["properties"]["last_period"])
    assert nullable
    check(document, models.ForecastPeriod, lp["properties"], set(lp["required"]), {})


def test_batch_result_reads_both_item_forms(document: Dict[str, Any]) -> None:
    s = document["components"]["schemas"]
    ok, err = (resolve(document, r) for r in s["BatchResult"]["oneOf"])
    # `status` of a result is the item's `code`, in both forms.
    assert "code" in ok["required"] and "code" in err["required"]
    assert set(ok["properties"]) - {"code"} == set(s["Debit"]["properties"])
    assert set(err["properties"]) == {"error", "code"}
    assert {f.name for f in dataclasses.fields(models.BatchResult)} == {"ok", "status", "error", "debit"}


def examples(document: Dict[str, Any], operation_id: str, status: str) -> Any:
    for item in document["paths"].values():
        for op in item.values():
            if isinstance(op, dict) and op.get("operationId") == operation_id:
                return op["responses"][status]["content"]["application/json"]["example"]
    raise KeyError(operation_id)


@pytest.mark.parametrize(
    "operation_id,status,parse",
    [
        ("createAccount", "201", models.Account.from_json),
        ("getAccount", "200", models.Account.from_json),
        ("debit", "200", models.Debit.from_json),
        ("placeHold", "201", models.HoldPlaced.from_json),
        ("captureHold", "200", models.Capture.from_json),
        ("releaseHold", "200", models.Release.from_json),
        ("changePlan", "200", models.PlanChange.from_json),
        ("purchase", "200", models.Purchase.from_json),
        ("grant", "200", models.Grant.from_json),
        ("refundDebit", "200", models.Refund.from_json),
        ("setAlerts", "200", models.AlertsSet.from_json),
        ("setMember", "200", models.MemberSet.from_json),
        ("removeMember", "200", models.MemberRemoved.from_json),
        ("getUsage", "200", models.Usage.from_json),
        ("getForecast", "200", models.Forecast.from_json),
        ("getPricing", "200", models.Pricing.from_json),
    ],
)
def test_documented_examples_parse(document: Dict[str, Any], operation_id: str, status: str, parse: Any) -> None:
    ex = examples(document, operation_id, status)
    m = parse(ex)
    for f in dataclasses.fields(m):
        json_name = {"from_plan": "from", "start": "from", "end": "to"}.get(f.name, f.name)
        if json_name in ex and ex[json_name] is not None and not isinstance(ex[json_name], (dict, list)):
            assert getattr(m, f.name) is not None


def test_documented_ledger_events_and_batch_examples_parse(document: Dict[str, Any]) -> None:
    page = examples(document, "getLedger", "200")
    entries = [models.LedgerEntry.from_json(e) for e in page["entries"]]
    assert [e.kind for e in entries] == ["refund", "debit", "account_created"]
    assert entries[0].debit_key == "job-17" and entries[0].refunded == {"monthly": 3, "free": 0, "packs": 0}
    feed = examples(document, "getEvents", "200")
    events = [models.Event.from_json(e) for e in feed["events"]]
    assert events[0].threshold == 10
    assert events[-1].type == "balance.forecast_low" and events[-1].projected_exhaustion_at is not None
    acct = models.Account.from_json(examples(document, "getAccount", "200"))
    assert acct.promo_blocks[0].grant_id == "g3" and acct.members[0].cap_per_period == 20
    assert acct.affordable["video_generation"] == acct.available // 8 and acct.as_of is None
    debit = models.Debit.from_json(examples(document, "debit", "200"))
    assert debit.member == "brand-a" and debit.taken["promo:g3"] == debit.credits
    batch = examples(document, "debitBatch", "200")
    from creditsd import _core

    results = [_core._batch_result(r) for r in batch["results"]]
    assert [r.ok for r in results] == [True, False]
    assert isinstance(results[1].error, creditsd.NotFound)


def test_instants() -> None:
    t = models.parse_instant("2026-11-24T19:50:06.12Z")
    assert t == dt.datetime(2026, 11, 24, 19, 50, 6, 120000, tzinfo=dt.timezone.utc)
    assert models.parse_instant("2026-11-24T20:50:06+01:00") == dt.datetime(2026, 11, 24, 19, 50, 6, tzinfo=dt.timezone.utc)
    assert models.format_instant(t) == "2026-11-24T19:50:06.120Z"
    assert models.format_instant(dt.datetime(2026, 1, 31)) == "2026-01-31T00:00:00Z"
    with pytest.raises(ValueError):
        models.parse_instant("yesterday")


def test_the_package_surface() -> None:
    for name in ["Client", "AsyncClient", "CreditsdError", "InsufficientCredits", "IdempotencyConflict", "NotFound"]:
        assert hasattr(creditsd, name), name
    assert issubclass(creditsd.InsufficientCredits, creditsd.CreditsdError)
    assert issubclass(creditsd.NotFound, creditsd.CreditsdError)
    assert issubclass(creditsd.IdempotencyConflict, creditsd.CreditsdError)
    assert issubclass(creditsd.MemberCapReached, creditsd.CreditsdError)
    assert not issubclass(creditsd.MemberCapReached, creditsd.InsufficientCredits)
    assert issubclass(creditsd.RefundExceedsDebit, creditsd.CreditsdError)
    from creditsd.webhooks import verify  # noqa: F401

    import importlib.resources

    assert (importlib.resources.files("creditsd") / "py.typed").is_file()
    methods = [
        "create_account", "account", "debit", "debit_many", "hold", "purchase", "change_plan",
        "grant", "ledger", "usage", "forecast", "pricing", "events",
        "refund", "set_alerts", "set_member", "remove_member",
    ]
    for cls in (creditsd.Client, creditsd.AsyncClient):
        for m in methods:
            assert callable(getattr(cls, m, None)), f"{cls.__name__}.{m}"
