"""The Kubernetes manifests under deploy/: they validate strictly, the checker catches typos, and every
pod runs hardened (non-root, read-only root, no privilege escalation, no capabilities, limits)."""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from tests.unit.deploy.deploy_helpers import (
    CRD_DIR,
    DEPLOY,
    SCHEMA_DIR,
    find_object,
    kubernetes_manifests,
    load_yaml_documents,
)

TOKEN_SERVICE = DEPLOY / "k8s" / "10-token-service.yaml"
EXAMPLE_APP = DEPLOY / "k8s" / "20-example-app.yaml"
SERVER = DEPLOY / "spire" / "10-server.yaml"
CLUSTER_SPIFFE_ID = DEPLOY / "spire" / "30-clusterspiffeid-example.yaml"
WORKLOAD_API_ENV = "unix:///spiffe-workload-api/spire-agent.sock"
TOKEN_SERVICE_URL = "https://spiffe-broker.spiffe-broker.svc:8443"

# Containers that may run as root, and why (the comments in deploy/spire/20-agent.yaml say the same).
ROOT_ALLOWED = {
    ("spire-agent", "spire-agent"): "creates the Workload API socket in a root-owned hostPath dir",
    ("spire-agent", "spiffe-csi-driver"): "privileged: Bidirectional mount propagation",
    ("spire-agent", "node-driver-registrar"): "writes into the kubelet's root-owned plugin dir",
}
PRIVILEGED_ALLOWED = {("spire-agent", "spiffe-csi-driver")}

Obj = dict[str, Any]


def _pods() -> list[tuple[str, Obj, Obj]]:
    """(id, workload object, pod spec) for every pod template in deploy/."""
    pods = []
    for path in kubernetes_manifests():
        for doc in load_yaml_documents(path):
            template = (doc.get("spec") or {}).get("template") or {}
            if doc.get("kind") in {"Deployment", "StatefulSet", "DaemonSet", "Job"}:
                pods.append((f"{doc['kind']}/{doc['metadata']['name']}", doc, template["spec"]))
    return pods


def _containers() -> list[tuple[str, str, Obj, Obj]]:
    """(id, workload name, pod spec, container) for every container, init containers included."""
    out = []
    for pod_id, doc, pod in _pods():
        for container in [*pod.get("initContainers", []), *pod.get("containers", [])]:
            out.append((f"{pod_id}/{container['name']}", doc["metadata"]["name"], pod, container))
    return out


PODS = _pods()
CONTAINERS = _containers()
WORKLOAD_API_CLIENTS = [
    c for c in CONTAINERS if any(e["name"] == "SPIFFE_ENDPOINT_SOCKET" for e in c[3].get("env", []))
]


def _rewrite(src: Path, dst_dir: Path, kind: str, name: str, edit: Callable[[Obj], None]) -> Path:
    """Copy ``src`` into ``dst_dir`` with ``edit`` applied to the one object ``kind``/``name``."""
    docs = load_yaml_documents(src)
    edit(find_object(docs, kind, name))
    dst = dst_dir / src.name
    dst.write_text(yaml.safe_dump_all(docs, sort_keys=False), encoding="utf-8")
    return dst


def _at(obj: Any, path: str) -> Any:
    for part in path.split(".") if path else []:
        obj = obj[int(part)] if part.isdigit() else obj[part]
    return obj


def ren(path: str, old: str, new: str) -> Callable[[Obj], None]:
    """Edit: rename key ``old`` of the mapping at dotted ``path`` to ``new``."""
    return lambda doc: _at(doc, path).__setitem__(new, _at(doc, path).pop(old))


def put(path: str, key: str, value: Any) -> Callable[[Obj], None]:
    return lambda doc: _at(doc, path).__setitem__(key, value)


def drop(path: str, key: str) -> Callable[[Obj], None]:
    return lambda doc: _at(doc, path).pop(key)


def embedded(key: str, edit: Callable[[Obj], None]) -> Callable[[Obj], None]:
    """Edit the YAML file stored under ``data.<key>`` of a ConfigMap."""

    def apply(cm: Obj) -> None:
        content = yaml.safe_load(cm["data"][key])
        edit(content)
        cm["data"][key] = yaml.safe_dump(content)

    return apply


def test_every_kubernetes_manifest_passes_strict_validation(checker: ModuleType) -> None:
    findings = checker.check_paths(kubernetes_manifests(), schema_dir=SCHEMA_DIR)

    assert [str(f) for f in findings] == []


