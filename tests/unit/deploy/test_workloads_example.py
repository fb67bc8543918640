"""The example registration file drives the Kubernetes example: its exports validate and agree with it."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import yaml

from broker.identity.spiffeid import SpiffeId
from broker.registration import InMemoryEntryServer, export_cluster_spiffe_ids, export_policy, load_workloads, plan
from broker.tokens.policy import parse_policy
from tests.unit.deploy.deploy_helpers import DEPLOY, find_object, load_yaml_documents

EXAMPLE = DEPLOY.parent / "examples" / "workloads.yaml"


def test_exported_cluster_spiffe_ids_validate_against_the_crd_schema(checker: ModuleType, tmp_path: Path) -> None:
    exported = tmp_path / "clusterspiffeids.yaml"
    exported.write_text(export_cluster_spiffe_ids(load_workloads(EXAMPLE)))
    findings = checker.check_paths([DEPLOY / "spire" / "crds", exported])
    assert findings == [], "\n".join(map(str, findings))
    assert exported.read_text().count("kind: ClusterSPIFFEID") == 3


def test_exported_cluster_spiffe_ids_name_the_hardened_helm_charts_controller_class() -> None:
    # The hardened chart's controller has watchClassless: false: a ClusterSPIFFEID without its className is ignored.
    documents = [d for d in yaml.safe_load_all(export_cluster_spiffe_ids(load_workloads(EXAMPLE))) if d]
    assert {d["spec"]["className"] for d in documents} == {"spire-mgmt-spire"}


def test_the_deployed_controller_manager_watches_the_class_the_export_writes() -> None:
    server = load_yaml_documents(DEPLOY / "spire" / "10-server.yaml")
    config_map = find_object(server, "ConfigMap", "spire-controller-manager")
    config = yaml.safe_load(config_map["data"]["controller-manager-config.yaml"])
    documents = [d for d in yaml.safe_load_all(export_cluster_spiffe_ids(load_workloads(EXAMPLE))) if d]
    assert {d["spec"]["className"] for d in documents} == {config["className"]}
    # The classless examples in deploy/ stay reconciled.
    assert config["watchClassless"] is True


def test_example_parents_every_workload_to_its_own_node_alias() -> None:
    example = load_workloads(EXAMPLE)
    (alias,) = example.node_aliases
    assert [str(s) for s in alias.selectors] == ["k8s_psat:cluster:demo-cluster"]
    assert 'cluster = "demo-cluster"' in (DEPLOY / "spire" / "20-agent.yaml").read_text()
    assert {w.parent_id for w in example.workloads} == {alias.spiffe_id}
    assert plan(example, InMemoryEntryServer()).warnings == ()


def test_exported_cluster_spiffe_id_with_a_typo_is_caught(checker: ModuleType, tmp_path: Path) -> None:
    exported = tmp_path / "clusterspiffeids.yaml"
    text = export_cluster_spiffe_ids(load_workloads(EXAMPLE)).replace("spiffeIDTemplate", "spiffeIdTemplate", 1)
    exported.write_text(text)
    assert checker.check_paths([DEPLOY / "spire" / "crds", exported]) != []


def test_exported_policy_grants_what_the_k8s_example_asks_for() -> None:
    policy = parse_policy(export_policy(load_workloads(EXAMPLE)), source="exported")
    web = SpiffeId.parse("spiffe://example.org/ns/shop/sa/web")
    grant = policy.authorize(web, "https://demo-api", frozenset({"hello:read"}))
    assert grant.audience == "https://demo-api"
    k8s_app = (DEPLOY / "k8s" / "20-example-app.yaml").read_text()
    assert "--audience https://demo-api" in k8s_app
