#!/usr/bin/env python3
"""Parses the Grafana dashboard (JSON) and the Prometheus rules (YAML) under deploy/ and
prints every creditsd_* metric name their expressions use, one per line. Exits non-zero
when a file does not parse or has no expression. Used by tests/ops.rs."""
import json
import re
import sys

NAME = re.compile(r"\bcreditsd_[a-z_]+\b")


def exprs_of_dashboard(path):
    with open(path) as f:
        dash = json.load(f)
    assert dash.get("panels"), f"{path}: no panels"
    for p in dash["panels"]:
        assert p.get("title") and p.get("targets"), f"{path}: panel without title or targets"
        for t in p["targets"]:
            yield t["expr"]


def exprs_of_rules(path):
    with open(path) as f:
        text = f.read()
    try:
        import yaml
    except ImportError:
        # Without PyYAML, fall back to the expressions' text (the parse is not checked).
        print(f"{path}: PyYAML missing, not checking the YAML parse", file=sys.stderr)
        yield text
        return
    doc = yaml.safe_load(text)
    for g in doc["groups"]:
        for r in g["rules"]:
            assert r.get("alert") and r.get("expr"), f"{path}: rule without alert or expr"
            assert r.get("labels", {}).get("severity"), f"{path}: {r['alert']} has no severity"
            yield str(r["expr"])


def main():
    dashboard, rules = sys.argv[1], sys.argv[2]
    names = set()
    for expr in list(exprs_of_dashboard(dashboard)) + list(exprs_of_rules(rules)):
        names.update(NAME.findall(expr))
    if not names:
        sys.exit("no creditsd_ metric used")
    for n in sorted(names):
        print(n)


main()