def test_manifests_cover_spire_broker_and_custom_resources() -> None:
    kinds = {doc["kind"] for path in kubernetes_manifests() for doc in load_yaml_documents(path)}

    assert {
        "StatefulSet",
        "DaemonSet",
        "CSIDriver",
        "CustomResourceDefinition",
        "ClusterSPIFFEID",
        "Deployment",
        "PodDisruptionBudget",
        "Service",
        "ConfigMap",
        "ServiceAccount",
    } <= kinds


POD = "spec.template.spec"
TOKEN = (TOKEN_SERVICE, "Deployment", "spiffe-broker")
CSID = (CLUSTER_SPIFFE_ID, "ClusterSPIFFEID", "workloads-by-service-account")
WEB = (EXAMPLE_APP, "Deployment", "web")
# id -> (file, kind, name, edit, text the finding must contain)
TYPOS: dict[str, tuple[Path, str, str, Callable[[Obj], None], str]] = {
    "deployment-replica": (*TOKEN, ren("spec", "replicas", "replica"), "replica"),
    "container-imagePulPolicy": (*TOKEN, ren(f"{POD}.containers.0", "imagePullPolicy", "imagePulPolicy"), "imagePul"),
    "deployment-replicas-type": (*TOKEN, put("spec", "replicas", "two"), "replicas"),
    "pdb-field": (
        TOKEN_SERVICE,
        "PodDisruptionBudget",
        "spiffe-broker",
        ren("spec", "minAvailable", "minAvail"),
        "minAvail",
    ),
    "service-without-namespace": (
        TOKEN_SERVICE,
        "Service",
        "spiffe-broker",
        drop("metadata", "namespace"),
        "namespace",
    ),
    "clusterspiffeid-spec-field": (*CSID, ren("spec", "jwtTtl", "jwtTTL"), "jwtTTL"),
    "clusterspiffeid-ttl-type": (*CSID, put("spec", "ttl", 3600), "ttl"),
    "clusterspiffeid-required": (*CSID, drop("spec", "spiffeIDTemplate"), "spiffeIDTemplate"),
    "clusterspiffeid-metadata": (*CSID, ren("metadata", "name", "nmae"), "nmae"),
    "clusterspiffeid-namespaced": (*CSID, put("metadata", "namespace", "shop"), "cluster-scoped"),
    "controller-manager-config-key": (
        SERVER,
        "ConfigMap",
        "spire-controller-manager",
        embedded("controller-manager-config.yaml", ren("", "health", "healthProbe")),
        "healthProbe",
    ),
    "policy-rule-key": (
        TOKEN_SERVICE,
        "ConfigMap",
        "spiffe-broker-policy",
        embedded("policy.yaml", ren("rules.0", "audiences", "audience")),
        "audience",
    ),
    "volumemount-without-volume": (*WEB, put(f"{POD}.containers.0.volumeMounts.0", "name", "sock"), "'sock'"),
    "probe-port-undeclared": (*TOKEN, put(f"{POD}.containers.0.livenessProbe.httpGet", "port", "hp"), "'hp'"),
}


@pytest.mark.parametrize(("src", "kind", "name", "edit", "expected"), TYPOS.values(), ids=TYPOS.keys())
def test_checker_rejects_misspelt_or_invalid_field(
    checker: ModuleType,
    tmp_path: Path,
    src: Path,
    kind: str,
    name: str,
    edit: Callable[[Obj], None],
    expected: str,
) -> None:
    broken = _rewrite(src, tmp_path, kind, name, edit)

    findings = checker.check_paths([broken, CRD_DIR], versions=("1.37",), schema_dir=SCHEMA_DIR)

    assert findings, "the broken manifest passed"
    assert any(expected in str(f) for f in findings), [str(f) for f in findings]


def test_checker_fails_custom_resource_without_its_crd(checker: ModuleType) -> None:
    findings = checker.check_paths([CLUSTER_SPIFFE_ID], versions=("1.37",), schema_dir=SCHEMA_DIR)

    assert [f.message for f in findings] == [
        "no schema: Couldn't find schema for kind ClusterSPIFFEID with api version "
        "spire.spiffe.io/v1alpha1 for kubernetes version 1.37"
    ]


def test_checker_fails_configmap_file_without_schema(checker: ModuleType, tmp_path: Path) -> None:
    cm = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "x", "namespace": "shop"},
        "data": {"settings.yaml": "a: 1\n"},
    }
    path = tmp_path / "cm.yaml"
    path.write_text(yaml.safe_dump(cm), encoding="utf-8")

    findings = checker.check_paths([path], versions=("1.37",), schema_dir=SCHEMA_DIR)

    assert [f.message for f in findings] == ["data.settings.yaml: no schema for this embedded file"]


