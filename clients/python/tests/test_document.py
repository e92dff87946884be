"""openapi/openapi.json itself: valid OpenAPI 3.1, every route of SPEC section 3 (and the
two lists issue 12 added, and the second edition's of section 5), strict schemas, examples
that validate, the links of the stateful flows."""

from __future__ import annotations

from typing import Any, Dict, Iterator, List, Set, Tuple

import jsonschema
import pytest
import referencing
import referencing.jsonschema
from openapi_spec_validator import validate

from conftest import DOC_PATH

ROUTES = [
    ("post", "/v1/accounts"),
    ("get", "/v1/accounts"),
    ("get", "/v1/accounts/{id}"),
    ("post", "/v1/accounts/{id}/debits"),
    ("post", "/v1/accounts/{id}/debits/{debit_key}/refund"),
    ("post", "/v1/debits"),
    ("post", "/v1/accounts/{id}/holds"),
    ("get", "/v1/accounts/{id}/holds"),
    ("post", "/v1/accounts/{id}/holds/{hold_id}/capture"),
    ("post", "/v1/accounts/{id}/holds/{hold_id}/release"),
    ("put", "/v1/accounts/{id}/plan"),
    ("post", "/v1/accounts/{id}/purchases"),
    ("post", "/v1/accounts/{id}/grants"),
    ("put", "/v1/accounts/{id}/alerts"),
    ("put", "/v1/accounts/{id}/members/{member}"),
    ("delete", "/v1/accounts/{id}/members/{member}"),
    ("get", "/v1/accounts/{id}/ledger"),
    ("get", "/v1/accounts/{id}/usage"),
    ("get", "/v1/accounts/{id}/forecast"),
    ("get", "/v1/events"),
    ("get", "/v1/pricing"),
    ("get", "/v1/openapi.json"),
    ("get", "/metrics"),
    ("get", "/healthz"),
    ("get", "/readyz"),
]
METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")


def operations(doc: Dict[str, Any]) -> Iterator[Tuple[str, str, Dict[str, Any]]]:
    for path, item in doc["paths"].items():
        for method in METHODS:
            if method in item:
                yield method, path, item[method]


def test_the_document_is_valid_openapi_3_1(document: Dict[str, Any]) -> None:
    assert document["openapi"].startswith("3.1.")
    validate(document)


def test_every_route_and_nothing_else(document: Dict[str, Any]) -> None:
    assert sorted((m, p) for m, p, _ in operations(document)) == sorted(ROUTES)


def test_operations_are_named_and_answer_explicit_codes(document: Dict[str, Any]) -> None:
    ids = [op["operationId"] for _, _, op in operations(document)]
    assert len(ids) == len(set(ids))
    for method, path, op in operations(document):
        assert op.get("summary"), (method, path)
        assert "default" not in op["responses"], (method, path)
        assert any(c.startswith("2") for c in op["responses"]), (method, path)
        if path.startswith("/v1/") and path != "/v1/openapi.json":
            assert op["security"] and list(op["security"][0]) == ["bearer"], (method, path)
            assert {"401", "403"} <= set(op["responses"]), (method, path)
        else:
            assert op["security"] == [], (method, path)


def resolve(doc: Dict[str, Any], s: Any) -> Any:
    while isinstance(s, dict) and "$ref" in s:
        parts = s["$ref"].lstrip("#/").split("/")
        node: Any = doc
        for p in parts:
            node = node[p]
        s = node
    return s


def objects(doc: Dict[str, Any], s: Any, seen: Any = None) -> Iterator[Dict[str, Any]]:
    """Every object schema with properties reachable from `s`."""
    seen = set() if seen is None else seen
    if isinstance(s, dict) and "$ref" in s:
        if s["$ref"] in seen:
            return
        seen.add(s["$ref"])
    s = resolve(doc, s)
    if not isinstance(s, dict):
        return
    if "properties" in s:
        yield s
    for key in ("properties", "patternProperties", "$defs"):
        for v in s.get(key, {}).values():
            yield from objects(doc, v, seen)
    for key in ("items", "additionalProperties", "not", "propertyNames"):
        if isinstance(s.get(key), dict):
            yield from objects(doc, s[key], seen)
    for key in ("oneOf", "anyOf", "allOf"):
        for v in s.get(key, []):
            yield from objects(doc, v, seen)


