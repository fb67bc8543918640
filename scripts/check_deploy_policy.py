#!/usr/bin/env python3
"""Offline checks of how the deployment files handle state and secrets (what a schema cannot say).

Kubernetes (every manifest given):

- no Secret object carries data (``data`` / ``stringData``): secrets are never committed;
- every Secret a pod references (volume, projected volume, ``secretKeyRef``, ``envFrom``) is named in
  docs/deploy.md, where the operator is told to create it;
- no Secret named like the old hand-copied signing key (``*signing-key*``) is referenced;
- no secret-bearing environment variable (``SPIFFE_BROKER_KEK``, ``PGPASSWORD``, ``*PASSWORD*``,
  ``*SECRET*``) has a literal ``value``, and a literal store URL holds no password;
- Secret volumes give others no access (``defaultMode`` without ``o`` bits); a KEK Secret volume is ``0400``;
- the token service (``spiffe-broker server``) runs ``replicas >= 2`` with its store URL from a
  ``secretKeyRef``, and a PodDisruptionBudget selects its pods.

docker-compose.yml:

- no literal secret in ``environment`` (a ``*PASSWORD*`` variable must be a ``*_FILE`` path); the store
  URL holds no password;
- every ``depends_on`` on a service that has a healthcheck waits for ``service_healthy``;
- the ``postgres`` service has a ``pg_isready`` healthcheck, a named volume and no published port;
- a store URL with ``allow_weak_tls=true`` reaches a host that sits on ``internal`` networks only;
- every file secret lies in a directory whose .gitignore ignores everything.

Exit status: 0 when everything passed, 1 on any finding, 2 on unusable input.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
STORE_URL_ENV = "SPIFFE_BROKER_STORE__URL"
SECRET_ENV = re.compile(r"(^SPIFFE_BROKER_KEK$|^PGPASSWORD$|PASSWORD|SECRET)")
POD_TEMPLATE_KINDS = frozenset({"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"})

Obj = dict[str, Any]


def _pod(body: Obj) -> Obj | None:
    if body.get("kind") == "Pod":
        return body.get("spec") or {}
    if body.get("kind") in POD_TEMPLATE_KINDS:
        return ((body.get("spec") or {}).get("template") or {}).get("spec") or {}
    return None


def _containers(pod: Obj) -> list[Obj]:
    return list(pod.get("initContainers") or []) + list(pod.get("containers") or [])


def _secret_volumes(pod: Obj) -> Iterator[tuple[str, str, int | None]]:
    """(volume name, Secret name, defaultMode) of every Secret volume and projected Secret source."""
    for volume in pod.get("volumes") or []:
        if "secret" in volume:
            yield volume["name"], volume["secret"].get("secretName", ""), volume["secret"].get("defaultMode")
        for source in (volume.get("projected") or {}).get("sources") or []:
            if "secret" in source:
                mode = volume["projected"].get("defaultMode")
                yield volume["name"], source["secret"].get("name", ""), mode


def referenced_secrets(pod: Obj) -> set[str]:
    names = {secret for _, secret, _ in _secret_volumes(pod)}
    for container in _containers(pod):
        for env in container.get("env") or []:
            ref = (env.get("valueFrom") or {}).get("secretKeyRef")
            if ref:
                names.add(ref.get("name", ""))
        for source in container.get("envFrom") or []:
            if "secretRef" in source:
                names.add(source["secretRef"].get("name", ""))
    return names


def url_password_errors(url: str) -> list[str]:
    """A store URL must not carry a password (userinfo or query); ``password_file=`` names a file."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    if parts.password is not None or "password" in query:
        return ["the store URL holds a password: use password_file= or a Secret"]
    return []


def _env_errors(container: Obj) -> list[str]:
    errors = []
    for env in container.get("env") or []:
        name, value = env.get("name", ""), env.get("value")
        if value is None:
            continue
        if SECRET_ENV.search(name) and not name.endswith("_FILE"):
            errors.append(f"container {container.get('name')}: env {name} has a literal value (use a Secret)")
        if name == STORE_URL_ENV:
            errors.extend(f"container {container.get('name')}: {e}" for e in url_password_errors(str(value)))
    return errors