def test_checker_main_exits_nonzero_on_a_finding(checker: ModuleType, tmp_path: Path) -> None:
    broken = _rewrite(TOKEN_SERVICE, tmp_path, "Deployment", "spiffe-broker", ren("spec", "replicas", "replica"))

    assert checker.main([str(broken), "-k", "1.37"]) == 1
    assert checker.main([str(TOKEN_SERVICE), "-k", "1.37"]) == 0


@pytest.mark.parametrize(("pod_id", "doc", "pod"), PODS, ids=[p[0] for p in PODS])
def test_pod_uses_runtime_default_seccomp_and_no_host_network(pod_id: str, doc: Obj, pod: Obj) -> None:
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert not pod.get("hostNetwork")
    if doc["metadata"]["name"] != "spire-agent":
        assert not pod.get("hostPID")
        assert all("hostPath" not in volume for volume in pod.get("volumes", []))


@pytest.mark.parametrize(("cid", "owner", "pod", "container"), CONTAINERS, ids=[c[0] for c in CONTAINERS])
def test_container_is_hardened_and_bounded(cid: str, owner: str, pod: Obj, container: Obj) -> None:
    sc = container["securityContext"]
    key = (owner, container["name"])
    non_root = sc.get("runAsNonRoot", pod.get("securityContext", {}).get("runAsNonRoot"))

    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert (non_root is True) == (key not in ROOT_ALLOWED)
    assert sc.get("privileged", False) == (key in PRIVILEGED_ALLOWED)
    if key not in PRIVILEGED_ALLOWED:
        assert sc["allowPrivilegeEscalation"] is False
    assert {"cpu", "memory"} <= container["resources"]["limits"].keys()
    assert {"cpu", "memory"} <= container["resources"]["requests"].keys()


def test_broker_sidecar_is_native_sidecar_with_health_and_readiness_probes() -> None:
    web = find_object(load_yaml_documents(EXAMPLE_APP), "Deployment", "web")["spec"]["template"]["spec"]
    (sidecar,) = web["initContainers"]
    args = sidecar["args"]

    assert sidecar["restartPolicy"] == "Always"
    assert args[:5] == ["sidecar", "--socket", "/run/broker/token.sock", "--token-service", TOKEN_SERVICE_URL]
    assert args[args.index("--http-port") + 1] == "8081"
    # The sidecar listens on loopback only, so the probes run in the container against 127.0.0.1.
    assert "http://127.0.0.1:8081/healthz" in sidecar["livenessProbe"]["exec"]["command"][-1]
    assert "http://127.0.0.1:8081/readyz" in sidecar["readinessProbe"]["exec"]["command"][-1]


def test_app_and_sidecar_share_the_token_socket_through_an_emptydir() -> None:
    web = find_object(load_yaml_documents(EXAMPLE_APP), "Deployment", "web")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in web["volumes"]}
    mounts = [
        {m["name"]: m["mountPath"] for m in c["volumeMounts"]} for c in [*web["initContainers"], *web["containers"]]
    ]

    assert "emptyDir" in volumes["broker-socket"]
    assert all(m["broker-socket"] == "/run/broker" for m in mounts)


@pytest.mark.parametrize(
    ("cid", "owner", "pod", "container"), WORKLOAD_API_CLIENTS, ids=[c[0] for c in WORKLOAD_API_CLIENTS]
)
def test_broker_container_reaches_workload_api_through_csi_volume(
    cid: str, owner: str, pod: Obj, container: Obj
) -> None:
    env = {e["name"]: e.get("value") for e in container.get("env", [])}
    csi = [v["name"] for v in pod["volumes"] if v.get("csi") == {"driver": "csi.spiffe.io", "readOnly": True}]
    mounts = {m["name"]: m for m in container["volumeMounts"]}

    assert env["SPIFFE_ENDPOINT_SOCKET"] == WORKLOAD_API_ENV
    assert len(csi) == 1
    assert mounts[csi[0]]["mountPath"] == "/spiffe-workload-api"
    assert mounts[csi[0]]["readOnly"] is True


def test_token_service_runs_two_replicas_covered_by_a_disruption_budget() -> None:
    docs = load_yaml_documents(TOKEN_SERVICE)
    deployment = find_object(docs, "Deployment", "spiffe-broker")
    pdb = find_object(docs, "PodDisruptionBudget", "spiffe-broker")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}

    assert deployment["spec"]["replicas"] >= 2
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"] == deployment["spec"]["selector"]
    assert ports[container["livenessProbe"]["httpGet"]["port"]] == 8080
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert ports["https"] == 8443