def test_schemas_are_strict(document: Dict[str, Any]) -> None:
    """Requests refuse unknown fields; answers say which fields they always have."""
    for method, path, op in operations(document):
        body = op.get("requestBody")
        if body:
            for o in objects(document, body["content"]["application/json"]["schema"]):
                assert o.get("additionalProperties") is False, (method, path, o)
        for status, r in op["responses"].items():
            r = resolve(document, r)
            for media in r.get("content", {}).values():
                for o in objects(document, media["schema"]):
                    assert "required" in o, (method, path, status, sorted(o["properties"]))
                    assert o.get("additionalProperties") is False, (method, path, status, sorted(o["properties"]))


def test_error_answers_name_their_codes_and_headers(document: Dict[str, Any]) -> None:
    for method, path, op in operations(document):
        for status, r in op["responses"].items():
            if status.startswith("2"):
                continue
            r = resolve(document, r)
            schema = r["content"]["application/json"]["schema"]
            code = schema["properties"]["error"]["properties"]["code"]
            assert code.get("enum"), (method, path, status)
            if status in ("429", "503"):
                assert r["headers"]["Retry-After"]["required"], (method, path, status)
            if status == "401":
                assert r["headers"]["WWW-Authenticate"]["required"], (method, path)
            if status == "402":
                # `required` always; `available` with insufficient_credits, `cap` and `used`
                # with member_cap_reached.
                err = schema["properties"]["error"]
                assert "required" in err["required"], (method, path)
                then = {c["if"]["properties"]["code"]["const"]: set(c["then"]["required"]) for c in err["allOf"]}
                assert then == {"insufficient_credits": {"available"}, "member_cap_reached": {"cap", "used"}}


def test_second_edition_error_codes_are_documented(document: Dict[str, Any]) -> None:
    """Each error code of SPEC section 5 is among the codes of the operations that answer it."""
    codes: Dict[str, Set[str]] = {}
    for method, path, op in operations(document):
        for status, r in op["responses"].items():
            r = resolve(document, r)
            if status.startswith("2"):
                continue
            enum = r["content"]["application/json"]["schema"]["properties"]["error"]["properties"]["code"]["enum"]
            codes.setdefault(op["operationId"], set()).update(enum)
    want = {
        "refundDebit": {"debit_not_found", "refund_exceeds_debit", "account_not_found", "invalid_request"},
        "debit": {"member_not_found", "member_cap_reached", "insufficient_credits"},
        "placeHold": {"member_not_found", "member_cap_reached"},
        "grant": {"too_many_blocks"},
        "setMember": {"too_many_members"},
        "removeMember": {"member_not_found"},
        "getAccount": {"history_pruned", "account_not_found"},
    }
    for op, cs in want.items():
        assert cs <= codes[op], (op, cs - codes[op])


def test_limits_are_stated(document: Dict[str, Any]) -> None:
    s = document["components"]["schemas"]
    assert s["AccountId"]["pattern"] == "^[A-Za-z0-9._:-]{1,64}$"
    assert (s["IdempotencyKey"]["minLength"], s["IdempotencyKey"]["maxLength"]) == (1, 128)
    q = resolve(document, s["DebitRequest"]["properties"]["quantity"])
    assert (q["minimum"], q["maximum"]) == (1, 10000)
    for form in ("GrantRequestBucket", "GrantRequestPromo"):
        assert s[form]["properties"]["credits"]["maximum"] == 2**53 - 1
    assert "expires_at" in s["GrantRequestPromo"]["required"]
    assert "expires_at" not in s["GrantRequestBucket"]["properties"]
    assert s["MemberId"]["pattern"] == s["AccountId"]["pattern"]
    a = s["AlertsRequest"]["properties"]
    assert (a["thresholds"]["maxItems"], a["thresholds"]["uniqueItems"]) == (8, True)
    assert (a["forecast_hours"]["minimum"], a["forecast_hours"]["maximum"]) == (1, 720)
    assert list(s["Sources"]["patternProperties"]) == ["^promo:g[0-9]+$"]
    assert s["BatchRequest"]["properties"]["debits"]["maxItems"] == 1000
    assert s["Metadata"]["maxProperties"] == 16


