#!/usr/bin/env python3
"""Offline, strict validation of the Kubernetes manifests under deploy/.

Every YAML document must be a Kubernetes object, and every object must validate against a schema;
a missing schema is a failure, not a warning:

- built-in kinds: the OpenAPI schemas shipped with kubernetes-validate, strict variant (an unknown
  field such as ``replica`` or ``imagePulPolicy`` is an error), for each requested Kubernetes version;
- custom resources (e.g. ClusterSPIFFEID): the ``openAPIV3Schema`` of the matching
  CustomResourceDefinition found among the same files, made strict the way the API server's
  ``fieldValidation=Strict`` treats pruned fields (unknown fields are errors unless a node sets
  ``x-kubernetes-preserve-unknown-fields``), with ``metadata`` checked as ObjectMeta;
- files embedded in ConfigMaps: ``policy.yaml`` against deploy/schemas/broker-policy.schema.json,
  a ControllerManagerConfig against deploy/schemas/controllermanagerconfig.schema.json, ``*.toml``
  (broker config) must parse, ``*.json`` must be a Grafana dashboard; ``*.conf`` files (SPIRE HCL) are extracted with
  ``--extract-spire-configs`` for ``spire-server validate``.

Also checked, because schemas cannot: namespaced objects name their namespace, cluster-scoped ones do
not, and inside pod specs every volumeMount names a volume and every named probe port exists.

Exit status: 0 when everything passed, 1 on any finding, 2 on unusable input.
"""

from __future__ import annotations

import argparse
import copy
import importlib.resources
import json
import sys
import tomllib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml
from kubernetes_validate import utils as kv_utils
from referencing import Registry, Resource

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SCHEMA_DIR = REPO_ROOT / "deploy" / "schemas"
DEFAULT_VERSIONS = ("1.29", "1.37")
OBJECT_META_REF = "https://kubernetes.io/api/_definitions.json#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
CLUSTER_SCOPED_KINDS = frozenset(
    {
        "Namespace",
        "ClusterRole",
        "ClusterRoleBinding",
        "CustomResourceDefinition",
        "CSIDriver",
        "StorageClass",
        "PersistentVolume",
        "PriorityClass",
        "ValidatingWebhookConfiguration",
        "MutatingWebhookConfiguration",
    }
)
POD_TEMPLATE_KINDS = frozenset({"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"})

Obj = dict[str, Any]


@dataclass(frozen=True)
class Document:
    """One YAML document of a manifest file."""

    path: Path
    index: int
    body: Any  # a mapping for Kubernetes objects; anything YAML allows otherwise

    @property
    def label(self) -> str:
        body = self.body if isinstance(self.body, dict) else {}
        kind = str(body.get("kind", "?"))
        name = str((body.get("metadata") or {}).get("name", "?"))
        return f"{self.path}[{self.index}] {kind}/{name}"


@dataclass(frozen=True)
class Finding:
    """One validation failure, printed as a single line."""

    where: str
    message: str

    def __str__(self) -> str:
        return f"ERROR {self.where}: {self.message}"


@dataclass(frozen=True)
class CustomResourceSchema:
    """The strict JSON schema of one served version of a CRD."""

    kind: str
    cluster_scoped: bool
    schema: Obj


