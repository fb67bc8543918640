"""scripts/check_deploy_policy.py: the repository's manifests and compose file keep its state-and-secrets rules,
and each rule catches the mistake it is there for (a committed Secret, a literal password, an undocumented or
signing-key Secret, a readable KEK, one replica, a compose dependency that does not wait for health, weak TLS
over a routable network)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from tests.unit.deploy.deploy_helpers import (
    COMPOSE_FILE,
    DEPLOY,
    DEPLOY_DOC,
    find_object,
    kubernetes_manifests,
    load_yaml_documents,
)

Obj = dict[str, Any]
TOKEN_SERVICE = DEPLOY / "k8s" / "10-token-service.yaml"


def _manifests() -> list[Obj]:
    return [doc for path in kubernetes_manifests() for doc in load_yaml_documents(path)]


def _token_pod(docs: list[Obj]) -> Obj:
    pod: Obj = find_object(docs, "Deployment", "spiffe-broker")["spec"]["template"]["spec"]
    return pod


def _container(docs: list[Obj]) -> Obj:
    container: Obj = _token_pod(docs)["containers"][0]
    return container


def _volume(docs: list[Obj], name: str) -> Obj:
    volumes: list[Obj] = [v for v in _token_pod(docs)["volumes"] if v["name"] == name]
    (volume,) = volumes
    return volume


def _compose() -> Obj:
    loaded: Obj = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    return loaded


def test_repository_manifests_and_compose_file_pass(policy_checker: ModuleType) -> None:
    documented = DEPLOY_DOC.read_text(encoding="utf-8")

    assert policy_checker.check_kubernetes(_manifests(), documented) == []
    assert policy_checker.check_compose(_compose(), COMPOSE_FILE.parent) == []


def test_main_exits_zero_on_the_repository_and_one_on_a_finding(policy_checker: ModuleType, tmp_path: Path) -> None:
    docs = _manifests()
    _token_pod(docs)["volumes"].append({"name": "old", "secret": {"secretName": "spiffe-broker-signing-key"}})
    broken = tmp_path / "broken.yaml"
    broken.write_text(yaml.safe_dump_all(docs), encoding="utf-8")

    assert policy_checker.main([*map(str, kubernetes_manifests()), "--compose", str(COMPOSE_FILE)]) == 0
    assert policy_checker.main([str(broken)]) == 1


def _add_secret(docs: list[Obj]) -> None:
    docs.append({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "x", "namespace": "spiffe-broker"},
                 "stringData": {"password": "hunter2"}})  # fmt: skip


def _literal_kek(docs: list[Obj]) -> None:
    _container(docs)["env"].append({"name": "SPIFFE_BROKER_KEK", "value": "AAAA"})


def _url_with_password(docs: list[Obj]) -> None:
    env = _container(docs)["env"]
    env[:] = [e for e in env if e["name"] != "SPIFFE_BROKER_STORE__URL"]
    env.append({"name": "SPIFFE_BROKER_STORE__URL", "value": "postgresql://broker:hunter2@db/broker"})


def _undocumented_secret(docs: list[Obj]) -> None:
    _container(docs)["env"].append(
        {"name": "EXTRA", "valueFrom": {"secretKeyRef": {"name": "not-in-the-docs", "key": "k"}}}
    )


def _signing_key_secret(docs: list[Obj]) -> None:
    _token_pod(docs)["volumes"].append({"name": "old", "secret": {"secretName": "spiffe-broker-signing-key"}})


def _kek_mode(docs: list[Obj]) -> None:
    _volume(docs, "kek-secret")["secret"]["defaultMode"] = 0o440


def _world_readable(docs: list[Obj]) -> None:
    del _volume(docs, "store-secret")["secret"]["defaultMode"]  # the API default is 0644


def _one_replica(docs: list[Obj]) -> None:
    find_object(docs, "Deployment", "spiffe-broker")["spec"]["replicas"] = 1


def _no_pdb(docs: list[Obj]) -> None:
    docs.remove(find_object(docs, "PodDisruptionBudget", "spiffe-broker"))


K8S_MISTAKES: dict[str, tuple[Callable[[list[Obj]], None], str]] = {
    "committed-secret": (_add_secret, "a Secret with data is committed"),
    "literal-kek-env": (_literal_kek, "env SPIFFE_BROKER_KEK has a literal value"),
    "store-url-with-password": (_url_with_password, "the store URL holds a password"),
    "store-url-not-from-secret": (_url_with_password, "does not come from a secretKeyRef"),
    "undocumented-secret": (_undocumented_secret, "Secret not-in-the-docs, which docs/deploy.md does not tell"),
    "signing-key-secret": (_signing_key_secret, "signing keys live in the store"),
    "kek-group-readable": (_kek_mode, "a KEK Secret is mounted with defaultMode 0400"),
    "secret-world-readable": (_world_readable, "defaultMode 0644 lets others read it"),
    "one-replica": (_one_replica, "fewer than 2 replicas"),
    "no-disruption-budget": (_no_pdb, "no PodDisruptionBudget selects"),
}


@pytest.mark.parametrize(("mistake", "expected"), K8S_MISTAKES.values(), ids=K8S_MISTAKES.keys())
def test_kubernetes_mistake_is_reported(
    policy_checker: ModuleType, mistake: Callable[[list[Obj]], None], expected: str
) -> None:
    docs = copy.deepcopy(_manifests())
    mistake(docs)

    findings = policy_checker.check_kubernetes(docs, DEPLOY_DOC.read_text(encoding="utf-8"))

    assert any(expected in f for f in findings), findings


def _inline_postgres_password(c: Obj) -> None:
    c["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"] = "hunter2"


def _started_not_healthy(c: Obj) -> None:
    c["services"]["spiffe-broker"]["depends_on"]["postgres"]["condition"] = "service_started"


def _short_depends(c: Obj) -> None:
    c["services"]["spiffe-broker"]["depends_on"] = ["postgres"]


def _no_pg_isready(c: Obj) -> None:
    c["services"]["postgres"]["healthcheck"]["test"] = ["CMD", "true"]


def _published_port(c: Obj) -> None:
    c["services"]["postgres"]["ports"] = ["5432:5432"]


def _anonymous_data(c: Obj) -> None:
    c["services"]["postgres"]["volumes"] = [v for v in c["services"]["postgres"]["volumes"] if "postgres-data" not in v]


def _routable_store_network(c: Obj) -> None:
    c["networks"]["store"]["internal"] = False


def _no_sslmode(c: Obj) -> None:
    env = c["services"]["spiffe-broker"]["environment"]
    env["SPIFFE_BROKER_STORE__URL"] = env["SPIFFE_BROKER_STORE__URL"].replace("sslmode=disable&", "")


def _url_password(c: Obj) -> None:
    env = c["services"]["spiffe-broker"]["environment"]
    env["SPIFFE_BROKER_STORE__URL"] = "postgresql://spiffe_broker:pw@postgres/spiffe_broker?sslmode=verify-full"


def _secret_outside_ignored_dir(c: Obj) -> None:
    c["secrets"]["spiffe-broker-db-password"]["file"] = "./db-password"


COMPOSE_MISTAKES: dict[str, tuple[Callable[[Obj], None], str]] = {
    "inline-postgres-password": (_inline_postgres_password, "POSTGRES_PASSWORD holds a literal secret"),
    "depends-on-started": (_started_not_healthy, "depends_on postgres does not wait for service_healthy"),
    "depends-on-short-form": (_short_depends, "depends_on postgres does not wait for service_healthy"),
    "healthcheck-without-pg-isready": (_no_pg_isready, "no pg_isready healthcheck"),
    "published-port": (_published_port, "publishes a port"),
    "data-not-on-named-volume": (_anonymous_data, "not on a named volume"),
    "weak-tls-over-routable-network": (_routable_store_network, "not on internal networks only"),
    "no-sslmode": (_no_sslmode, "names no sslmode"),
    "password-in-url": (_url_password, "the store URL holds a password"),
    "secret-file-not-ignored": (_secret_outside_ignored_dir, "git does not ignore"),
}


@pytest.mark.parametrize(("mistake", "expected"), COMPOSE_MISTAKES.values(), ids=COMPOSE_MISTAKES.keys())
def test_compose_mistake_is_reported(policy_checker: ModuleType, mistake: Callable[[Obj], None], expected: str) -> None:
    compose = _compose()
    mistake(compose)

    findings = policy_checker.check_compose(compose, COMPOSE_FILE.parent)

    assert any(expected in f for f in findings), findings