def test_spire_images_are_pinned_to_release_1_15_3() -> None:
    images = {c["image"] for _, _, _, c in CONTAINERS if "/spire-" in c["image"]}

    assert images == {
        "ghcr.io/spiffe/spire-server:1.15.3",
        "ghcr.io/spiffe/spire-agent:1.15.3",
        "ghcr.io/spiffe/spire-controller-manager:0.6.4",
    }


def test_exactly_the_broker_processes_talk_to_the_workload_api() -> None:
    assert {c[0] for c in WORKLOAD_API_CLIENTS} == {
        "Deployment/spiffe-broker/token-service",
        "Deployment/web/spiffe-broker-sidecar",
        "Deployment/web/app",
        "Deployment/demo-api/demo-api",
    }


def _token_pod() -> Obj:
    pod: Obj = find_object(load_yaml_documents(TOKEN_SERVICE), "Deployment", "spiffe-broker")["spec"]["template"][
        "spec"
    ]
    return pod


def _kek_file() -> str:
    config = find_object(load_yaml_documents(TOKEN_SERVICE), "ConfigMap", "spiffe-broker-config")
    path: str = tomllib.loads(config["data"]["broker.toml"])["keyring"]["kek_file"]
    return path


def test_token_service_installs_the_kek_from_its_secret_into_memory_with_mode_0400() -> None:
    pod = _token_pod()
    volumes = {v["name"]: v for v in pod["volumes"]}
    (installer,) = pod["initContainers"]
    (service,) = pod["containers"]
    installer_mounts = {m["name"]: m["mountPath"] for m in installer["volumeMounts"]}
    service_mounts = {m["name"]: m for m in service["volumeMounts"]}

    assert volumes["kek-secret"]["secret"] == {"secretName": "spiffe-broker-kek", "defaultMode": 0o400}
    assert volumes["kek"]["emptyDir"]["medium"] == "Memory"
    assert "install -m 0400" in installer["args"][0]
    assert f"{installer_mounts['kek-secret']}/*" in installer["args"][0]
    assert installer_mounts["kek"] == service_mounts["kek"]["mountPath"]
    assert service_mounts["kek"]["readOnly"] is True
    assert "kek-secret" not in service_mounts  # the service reads only the 0400 copy
    assert _kek_file().startswith(service_mounts["kek"]["mountPath"] + "/")


def test_token_service_reads_its_store_url_from_a_secret_and_its_config_from_the_configmap() -> None:
    pod = _token_pod()
    (service,) = pod["containers"]
    env = {e["name"]: e for e in service["env"]}
    mounts = {m["name"]: m["mountPath"] for m in service["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}

    assert env["SPIFFE_BROKER_STORE__URL"]["valueFrom"]["secretKeyRef"] == {"name": "spiffe-broker-store", "key": "url"}
    assert env["SPIFFE_BROKER_CONFIG"]["value"] == f"{mounts['config']}/broker.toml"
    assert volumes["config"]["configMap"]["name"] == "spiffe-broker-config"
    store_secret = volumes["store-secret"]["secret"]
    assert store_secret["secretName"] == "spiffe-broker-store"
    assert {item["key"] for item in store_secret["items"]} == {"password", "ca.crt"}  # never the URL itself
    assert store_secret["defaultMode"] & 0o007 == 0


def test_token_service_replicas_prefer_different_nodes() -> None:
    deployment = find_object(load_yaml_documents(TOKEN_SERVICE), "Deployment", "spiffe-broker")
    (term,) = deployment["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"][
        "preferredDuringSchedulingIgnoredDuringExecution"
    ]

    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert term["podAffinityTerm"]["labelSelector"] == deployment["spec"]["selector"]


def test_no_signing_key_secret_and_no_committed_secret_or_private_key() -> None:
    all_docs = [doc for path in kubernetes_manifests() for doc in load_yaml_documents(path)]
    text = "\n".join(path.read_text(encoding="utf-8") for path in kubernetes_manifests())

    assert "Secret" not in {doc["kind"] for doc in all_docs}
    assert "signing-key" not in text
    assert "token-signing-key.pem" not in text
    assert not [p for p in DEPLOY.rglob("*") if p.is_file() and b"PRIVATE KEY-----" in p.read_bytes()]
