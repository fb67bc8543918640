"""Paths and small helpers for the deployment-file tests (imported by name: tests/ has no packages)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[3]
DEPLOY = REPO / "deploy"
CRD_DIR = DEPLOY / "spire" / "crds"
SCHEMA_DIR = DEPLOY / "schemas"
COMPOSE_DIR = DEPLOY / "compose"
CHECKER_PATH = REPO / "scripts" / "check_k8s_manifests.py"
POLICY_CHECKER_PATH = REPO / "scripts" / "check_deploy_policy.py"
DEPLOY_DOC = REPO / "docs" / "deploy.md"
COMPOSE_FILE = REPO / "docker-compose.yml"


NOT_MANIFESTS = frozenset({"compose", "helm", "monitoring"})  # Compose, chart sources, Prometheus rules and tests
PROMETHEUS_RULE = DEPLOY / "monitoring" / "spiffe-broker-prometheusrule.yaml"


def kubernetes_manifests() -> list[Path]:
    """Every YAML file under deploy/ that is a manifest, as validate-deploy.sh selects them: not deploy/compose/,
    deploy/helm/ (rendered by helm there) or deploy/monitoring/, except the PrometheusRule generated there."""
    files = [p for p in DEPLOY.rglob("*.y*ml") if not NOT_MANIFESTS & set(p.relative_to(DEPLOY).parts[:1])]
    return sorted([*files, PROMETHEUS_RULE])


def load_yaml_documents(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as stream:
        return [doc for doc in yaml.safe_load_all(stream) if doc is not None]


def find_object(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    matches = [d for d in docs if d.get("kind") == kind and d.get("metadata", {}).get("name") == name]
    assert len(matches) == 1, f"expected exactly one {kind}/{name}"
    return matches[0]


def spire_bin_dir() -> Path:
    """Same lookup as scripts/validate-deploy.sh and tests/integration/spire.py."""
    if os.environ.get("SPIRE_BIN_DIR"):
        return Path(os.environ["SPIRE_BIN_DIR"])
    return Path.home() / ".cache" / "spiffe-broker" / "spire-v1.15.3"