def manifest_files(paths: Sequence[Path]) -> list[Path]:
    """Expand directories to their *.yaml / *.yml files, recursively, in sorted order."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(sorted(p for p in path.rglob("*") if p.suffix in {".yaml", ".yml"}))
        else:
            files.append(path)
    return files


def load_documents(paths: Sequence[Path]) -> list[Document]:
    """Parse every non-empty YAML document of the given files and directories."""
    docs: list[Document] = []
    for file in manifest_files(paths):
        with file.open(encoding="utf-8") as stream:
            for index, body in enumerate(yaml.safe_load_all(stream)):
                if body is not None:
                    docs.append(Document(file, index, body))
    return docs


def pod_specs(body: Obj) -> Iterator[tuple[str, Obj]]:
    """Yield (location, pod spec) for a Pod, a workload with a pod template, or a CronJob."""
    kind, spec = body.get("kind"), body.get("spec") or {}
    if kind == "Pod":
        yield "spec", spec
    elif kind in POD_TEMPLATE_KINDS:
        yield "spec.template.spec", (spec.get("template") or {}).get("spec") or {}
    elif kind == "CronJob":
        job = (spec.get("jobTemplate") or {}).get("spec") or {}
        yield "spec.jobTemplate.spec.template.spec", (job.get("template") or {}).get("spec") or {}


def all_containers(pod: Obj) -> list[Obj]:
    """Init containers (including native sidecars) followed by regular containers."""
    return list(pod.get("initContainers") or []) + list(pod.get("containers") or [])


def _strict(schema: Any) -> Any:
    """Return a copy of an OpenAPI v3 structural schema in which unknown object fields are errors."""
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: _strict(value) for key, value in schema.items()}
    if out.pop("x-kubernetes-int-or-string", False):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if out.pop("nullable", False) and isinstance(out.get("type"), str):  # OpenAPI 3.0 spelling of null
        out["type"] = [out["type"], "null"]
    preserve = out.get("x-kubernetes-preserve-unknown-fields", False)
    if "properties" in out and "additionalProperties" not in out and not preserve:
        out["additionalProperties"] = False
    if isinstance(schema.get("properties"), dict):  # keep property names, do not treat them as keywords
        out["properties"] = {name: _strict(sub) for name, sub in schema["properties"].items()}
    return out


def custom_resource_schemas(docs: Sequence[Document]) -> dict[tuple[str, str], CustomResourceSchema]:
    """Map (apiVersion, kind) of every served CRD version to its strict schema."""
    found: dict[tuple[str, str], CustomResourceSchema] = {}
    for doc in docs:
        if not isinstance(doc.body, dict) or doc.body.get("kind") != "CustomResourceDefinition":
            continue
        spec = doc.body.get("spec") or {}
        kind = spec.get("names", {}).get("kind", "")
        for version in spec.get("versions") or []:
            raw = (version.get("schema") or {}).get("openAPIV3Schema")
            if not version.get("served") or raw is None:
                continue
            schema = _strict(copy.deepcopy(raw))
            schema.setdefault("properties", {})["metadata"] = {"$ref": OBJECT_META_REF}
            api_version = f"{spec.get('group')}/{version.get('name')}"
            found[(api_version, kind)] = CustomResourceSchema(kind, spec.get("scope") == "Cluster", schema)
    return found


@cache
def _definitions_registry(k8s_version: str) -> Registry[Any]:
    """Registry holding kubernetes-validate's strict definitions (ObjectMeta etc.) for a version."""
    version = [v for v in kv_utils.all_versions() if kv_utils.major_minor(v) <= k8s_version][-1]
    ref = importlib.resources.files("kubernetes_validate").joinpath(
        f"kubernetes-json-schema/v{version}-local-strict/_definitions.json"
    )
    definitions = json.loads(ref.read_text(encoding="utf-8"))
    return Resource.from_contents(definitions) @ Registry()


def _schema_errors(instance: Any, schema: Obj, registry: Registry[Any] | None = None) -> list[str]:
    validator = jsonschema.Draft202012Validator(schema, registry=registry or Registry())
    errors = sorted(validator.iter_errors(instance), key=lambda e: [str(p) for p in e.absolute_path])
    return [f"{'.'.join(str(p) for p in e.absolute_path) or '<root>'}: {e.message}" for e in errors]


@cache
def _load_schema(path: Path) -> Obj:
    loaded: Obj = json.loads(path.read_text(encoding="utf-8"))
    return loaded


def check_object(doc: Document, crs: dict[tuple[str, str], CustomResourceSchema], versions: Sequence[str]) -> list[str]:
    """Schema-validate one object (against each Kubernetes version for built-in kinds)."""
    body = doc.body
    if not isinstance(body, dict) or not body.get("apiVersion") or not body.get("kind"):
        return ["not a Kubernetes object (apiVersion and kind are required)"]
    custom = crs.get((str(body["apiVersion"]), str(body["kind"])))
    if custom is not None:
        newest = max(versions, key=lambda v: tuple(int(n) for n in v.split(".")))
        errors = _schema_errors(body, custom.schema, _definitions_registry(newest))
        return errors + _scope_errors(body, custom.cluster_scoped)
    return _builtin_errors(body, versions)


def _builtin_errors(body: Obj, versions: Sequence[str]) -> list[str]:
    errors: list[str] = []
    for version in versions:
        try:
            kubernetes_validate.validate(body, version, strict=True)
        except kv_utils.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path) or "<root>"
            errors.append(f"[k8s {version}] {path}: {exc.message}")
        except (kv_utils.SchemaNotFoundError, kv_utils.InvalidSchemaError) as exc:
            return [f"no schema: {exc.message}"]  # unknown kind: its scope is unknown too
    return errors + _scope_errors(body, body["kind"] in CLUSTER_SCOPED_KINDS)


def _scope_errors(body: Obj, cluster_scoped: bool) -> list[str]:
    namespace = (body.get("metadata") or {}).get("namespace")
    if cluster_scoped and namespace:
        return ["metadata.namespace: set on a cluster-scoped object"]
    if not cluster_scoped and not namespace:
        return ["metadata.namespace: missing (kubectl would use the current context's namespace)"]
    return []


def check_pod_references(body: Obj) -> list[str]:
    """volumeMounts name declared volumes (or StatefulSet claim templates); named probe ports exist."""
    errors: list[str] = []
    claims = {(t.get("metadata") or {}).get("name") for t in (body.get("spec") or {}).get("volumeClaimTemplates") or []}
    for where, pod in pod_specs(body):
        volumes = {v.get("name") for v in pod.get("volumes") or []} | claims
        for container in all_containers(pod):
            cname = container.get("name")
            for mount in container.get("volumeMounts") or []:
                if mount.get("name") not in volumes:
                    errors.append(f"{where}: container {cname}: volumeMount {mount.get('name')!r} has no volume")
            ports = {p.get("name") for p in container.get("ports") or [] if p.get("name")}
            for probe_name in ("livenessProbe", "readinessProbe", "startupProbe"):
                probe = container.get(probe_name) or {}
                port = (probe.get("httpGet") or probe.get("tcpSocket") or {}).get("port")
                if isinstance(port, str) and port not in ports:
                    errors.append(f"{where}: container {cname}: {probe_name} port {port!r} is not declared")
    return errors


