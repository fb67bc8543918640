"""The deployment files' inputs to the broker are accepted by the broker itself: every ``spiffe-broker``
command line parses with the real CLI, every policy file loads with the real policy loader, and every
``broker.toml`` loads with the real settings loader. A renamed flag, a policy or a configuration key the
broker would refuse breaks these tests rather than a rollout."""

from __future__ import annotations

import json
import os
import re
import shlex
from pathlib import Path
from typing import Any

import click
import jsonschema
import pytest
import yaml

from broker.cli.main import main
from broker.config import load_settings
from broker.errors import ConfigError, InvalidTargetError
from broker.identity.spiffeid import SpiffeId
from broker.tokens.policy import parse_policy
from tests.unit.deploy.deploy_helpers import (
    COMPOSE_DIR,
    DEPLOY,
    REPO,
    SCHEMA_DIR,
    find_object,
    kubernetes_manifests,
    load_yaml_documents,
)


def _k8s_command_lines() -> list[tuple[str, list[str]]]:
    lines = []
    for path in kubernetes_manifests():
        for doc in load_yaml_documents(path):
            pod = ((doc.get("spec") or {}).get("template") or {}).get("spec") or {}
            for container in [*pod.get("initContainers", []), *pod.get("containers", [])]:
                if not container["image"].startswith("spiffe-broker:") or container.get("command"):
                    lines.extend(_shell_lines(doc["metadata"]["name"], container))
                    continue
                lines.append((f"{doc['metadata']['name']}/{container['name']}", list(container["args"])))
    return lines


def _shell_lines(owner: str, container: dict[str, Any]) -> list[tuple[str, list[str]]]:
    """``spiffe-broker ...`` invocations inside a ``sh -c`` script (continuation lines joined)."""
    if container.get("command", [])[:2] != ["/bin/sh", "-c"]:
        return []
    return [(f"{owner}/{container['name']}", args) for args in _script_invocations(container["args"][0])]


def _script_invocations(script: str) -> list[list[str]]:
    """The arguments of every ``spiffe-broker`` command in a shell script (not paths such as /etc/spiffe-broker/)."""
    joined = script.replace("\\\n", " ")
    return [shlex.split(match) for match in re.findall(r"(?:^|[\s|&;])spiffe-broker (.+)", joined, flags=re.MULTILINE)]


def _compose_command_lines() -> list[tuple[str, list[str]]]:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text(encoding="utf-8"))
    lines: list[tuple[str, list[str]]] = []
    for name, service in compose["services"].items():
        if not service.get("image", "").startswith("spiffe-broker:"):
            continue
        if service.get("entrypoint") == ["/bin/sh", "-c"]:
            lines.extend((f"compose/{name}", args) for args in _script_invocations(service["command"][0]))
        else:
            lines.append((f"compose/{name}", list(service["command"])))
    return lines


COMMAND_LINES = _k8s_command_lines() + _compose_command_lines()


def test_deployment_files_run_every_broker_role() -> None:
    roles = {args[0] for _, args in COMMAND_LINES}

    assert roles == {"server", "sidecar", "demo-api", "call", "keys"}


@pytest.mark.parametrize(("where", "args"), COMMAND_LINES, ids=[w for w, _ in COMMAND_LINES])
def test_broker_command_line_parses_with_the_real_cli(where: str, args: list[str]) -> None:
    with click.Context(main) as parent:
        command = main.get_command(parent, args[0])
        assert command is not None, f"{where}: unknown subcommand {args[0]!r}"
        if isinstance(command, click.Group):  # a command group (keys, store, audit): parse its subcommand
            parent = click.Context(command, info_name=args[0], parent=parent)
            command, args = command.get_command(parent, args[1]), args[1:]
            assert command is not None, f"{where}: unknown subcommand {args[0]!r}"
        with command.make_context(args[0], args[1:], parent=parent) as ctx:
            assert ctx.params


def _policy_files() -> dict[str, str]:
    configmap = find_object(
        load_yaml_documents(DEPLOY / "k8s" / "10-token-service.yaml"), "ConfigMap", "spiffe-broker-policy"
    )
    return {
        "k8s-configmap": configmap["data"]["policy.yaml"],
        "compose": (COMPOSE_DIR / "policy.yaml").read_text(encoding="utf-8"),
    }


