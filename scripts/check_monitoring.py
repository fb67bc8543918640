#!/usr/bin/env python3
"""Offline checks of the monitoring files against the metrics contract (what promtool cannot know).

- every metric an alert rule or a dashboard panel uses is in deploy/monitoring/metrics.txt (by type, the series
  the exposition adds: ``_bucket``/``_sum``/``_count`` for histograms, ``_created`` for counters and histograms),
  and every label matched on a contract metric is one of its labels or a target label Prometheus adds;
- every alert has a ``severity`` label (info, warning or critical) and ``summary``, ``description`` and
  ``runbook_url`` annotations; the runbook URL is ``docs/operations.md#<anchor>`` of a heading that exists;
- the alert unit tests (deploy/monitoring/tests/*.yml) fire every alert at least once and check at least one
  case where an alert must stay silent (an empty ``exp_alerts``);
- the dashboard is valid JSON with unique panel ids, and every query names only contract metrics.

``--dashboard-rules FILE`` also writes each dashboard query as a recording rule (Grafana variables replaced) so
that ``promtool check rules FILE`` parses them. Exit status: 0 when everything passed, 1 on any finding.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
MONITORING = ROOT / "deploy" / "monitoring"
CONTRACT = MONITORING / "metrics.txt"
RULES = MONITORING / "spiffe-broker-alerts.rules.yml"
TESTS = MONITORING / "tests"
DASHBOARD = MONITORING / "spiffe-broker-dashboard.json"
OPERATIONS = ROOT / "docs" / "operations.md"

SEVERITIES = frozenset({"info", "warning", "critical"})
# Labels Prometheus (or the Prometheus Operator's relabelling) puts on every scraped series.
TARGET_LABELS = frozenset({"job", "instance", "namespace", "pod", "container", "service", "cluster", "node"})
METRIC = re.compile(r"\b(spiffe_broker_[A-Za-z0-9_:]*)")
SELECTOR = re.compile(r"\b(spiffe_broker_[A-Za-z0-9_:]*)\s*\{([^}]*)\}")
MATCHER = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)")
SUFFIXES = {"counter": ("", "_created"), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count", "_created")}
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}


def load_contract(path: Path = CONTRACT) -> dict[str, frozenset[str]]:
    """Map every series name the contract allows to its labels."""
    series: dict[str, frozenset[str]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, kind, *labels = line.split()
        if kind not in SUFFIXES:
            raise ValueError(f"{path}: unknown metric type {kind!r} for {name}")
        for suffix in SUFFIXES[kind]:
            extra = {"le"} if suffix == "_bucket" else set()
            series[name + suffix] = frozenset(labels) | extra
    return series


def expr_errors(expr: str, contract: dict[str, frozenset[str]]) -> list[str]:
    errors = [f"unknown metric {name}" for name in METRIC.findall(expr) if name not in contract]
    for name, matchers in SELECTOR.findall(expr):
        if name not in contract:
            continue
        for label in MATCHER.findall(matchers):
            if label not in contract[name] and label not in TARGET_LABELS and label != "__name__":
                errors.append(f"{name} has no label {label!r}")
    return errors


def github_anchors(markdown: str) -> set[str]:
    """Anchors GitHub makes for the headings of a Markdown file."""
    anchors: set[str] = set()
    in_code = False
    for line in markdown.splitlines():
        if line.startswith("```"):
            in_code = not in_code
        if in_code or not line.startswith("#"):
            continue
        title = line.lstrip("#").strip().lower()
        slug = re.sub(r"[^\w\- ]", "", title).replace(" ", "-")
        anchors.add(slug)
    return anchors


def alert_rules(rules: Any) -> Iterator[dict[str, Any]]:
    for group in rules.get("groups") or []:
        yield from group.get("rules") or []


def check_rules(contract: dict[str, frozenset[str]], rules_path: Path = RULES) -> tuple[list[str], set[str]]:
    rules = yaml.safe_load(rules_path.read_text(encoding="utf-8"))
    # A partial copy of the repository (tests/unit/deploy copies scripts/ and deploy/) may lack the runbook.
    anchors = github_anchors(OPERATIONS.read_text(encoding="utf-8")) if OPERATIONS.exists() else None
    if anchors is None:
        print(f"NOTE {OPERATIONS} not found: runbook_url anchors not checked")
    errors: list[str] = []
    names: set[str] = set()
    for rule in alert_rules(rules):
        name = rule.get("alert") or rule.get("record") or "?"
        where = f"{rules_path.relative_to(ROOT)}: {name}"
        errors.extend(f"{where}: {e}" for e in expr_errors(str(rule.get("expr", "")), contract))
        if "alert" not in rule:
            continue
        names.add(name)
        if (rule.get("labels") or {}).get("severity") not in SEVERITIES:
            errors.append(f"{where}: labels.severity must be one of {sorted(SEVERITIES)}")
        annotations = rule.get("annotations") or {}
        for key in ("summary", "description", "runbook_url"):
            if not annotations.get(key):
                errors.append(f"{where}: annotation {key} missing")
        url = str(annotations.get("runbook_url", ""))
        page, _, anchor = url.partition("#")
        if url and (page != "docs/operations.md" or (anchors is not None and anchor not in anchors)):
            errors.append(f"{where}: runbook_url {url!r} is not a heading of docs/operations.md")
    return errors, names


def check_tests(alerts: set[str], tests_dir: Path = TESTS) -> list[str]:
    fired: set[str] = set()
    silent = 0
    files = sorted(tests_dir.glob("*.yml"))
    if not files:
        return [f"{tests_dir.relative_to(ROOT)}: no alert unit tests"]
    for path in files:
        for test in yaml.safe_load(path.read_text(encoding="utf-8")).get("tests") or []:
            for case in test.get("alert_rule_test") or []:
                if case.get("exp_alerts"):
                    fired.add(case.get("alertname"))
                else:
                    silent += 1
    errors = [f"alert {name} is never fired by a unit test" for name in sorted(alerts - fired)]
    if not silent:
        errors.append("no unit test checks that an alert stays silent (empty exp_alerts)")
    return errors


def dashboard_queries(board: dict[str, Any]) -> Iterator[tuple[int, str, str]]:
    for panel in board.get("panels") or []:
        for target in panel.get("targets") or []:
            yield panel.get("id", -1), str(panel.get("title", "")), str(target.get("expr", ""))


def check_dashboard(contract: dict[str, frozenset[str]], path: Path = DASHBOARD) -> tuple[list[str], list[str]]:
    try:
        board = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        return [f"{path}: not valid JSON: {exc}"], []
    errors: list[str] = []
    ids = [p.get("id") for p in board.get("panels") or []]
    if len(ids) != len(set(ids)) or None in ids:
        errors.append(f"{path.relative_to(ROOT)}: panel ids must be present and unique")
    exprs: list[str] = []
    for panel_id, title, expr in dashboard_queries(board):
        if not expr:
            errors.append(f"dashboard panel {panel_id} ({title}): a target without expr")
            continue
        errors.extend(f"dashboard panel {panel_id} ({title}): {e}" for e in expr_errors(expr, contract))
        exprs.append(expr)
    for variable in (board.get("templating") or {}).get("list") or []:
        query = variable.get("query")
        if isinstance(query, dict):
            query = query.get("query", "")
        if variable.get("type") == "query":
            errors.extend(f"dashboard variable {variable.get('name')}: {e}" for e in expr_errors(str(query), contract))
    if not exprs:
        errors.append(f"{path.relative_to(ROOT)}: no queries")
    return errors, exprs


def promql_for_promtool(expr: str) -> str:
    """A dashboard query with its Grafana variables replaced by values PromQL accepts."""
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    return re.sub(r"\$\{?[A-Za-z_][A-Za-z0-9_]*\}?", ".*", expr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--dashboard-rules",
        type=Path,
        metavar="FILE",
        help="write the dashboard's queries as recording rules, for promtool check rules",
    )
    args = parser.parse_args(argv)
    contract = load_contract()
    errors, alerts = check_rules(contract)
    errors += check_tests(alerts)
    dashboard_errors, exprs = check_dashboard(contract)
    errors += dashboard_errors
    if args.dashboard_rules:
        rules = [{"record": f"dashboard:query_{i}", "expr": promql_for_promtool(e)} for i, e in enumerate(exprs)]
        args.dashboard_rules.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    for error in errors:
        print(f"ERROR {error}")
    print(f"monitoring: {len(alerts)} alerts, {len(exprs)} dashboard queries, {len(errors)} errors")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