def _toml_errors(key: str, text: str) -> list[str]:
    """A broker config file must parse as TOML; the broker's own loader checks its keys (tests/unit/deploy)."""
    try:
        tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        return [f"data.{key}: not valid TOML: {exc}"]
    return []


def _dashboard_errors(key: str, text: str) -> list[str]:
    """The only JSON files ConfigMaps carry here are Grafana dashboards (scripts/check_monitoring.py checks
    their queries): valid JSON, an object with a title and a list of panels."""
    try:
        content = json.loads(text)
    except json.JSONDecodeError as exc:
        return [f"data.{key}: not valid JSON: {exc}"]
    if not isinstance(content, dict) or not content.get("title") or not isinstance(content.get("panels"), list):
        return [f"data.{key}: no validator for this embedded file (only Grafana dashboards are known)"]
    return []


def check_embedded_files(body: Obj, schema_dir: Path) -> list[str]:
    """Validate YAML files carried in a ConfigMap against their own schema (missing schema fails)."""
    if body.get("kind") != "ConfigMap":
        return []
    errors: list[str] = []
    for key, text in (body.get("data") or {}).items():
        if key.endswith(".conf"):
            continue  # SPIRE HCL: checked by spire-server/spire-agent validate after extraction
        if key.endswith(".toml"):
            errors.extend(_toml_errors(key, text))
            continue
        if key.endswith(".json"):
            errors.extend(_dashboard_errors(key, text))
            continue
        if not key.endswith((".yaml", ".yml")):
            errors.append(f"data.{key}: no validator for this embedded file type")
            continue
        content = yaml.safe_load(text)
        if key == "policy.yaml":
            schema_file = "broker-policy.schema.json"
        elif isinstance(content, dict) and content.get("kind") == "ControllerManagerConfig":
            schema_file = "controllermanagerconfig.schema.json"
        else:
            errors.append(f"data.{key}: no schema for this embedded file")
            continue
        schema = _load_schema(schema_dir / schema_file)
        errors.extend(f"data.{key}: {message}" for message in _schema_errors(content, schema))
    return errors


def check_documents(
    docs: Sequence[Document], *, versions: Sequence[str] = DEFAULT_VERSIONS, schema_dir: Path = DEFAULT_SCHEMA_DIR
) -> list[Finding]:
    """Run every check over already loaded documents."""
    crs = custom_resource_schemas(docs)
    findings: list[Finding] = []
    for doc in docs:
        messages = check_object(doc, crs, versions)
        if isinstance(doc.body, dict):
            messages += check_pod_references(doc.body) + check_embedded_files(doc.body, schema_dir)
        findings.extend(Finding(doc.label, message) for message in messages)
    return findings


def check_paths(
    paths: Sequence[Path], *, versions: Sequence[str] = DEFAULT_VERSIONS, schema_dir: Path = DEFAULT_SCHEMA_DIR
) -> list[Finding]:
    """Load and check manifests; CRDs found anywhere in ``paths`` define the custom kinds."""
    return check_documents(load_documents(paths), versions=versions, schema_dir=schema_dir)


def extract_spire_configs(docs: Sequence[Document], out_dir: Path) -> list[Path]:
    """Write every ConfigMap ``*.conf`` entry to ``out_dir/<namespace>.<configmap>.<key>``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for doc in docs:
        if not isinstance(doc.body, dict) or doc.body.get("kind") != "ConfigMap":
            continue
        meta = doc.body.get("metadata") or {}
        for key, text in (doc.body.get("data") or {}).items():
            if key.endswith(".conf"):
                target = out_dir / f"{meta.get('namespace')}.{meta.get('name')}.{key}"
                target.write_text(text, encoding="utf-8")
                written.append(target)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("paths", nargs="+", type=Path, help="manifest files or directories")
    parser.add_argument(
        "-k",
        "--kubernetes-version",
        action="append",
        dest="versions",
        help=f"Kubernetes minor version(s) to validate against (default {DEFAULT_VERSIONS})",
    )
    parser.add_argument("--schema-dir", type=Path, default=DEFAULT_SCHEMA_DIR)
    parser.add_argument(
        "--extract-spire-configs", type=Path, metavar="DIR", help="also write ConfigMap *.conf entries into DIR"
    )
    args = parser.parse_args(argv)
    try:
        docs = load_documents(args.paths)
    except (OSError, yaml.YAMLError) as exc:
        print(f"FATAL cannot read manifests: {exc}", file=sys.stderr)
        return 2
    findings = check_documents(docs, versions=args.versions or DEFAULT_VERSIONS, schema_dir=args.schema_dir)
    for finding in findings:
        print(finding)
    if args.extract_spire_configs:
        for path in extract_spire_configs(docs, args.extract_spire_configs):
            print(f"INFO extracted {path}")
    print(f"{len(docs)} objects checked, {len(findings)} errors")
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