# policy file -> the demo caller's SPIFFE ID (web pod on Kubernetes, uid 10002 under Compose)
DEMO_CALLERS = {
    "k8s-configmap": "spiffe://example.org/ns/shop/sa/web",
    "compose": "spiffe://example.org/compose/demo-client",
}


@pytest.mark.parametrize("name", sorted(DEMO_CALLERS))
def test_policy_file_grants_the_demo_caller_and_denies_others(name: str) -> None:
    policy = parse_policy(_policy_files()[name], source=name)

    grant = policy.authorize(SpiffeId.parse(DEMO_CALLERS[name]), "https://demo-api", frozenset({"hello:read"}))
    assert grant.max_lifetime <= 300
    with pytest.raises(InvalidTargetError):
        policy.authorize(SpiffeId.parse("spiffe://example.org/ns/shop/sa/other"), "https://demo-api", frozenset())


AUD = 'audiences: ["https://demo-api"]'
SCHEMA_AGREEMENT = {
    "exact-id": (f"spiffe_id: spiffe://example.org/ns/shop/sa/web\n    {AUD}", True),
    "trust-domain-prefix": (f"trust_domain: example.org\n    path_prefix: /ns/batch\n    {AUD}", True),
    "id-and-trust-domain": (f"spiffe_id: spiffe://example.org/a\n    trust_domain: example.org\n    {AUD}", False),
    "prefix-with-id": (f"spiffe_id: spiffe://example.org/a\n    path_prefix: /ns\n    {AUD}", False),
    "no-subject": (AUD, False),
    "no-audiences": ("spiffe_id: spiffe://example.org/a", False),
    "empty-audiences": ("spiffe_id: spiffe://example.org/a\n    audiences: []", False),
    "unknown-key": (f"spiffe_id: spiffe://example.org/a\n    {AUD}\n    scope: [a]", False),
    "lifetime-zero": (f"spiffe_id: spiffe://example.org/a\n    {AUD}\n    max_token_lifetime: 0", False),
    "lifetime-over-a-day": (f"spiffe_id: spiffe://example.org/a\n    {AUD}\n    max_token_lifetime: 86401", False),
    "scope-with-space": (f"spiffe_id: spiffe://example.org/a\n    {AUD}\n    scopes: ['a b']", False),
}


@pytest.mark.parametrize(("rule", "valid"), SCHEMA_AGREEMENT.values(), ids=SCHEMA_AGREEMENT.keys())
def test_policy_schema_agrees_with_the_broker_policy_loader(rule: str, valid: bool) -> None:
    text = f"rules:\n  - {rule}\n"
    schema = json.loads((SCHEMA_DIR / "broker-policy.schema.json").read_text(encoding="utf-8"))
    schema_ok = jsonschema.Draft202012Validator(schema).is_valid(yaml.safe_load(text))
    try:
        parse_policy(text)
        loader_ok = True
    except ConfigError:
        loader_ok = False

    assert (schema_ok, loader_ok) == (valid, valid)


def _broker_configs() -> dict[str, str]:
    configmap = find_object(
        load_yaml_documents(DEPLOY / "k8s" / "10-token-service.yaml"), "ConfigMap", "spiffe-broker-config"
    )
    return {
        "k8s-configmap": configmap["data"]["broker.toml"],
        "compose": (COMPOSE_DIR / "broker.toml").read_text(encoding="utf-8"),
    }


@pytest.mark.parametrize("name", ["k8s-configmap", "compose"])
def test_broker_config_file_loads_with_the_real_settings_loader(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for variable in [v for v in os.environ if v.startswith("SPIFFE_BROKER_")]:
        monkeypatch.delenv(variable)
    config = tmp_path / "broker.toml"
    config.write_text(_broker_configs()[name], encoding="utf-8")

    settings = load_settings(config, {}).model_dump()

    assert settings["keyring"]["kek_file"] is not None
    assert settings["keyring"]["jwks_max_age"] <= settings["keyring"]["rotation_period"]
    assert all(SpiffeId.parse(str(admin)) for admin in settings["admin"]["spiffe_ids"])