def _mode_errors(pod: Obj) -> list[str]:
    errors = []
    for volume, secret, mode in _secret_volumes(pod):
        effective = 0o644 if mode is None else int(mode)  # the API server's default
        if effective & 0o007:
            errors.append(f"volume {volume} (Secret {secret}): defaultMode {effective:04o} lets others read it")
        if "kek" in secret and effective != 0o400:
            errors.append(f"volume {volume} (Secret {secret}): a KEK Secret is mounted with defaultMode 0400")
    return errors


def _is_token_service(pod: Obj) -> bool:
    return any((c.get("args") or [None])[0] == "server" for c in pod.get("containers") or [])


def _token_service_errors(body: Obj, pod: Obj, pdb_selectors: list[Obj]) -> list[str]:
    errors = []
    if int((body.get("spec") or {}).get("replicas", 1)) < 2:
        errors.append("the token service runs fewer than 2 replicas")
    store_refs = [
        env
        for c in pod.get("containers") or []
        for env in c.get("env") or []
        if env.get("name") == STORE_URL_ENV and (env.get("valueFrom") or {}).get("secretKeyRef")
    ]
    if not store_refs:
        errors.append(f"the token service's {STORE_URL_ENV} does not come from a secretKeyRef")
    labels = ((body.get("spec") or {}).get("template") or {}).get("metadata", {}).get("labels") or {}
    if not any(sel and sel.items() <= labels.items() for sel in pdb_selectors):
        errors.append("no PodDisruptionBudget selects the token service's pods")
    return errors


