#!/usr/bin/env python3
"""Checks the Grafana dashboard and the alert rules against a real /metrics scrape.

- `promtool check metrics` is clean on the scrape;
- every PromQL expression of the dashboard and the alerts parses (`promtool check rules`);
- every metric they query exists in the scrape, and every label they match or group by exists on
  that metric (labels Prometheus adds at scrape time excepted);
- the alert rules pass their unit tests (`promtool test rules`).

Usage: check.py SCRAPE_FILE   (the scrape of a shardcache that has served traffic)
"""
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "helm" / "shardcache" / "files" / "dashboard.json"
ALERTS = ROOT / "helm" / "shardcache" / "files" / "alerts.yaml"
# Added by Prometheus (target labels) or by histogram_quantile, not by shardcache.
SCRAPE_TIME_LABELS = {"instance", "job", "namespace", "pod", "le"}
# Grafana variables, replaced by plausible values so the expressions can be parsed.
VARIABLES = {"$__rate_interval": "1m", "$__range": "6h", "$instance": ".*", "$price_per_gb": "0.09"}
METRIC = re.compile(r"\b((?:shardcache|foyer)_[a-z0-9_]+)\b")
SELECTOR = re.compile(r"\b((?:shardcache|foyer)_[a-z0-9_]+)\{([^}]*)\}")
MATCHER = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)\s*"')
GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")


def fail(message):
    sys.exit(f"observability: {message}")


def scrape_labels(text):
    """metric name -> set of label names seen on it."""
    labels = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        series = line.rsplit(" ", 1)[0]
        name, _, rest = series.partition("{")
        labels.setdefault(name, set()).update(MATCHER.findall(rest + '"') if rest else [])
    return labels


def expressions():
    """(where, expr) for every query of the dashboard and every alert rule."""
    dashboard = json.loads(DASHBOARD.read_text())
    out = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            out.append((f"panel {panel['title']!r} {target['refId']}", target["expr"]))
    for var in dashboard["templating"]["list"]:
        if var.get("type") == "query":
            inner = re.fullmatch(r"label_values\((\w+),\s*\w+\)", var["definition"])
            out.append((f"variable {var['name']}", inner.group(1)))
    for group in yaml.safe_load(ALERTS.read_text())["groups"]:
        for rule in group["rules"]:
            out.append((f"alert {rule['alert']}", rule["expr"]))
    return out


def substitute(expr):
    for var, value in VARIABLES.items():
        expr = expr.replace(var, value)
    if "$" in expr:
        fail(f"unknown variable in {expr}")
    return expr


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    text = Path(sys.argv[1]).read_text()
    lint = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
    if lint.returncode != 0 or lint.stdout.strip() or lint.stderr.strip():
        fail(f"promtool check metrics: {lint.stdout}{lint.stderr}")

    exprs = [(where, substitute(e)) for where, e in expressions()]
    rules = {"groups": [{"name": "parse", "rules": [{"record": f"check:expr_{i}", "expr": e} for i, (_, e) in enumerate(exprs)]}]}
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
        yaml.safe_dump(rules, f)
        f.flush()
        parsed = subprocess.run(["promtool", "check", "rules", f.name], capture_output=True, text=True)
        if parsed.returncode != 0:
            fail(f"an expression does not parse:\n{parsed.stdout}{parsed.stderr}")

    known = scrape_labels(text)
    metrics_used = set()
    for where, expr in exprs:
        for name in METRIC.findall(expr):
            metrics_used.add(name)
            if name not in known:
                fail(f"{where}: metric {name} is not in the scrape")
        for name, matchers in SELECTOR.findall(expr):
            for label in set(MATCHER.findall(matchers)) - SCRAPE_TIME_LABELS:
                if label not in known[name]:
                    fail(f"{where}: {name} has no label {label!r} (has {sorted(known[name])})")
        grouped = {l.strip() for g in GROUPING.findall(expr) for l in g.split(",") if l.strip()}
        for label in grouped - SCRAPE_TIME_LABELS:
            if not any(label in known[n] for n in METRIC.findall(expr)):
                fail(f"{where}: grouping by {label!r}, which none of its metrics has")

    tests = subprocess.run(
        ["promtool", "test", "rules", str(ROOT / "tests" / "observability" / "alerts_test.yaml")],
        capture_output=True,
        text=True,
    )
    if tests.returncode != 0:
        fail(f"alert rule tests:\n{tests.stdout}{tests.stderr}")
    print(
        f"observability: scrape clean; {len(exprs)} expressions parse and use {len(metrics_used)} metrics, "
        f"all in the scrape; alert rule tests pass"
    )


if __name__ == "__main__":
    main()