def test_links_follow_the_stateful_flows(document: Dict[str, Any]) -> None:
    ops = {op["operationId"]: op for _, _, op in operations(document)}
    created = ops["createAccount"]["responses"]["201"]["links"]
    assert {"debit", "getLedger"} <= {l["operationId"] for l in created.values()}
    held = ops["placeHold"]["responses"]["201"]["links"]
    assert {"captureHold", "releaseHold"} <= {l["operationId"] for l in held.values()}
    debited = ops["debit"]["responses"]["200"]["links"]
    assert "refundDebit" in {l["operationId"] for l in debited.values()}
    member = ops["setMember"]["responses"]["200"]["links"]
    assert "removeMember" in {l["operationId"] for l in member.values()}
    for _, _, op in operations(document):
        for r in op["responses"].values():
            for link in resolve(document, r).get("links", {}).values():
                assert link["operationId"] in ops


def all_examples(doc: Dict[str, Any]) -> Iterator[Tuple[str, Any, Any]]:
    for method, path, op in operations(doc):
        body = op.get("requestBody")
        if body:
            media = body["content"]["application/json"]
            yield f"{method} {path} request", media["schema"], media["example"]
        for p in op.get("parameters", []):
            p = resolve(doc, p)
            if "example" in p:
                yield f"{method} {path} {p['name']}", p["schema"], p["example"]
        for status, r in op["responses"].items():
            r = resolve(doc, r)
            for name, media in r.get("content", {}).items():
                if "example" in media and name == "application/json":
                    yield f"{method} {path} {status}", media["schema"], media["example"]
    for name, p in doc["components"]["parameters"].items():
        yield f"parameter {name}", p["schema"], p["example"]


def test_every_example_validates(document: Dict[str, Any]) -> None:
    uri = DOC_PATH.as_uri()
    resource = referencing.Resource.from_contents(
        document, default_specification=referencing.jsonschema.DRAFT202012
    )
    registry: referencing.Registry[Any] = referencing.Registry().with_resource(uri, resource)
    failures: List[str] = []
    count = 0
    for where, schema, example in all_examples(document):
        count += 1
        if "$ref" in schema:
            schema = {"$ref": uri + schema["$ref"]}
        else:
            schema = _rebase(schema, uri)
        v = jsonschema.Draft202012Validator(schema, registry=registry, format_checker=jsonschema.FormatChecker())
        for e in v.iter_errors(example):
            failures.append(f"{where}: {e.message} at {list(e.absolute_path)}")
    assert count > 40
    assert not failures, "\n".join(failures)


def _rebase(schema: Any, uri: str) -> Any:
    """The schema with its `#/…` references made absolute against the document."""
    if isinstance(schema, dict):
        return {k: (uri + v if k == "$ref" and v.startswith("#") else _rebase(v, uri)) for k, v in schema.items()}
    if isinstance(schema, list):
        return [_rebase(v, uri) for v in schema]
    return schema


@pytest.mark.parametrize("name", ["InstantInput", "Instant"])
def test_instant_schemas(document: Dict[str, Any], name: str) -> None:
    s = document["components"]["schemas"][name]
    v = jsonschema.Draft202012Validator(s, format_checker=jsonschema.FormatChecker())
    assert v.is_valid("2026-11-24T19:50:06Z")
    assert not v.is_valid("yesterday")