def check_kubernetes(docs: Sequence[Obj], documented: str) -> list[str]:
    """Findings, each prefixed with the object it is about."""
    findings: list[str] = []
    pdb_selectors = [
        ((d.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
        for d in docs
        if d.get("kind") == "PodDisruptionBudget"
    ]
    for body in docs:
        where = f"{body.get('kind')}/{(body.get('metadata') or {}).get('name')}"
        if body.get("kind") == "Secret" and (body.get("data") or body.get("stringData")):
            findings.append(f"{where}: a Secret with data is committed (create it in the cluster instead)")
        pod = _pod(body)
        if pod is None:
            continue
        messages: list[str] = []
        for secret in sorted(referenced_secrets(pod)):
            if "signing-key" in secret:
                messages.append(f"references Secret {secret}: signing keys live in the store, not in a Secret")
            elif not re.search(rf"`{re.escape(secret)}`", documented):
                messages.append(
                    f"references Secret {secret}, which docs/deploy.md does not tell the operator to create"
                )
        for container in _containers(pod):
            messages += _env_errors(container)
        messages += _mode_errors(pod)
        if _is_token_service(pod):
            messages += _token_service_errors(body, pod, pdb_selectors)
        findings.extend(f"{where}: {m}" for m in messages)
    return findings


def _compose_env_errors(name: str, service: Obj) -> list[str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
    errors = []
    for key, value in env.items():
        if value is not None and SECRET_ENV.search(key) and not key.endswith("_FILE"):
            errors.append(f"service {name}: environment {key} holds a literal secret (use a secret file)")
        if key == STORE_URL_ENV and value is not None:
            errors.extend(f"service {name}: {e}" for e in url_password_errors(str(value)))
    return errors


def _compose_dependency_errors(name: str, service: Obj, services: Obj) -> list[str]:
    depends = service.get("depends_on") or {}
    if isinstance(depends, list):
        depends = {dep: {"condition": "service_started"} for dep in depends}
    errors = []
    for dep, spec in depends.items():
        if "healthcheck" in (services.get(dep) or {}) and (spec or {}).get("condition") != "service_healthy":
            errors.append(f"service {name}: depends_on {dep} does not wait for service_healthy")
    return errors


def _compose_weak_tls_errors(name: str, service: Obj, compose: Obj) -> list[str]:
    env = service.get("environment") or {}
    url = env.get(STORE_URL_ENV) if isinstance(env, dict) else None
    if not url:
        return []
    parts = urlsplit(str(url))
    query = dict(parse_qsl(parts.query))
    if "sslmode" not in query:
        return [f"service {name}: the store URL names no sslmode"]
    if query.get("allow_weak_tls", "").lower() not in ("1", "true", "yes"):
        return []
    host = (compose.get("services") or {}).get(parts.hostname or "") or {}
    networks = host.get("networks") or ["default"]
    declared = compose.get("networks") or {}
    if not all((declared.get(n) or {}).get("internal") for n in networks):
        return [f"service {name}: allow_weak_tls=true to {parts.hostname}, which is not on internal networks only"]
    return []


def _compose_postgres_errors(services: Obj, volumes: Obj) -> list[str]:
    postgres = services.get("postgres")
    if postgres is None:
        return ["no postgres service"]
    errors = []
    test = " ".join(str(t) for t in (postgres.get("healthcheck") or {}).get("test") or [])
    if "pg_isready" not in test:
        errors.append("service postgres: no pg_isready healthcheck")
    if postgres.get("ports"):
        errors.append("service postgres: publishes a port")
    mounts = [str(v).split(":", 1) for v in postgres.get("volumes") or [] if isinstance(v, str)]
    if not any(src in volumes and dst.startswith("/var/lib/postgresql/data") for src, dst in mounts):
        errors.append("service postgres: its data directory is not on a named volume")
    return errors


def _compose_secret_file_errors(compose: Obj, base: Path) -> list[str]:
    errors = []
    for secret, spec in (compose.get("secrets") or {}).items():
        file = (spec or {}).get("file")
        if file is None:
            continue
        ignore = (base / file).parent / ".gitignore"
        lines = ignore.read_text(encoding="utf-8").split() if ignore.is_file() else []
        if "*" not in lines:
            errors.append(f"secret {secret}: {file} is in a directory that git does not ignore")
    return errors


def check_compose(compose: Obj, base: Path) -> list[str]:
    services = compose.get("services") or {}
    findings: list[str] = []
    for name, service in services.items():
        findings += _compose_env_errors(name, service)
        findings += _compose_dependency_errors(name, service, services)
        findings += _compose_weak_tls_errors(name, service, compose)
    findings += _compose_postgres_errors(services, compose.get("volumes") or {})
    findings += _compose_secret_file_errors(compose, base)
    return findings


def load_manifests(paths: Sequence[Path]) -> list[Obj]:
    docs: list[Obj] = []
    for path in paths:
        files = sorted(p for p in path.rglob("*.y*ml")) if path.is_dir() else [path]
        for file in files:
            with file.open(encoding="utf-8") as stream:
                docs.extend(d for d in yaml.safe_load_all(stream) if isinstance(d, dict))
    return docs


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("manifests", nargs="*", type=Path, help="Kubernetes manifest files or directories")
    parser.add_argument("--compose", type=Path, help="a docker-compose.yml to check")
    parser.add_argument("--docs", type=Path, default=REPO_ROOT / "docs" / "deploy.md")
    args = parser.parse_args(argv)
    try:
        docs = load_manifests(args.manifests)
        documented = args.docs.read_text(encoding="utf-8")
        compose = yaml.safe_load(args.compose.read_text(encoding="utf-8")) if args.compose else None
    except (OSError, yaml.YAMLError) as exc:
        print(f"FATAL cannot read input: {exc}", file=sys.stderr)
        return 2
    findings = check_kubernetes(docs, documented)
    if compose is not None:
        findings += [f"{args.compose}: {f}" for f in check_compose(compose, args.compose.parent)]
    for finding in findings:
        print(f"ERROR {finding}")
    print(f"deploy policy: {len(docs)} objects{' and the compose file' if compose else ''}, {len(findings)} errors")
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
