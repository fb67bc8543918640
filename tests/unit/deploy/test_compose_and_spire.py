"""docker-compose.yml and the SPIRE configurations: they pass their validators (Compose Specification
schema, broker policy schema, ``spire-server validate`` / ``spire-agent validate``), the validators catch
typos, and scripts/validate-deploy.sh fails when any of them does."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import jsonschema
import pytest
import yaml

from tests.unit.deploy.deploy_helpers import COMPOSE_DIR, DEPLOY, REPO, SCHEMA_DIR

COMPOSE_FILE = REPO / "docker-compose.yml"
WORKLOAD_API_ENV = "unix:///spiffe-workload-api/spire-agent.sock"

Obj = dict[str, Any]


def _compose() -> Obj:
    loaded: Obj = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    return loaded


def _check_compose(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _registered_uids() -> dict[str, int]:
    """SPIFFE ID -> uid of the entries deploy/compose/register.sh creates."""
    text = (COMPOSE_DIR / "register.sh").read_text(encoding="utf-8")
    found = re.findall(r'^register "spiffe://\$\{TRUST_DOMAIN\}(/[^"]+)" (\d+)', text, flags=re.MULTILINE)
    return {f"spiffe://example.org{path}": int(uid) for path, uid in found}


def test_compose_file_passes_compose_specification_schema() -> None:
    result = _check_compose(COMPOSE_FILE)

    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("section", "rename"),
    [
        pytest.param(("services", "spiffe-broker"), ("healthcheck", "helthcheck"), id="service-key"),
        pytest.param((), ("volumes", "volumnes"), id="top-level-key"),
        pytest.param(("services", "spire-agent", "healthcheck"), ("interval", "intervall"), id="nested-key"),
    ],
)
def test_compose_schema_rejects_misspelt_key(tmp_path: Path, section: tuple[str, ...], rename: tuple[str, str]) -> None:
    compose = _compose()
    target = compose
    for key in section:
        target = target[key]
    target[rename[1]] = target.pop(rename[0])
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(yaml.safe_dump(compose, sort_keys=False), encoding="utf-8")

    result = _check_compose(broken)

    assert result.returncode != 0
    assert rename[1] in result.stdout


def test_compose_policy_passes_schema_and_a_misspelt_rule_key_fails() -> None:
    schema = json.loads((SCHEMA_DIR / "broker-policy.schema.json").read_text(encoding="utf-8"))
    policy = yaml.safe_load((COMPOSE_DIR / "policy.yaml").read_text(encoding="utf-8"))
    validator = jsonschema.Draft202012Validator(schema)

    assert list(validator.iter_errors(policy)) == []
    policy["rules"][0]["scope"] = policy["rules"][0].pop("scopes")
    assert any("'scope' was unexpected" in e.message for e in validator.iter_errors(policy))


def test_compose_workload_api_clients_share_agent_pid_namespace_with_registered_uids() -> None:
    services = _compose()["services"]
    uids = _registered_uids()
    clients = {n: s for n, s in services.items() if s.get("environment", {}).get("SPIFFE_ENDPOINT_SOCKET")}

    assert set(clients) == {"spiffe-broker", "broker-sidecar", "demo-api", "demo-client"}
    for service in clients.values():
        assert service["environment"]["SPIFFE_ENDPOINT_SOCKET"] == WORKLOAD_API_ENV
        assert service["pid"] == "service:spire-agent"
        assert "spire-agent-socket:/spiffe-workload-api:ro" in service["volumes"]
        assert int(service["user"].split(":")[0]) in uids.values()
    assert services["broker-sidecar"]["user"] == services["demo-client"]["user"]
    assert int(services["demo-client"]["user"].split(":")[0]) == uids["spiffe://example.org/compose/demo-client"]


def test_compose_policy_authorizes_the_demo_client_for_the_registered_demo_api() -> None:
    policy = yaml.safe_load((COMPOSE_DIR / "policy.yaml").read_text(encoding="utf-8"))
    command = _compose()["services"]["demo-client"]["command"]

    (rule,) = policy["rules"]
    assert rule["spiffe_id"] in _registered_uids()
    assert command[command.index("--audience") + 1] in rule["audiences"]
    assert command[command.index("--server-id") + 1] in _registered_uids()


def test_every_compose_service_is_read_only_without_capabilities() -> None:
    for name, service in _compose()["services"].items():
        assert service["read_only"] is True, name
        assert service["cap_drop"] == ["ALL"], name
        assert "no-new-privileges:true" in service["security_opt"], name
        assert service.get("pid") != "host", name


def _spire_configs(checker: ModuleType, tmp_path: Path) -> dict[str, tuple[str, Path]]:
    """id -> (server|agent, path) for the compose configs and those in the Kubernetes ConfigMaps."""
    bootstrap = tmp_path / "bootstrap"
    bootstrap.mkdir()
    (bootstrap / "join_token").write_text("stand-in-token", encoding="utf-8")
    agent = tmp_path / "compose-agent.conf"
    agent.write_text((COMPOSE_DIR / "agent.conf").read_text().replace('"/bootstrap/', f'"{bootstrap}/'))
    configs = {"compose-server": ("server", COMPOSE_DIR / "server.conf"), "compose-agent": ("agent", agent)}
    docs = checker.load_documents([DEPLOY / "spire"])
    for path in checker.extract_spire_configs(docs, tmp_path / "k8s"):
        kind = "server" if path.name.endswith(".server.conf") else "agent"
        configs[f"k8s-{kind}"] = (kind, path)
    return configs


def _spire_validate(bins: Path, kind: str, path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(bins / f"spire-{kind}"), "validate", "-config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


CONFIG_IDS = ["compose-server", "compose-agent", "k8s-server", "k8s-agent"]
TYPOS = {
    "compose-server": ("trust_domain", "trust_domian"),
    "compose-agent": ("server_address", "server_adress"),
    "k8s-server": ("service_account_allow_list", "service_account_allow_lst"),
    "k8s-agent": ("trust_bundle_path", "trust_bundle_pth"),
}


@pytest.mark.parametrize("config_id", CONFIG_IDS)
def test_spire_validate_accepts_config(checker: ModuleType, spire_bins: Path, tmp_path: Path, config_id: str) -> None:
    kind, path = _spire_configs(checker, tmp_path)[config_id]

    result = _spire_validate(spire_bins, kind, path)

    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("config_id", CONFIG_IDS)
def test_spire_validate_rejects_config_with_misspelt_key(
    checker: ModuleType, spire_bins: Path, tmp_path: Path, config_id: str
) -> None:
    kind, path = _spire_configs(checker, tmp_path)[config_id]
    old, new = TYPOS[config_id]
    broken = tmp_path / f"broken-{path.name}"
    text = path.read_text(encoding="utf-8")
    assert old in text
    broken.write_text(text.replace(old, new), encoding="utf-8")

    result = _spire_validate(spire_bins, kind, broken)

    assert result.returncode != 0


def _copy_tree_for_script(dst: Path) -> Path:
    for name in ("scripts", "deploy"):
        shutil.copytree(REPO / name, dst / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("docker-compose.yml", "Dockerfile", "docs/deploy.md"):
        (dst / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, dst / name)
    return dst / "scripts" / "validate-deploy.sh"


def _run_script(script: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHON=sys.executable, PATH=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}")
    return subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=120, check=False, env=env)


def test_validate_deploy_script_passes_on_the_repository_files(tmp_path: Path) -> None:
    result = _run_script(_copy_tree_for_script(tmp_path))

    assert result.returncode == 0, result.stdout + result.stderr
    assert "validate-deploy: 0 failed" in result.stdout


def test_validate_deploy_script_fails_when_the_compose_file_is_broken(tmp_path: Path) -> None:
    script = _copy_tree_for_script(tmp_path)
    compose = tmp_path / "docker-compose.yml"
    compose.write_text(compose.read_text().replace("    healthcheck:", "    helthcheck:", 1))

    result = _run_script(script)

    assert result.returncode != 0
    assert "FAIL: docker-compose.yml" in result.stdout


def test_validate_deploy_script_fails_when_a_secret_is_inline(tmp_path: Path) -> None:
    script = _copy_tree_for_script(tmp_path)
    compose = tmp_path / "docker-compose.yml"
    text = compose.read_text()
    assert "POSTGRES_PASSWORD_FILE: " in text
    compose.write_text(
        text.replace("POSTGRES_PASSWORD_FILE: /run/secrets/postgres-superuser-password", "POSTGRES_PASSWORD: x")
    )

    result = _run_script(script)

    assert result.returncode != 0
    assert "FAIL: state and secrets" in result.stdout


def test_token_service_waits_for_a_healthy_postgres_and_the_kek_on_a_private_network() -> None:
    compose = _compose()
    services = compose["services"]
    broker = services["spiffe-broker"]
    url = broker["environment"]["SPIFFE_BROKER_STORE__URL"]

    assert broker["depends_on"]["postgres"] == {"condition": "service_healthy"}
    assert broker["depends_on"]["broker-kek"] == {"condition": "service_completed_successfully"}
    assert url.startswith("postgresql://spiffe_broker@postgres:5432/spiffe_broker?")
    assert "password_file=/run/secrets/spiffe-broker-db-password" in url
    assert broker["secrets"] == ["spiffe-broker-db-password"]
    assert services["postgres"]["networks"] == ["store"]
    assert compose["networks"]["store"] == {"internal": True}
    assert services["postgres"]["image"] == "postgres:15"
    assert services["broker-kek"]["network_mode"] == "none"


def test_broker_kek_and_token_service_share_the_state_volume_where_the_config_expects_the_kek() -> None:
    services = _compose()["services"]
    config = (COMPOSE_DIR / "broker.toml").read_text(encoding="utf-8")
    kek_file = re.search(r'^kek_file = "([^"]+)"', config, flags=re.MULTILINE)

    assert kek_file is not None
    assert f"init-kek {kek_file[1]}" in services["broker-kek"]["command"][0]
    for name in ("broker-kek", "spiffe-broker"):
        assert "broker-state:/var/lib/spiffe-broker" in services[name]["volumes"]
    assert kek_file[1].startswith("/var/lib/spiffe-broker/")


def test_make_secrets_creates_readable_files_in_a_private_directory_and_keeps_existing_ones(tmp_path: Path) -> None:
    shutil.copy2(COMPOSE_DIR / "make-secrets.sh", tmp_path / "make-secrets.sh")
    secrets_dir = tmp_path / "secrets"
    run = [str(tmp_path / "make-secrets.sh")]

    subprocess.run(run, check=True, capture_output=True, timeout=30)
    first = {p.name: p.read_text() for p in secrets_dir.iterdir()}
    subprocess.run(run, check=True, capture_output=True, timeout=30)

    assert set(first) == set(_compose()["secrets"]) == {"postgres-superuser-password", "spiffe-broker-db-password"}
    assert secrets_dir.stat().st_mode & 0o777 == 0o700
    assert all((secrets_dir / name).stat().st_mode & 0o777 == 0o644 for name in first)
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{43}", text) for text in first.values())
    assert len(set(first.values())) == 2
    assert {p.name: p.read_text() for p in secrets_dir.iterdir()} == first
