"""``spiffe-broker doctor`` against real parts, each fault really set up: the dev Workload API on a Unix socket
(attesting this process by its uid), the token service over mTLS on loopback (SVIDs from the same dev CA), and
the command run as a user runs it. No part is mocked: a missing socket is a missing file, a missing entry is an
entry for another uid, a service that is down is a port nothing listens on, a skewed clock is the token
service's injected clock."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from broker.cli._doctor_node import ClockSample, Timed
from broker.cli._doctor_verify import time_sync_failure
from broker.cli.main import main
from broker.devtools.devca import DevCA
from broker.devtools.stack import free_loopback_port
from broker.devtools.workload_api import InMemoryEntryStore, RegistrationEntry, WorkloadApiServer
from broker.identity.memory import InMemorySvidSource
from broker.identity.spiffeid import SpiffeId
from broker.server.service import start_token_service
from broker.testing.policy import policy_rule, policy_yaml
from broker.tokens.keys import InMemoryKeyStore
from broker.tokens.policy import InMemoryPolicyStore, parse_policy
from tests.unit.cli.cli_helpers import short_dir

WORKLOAD = SpiffeId.parse("spiffe://example.org/workload")
BROKER_ID = SpiffeId.parse("spiffe://example.org/spiffe-broker")
API = "https://api.example.org"
POLICY = policy_yaml(policy_rule(spiffe_id=WORKLOAD, audiences=(API,), scopes=("orders:read",)))
CHECKS = ["workload-api", "trust-bundle", "token-service", "policy", "jwks", "time-sync"]
SKEW = 120.0


@pytest.fixture(autouse=True)
def no_broker_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SPIFFE_BROKER_CONFIG", "SPIFFE_ENDPOINT_SOCKET", "SPIFFE_BROKER_WORKLOAD_API__SOCKET"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def ca() -> DevCA:
    return DevCA.ephemeral("example.org")


@pytest.fixture
def directory() -> Iterator[Path]:
    with short_dir() as path:
        yield path


@contextlib.asynccontextmanager
async def workload_api(ca: DevCA, directory: Path, uid: int | None = None) -> AsyncIterator[str]:
    """The dev Workload API with one entry: ``WORKLOAD`` for ``uid`` (this process's by default)."""
    entry = RegistrationEntry.of(str(WORKLOAD), [f"unix:uid:{os.geteuid() if uid is None else uid}"])
    server = WorkloadApiServer(ca=ca, entries=InMemoryEntryStore([entry]), socket_path=directory / "api.sock")
    await server.start()
    try:
        yield server.address
    finally:
        await server.stop()


@contextlib.asynccontextmanager
async def token_service(ca: DevCA, clock: Callable[[], float] = time.time) -> AsyncIterator[str]:
    """The token service on loopback, allowing ``WORKLOAD`` to reach ``API``; yields its issuer URL."""
    source = InMemorySvidSource(ca, BROKER_ID)
    port = free_loopback_port()
    issuer = f"https://127.0.0.1:{port}"
    service = await start_token_service(
        source=source,
        policy_store=InMemoryPolicyStore(parse_policy(POLICY)),
        key_store=InMemoryKeyStore(),
        listen_host="127.0.0.1",
        listen_port=port,
        issuer=issuer,
        clock=clock,
    )
    try:
        yield issuer
    finally:
        await service.aclose()
        await source.aclose()


async def doctor(*args: str, env: Mapping[str, str] | None = None) -> Result:
    """``spiffe-broker doctor ARGS`` in a thread (the parts it checks run on this test's event loop)."""
    return await asyncio.to_thread(CliRunner().invoke, main, ["doctor", *args], env=env)


def document(result: Result) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(result.stdout)
    return found


def statuses(found: dict[str, Any]) -> dict[str, str]:
    return {check["name"]: check["status"] for check in found["checks"]}


def failure(found: dict[str, Any]) -> dict[str, Any]:
    failed: list[dict[str, Any]] = [check for check in found["checks"] if check["status"] == "fail"]
    assert len(failed) == 1, found
    after = CHECKS[CHECKS.index(failed[0]["name"]) + 1 :]
    assert all(statuses(found)[name] == "skipped" for name in after), found
    return failed[0]


async def test_all_good_every_check_passes_and_the_exit_code_is_0(ca: DevCA, directory: Path) -> None:
    async with workload_api(ca, directory) as address, token_service(ca) as issuer:
        result = await doctor("--token-service", issuer, "--audience", API, "--json",
                              env={"SPIFFE_ENDPOINT_SOCKET": address})  # fmt: skip
    assert result.exit_code == 0, result.output
    found = document(result)
    assert statuses(found) == dict.fromkeys(CHECKS, "ok")
    assert (found["ok"], found["exit_code"], found["first_failure"]) == (True, 0, None)
    details = {check["name"]: check["details"] for check in found["checks"]}
    assert details["workload-api"]["spiffe_id"] == str(WORKLOAD)
    assert details["token-service"]["server_id"] == str(BROKER_ID)
    assert details["jwks"]["kid"] == details["policy"]["kid"]
    assert all(abs(offset) < 5 for offset in details["time-sync"]["offsets"].values())


async def test_the_addresses_come_from_the_config_file_as_the_sidecar_reads_them(ca: DevCA, directory: Path) -> None:
    config = directory / "broker.toml"
    async with workload_api(ca, directory) as address, token_service(ca) as issuer:
        config.write_text(
            f'[workload_api]\nsocket = "{address.removeprefix("unix://")}"\n[server]\nissuer = "{issuer}"\n'
        )
        result = await doctor("--config", str(config), "--audience", API, "--json")
    assert result.exit_code == 0, result.output
    assert statuses(document(result)) == dict.fromkeys(CHECKS, "ok")


async def test_text_is_one_line_per_check_and_never_shows_a_token(ca: DevCA, directory: Path) -> None:
    async with workload_api(ca, directory) as address, token_service(ca) as issuer:
        result = await doctor("--workload-api", address, "--token-service", issuer, "--audience", API)
    lines = result.stdout.splitlines()
    assert result.exit_code == 0, result.output
    assert [line.split()[:3] for line in lines] == [[str(n), name, "ok"] for n, name in enumerate(CHECKS, 1)]
    assert "eyJ" not in result.output  # no JWT (access token or JWT-SVID): every one starts with '{"' in base64url


async def test_without_an_audience_the_policy_check_is_skipped_and_the_rest_pass(ca: DevCA, directory: Path) -> None:
    async with workload_api(ca, directory) as address, token_service(ca) as issuer:
        result = await doctor("--workload-api", address, "--token-service", issuer, "--json")
    assert result.exit_code == 0, result.output
    found = statuses(document(result))
    assert found == {**dict.fromkeys(CHECKS, "ok"), "policy": "skipped"}


async def test_no_socket_names_the_workload_api_socket_and_how_to_provide_it(directory: Path) -> None:
    missing = directory / "agent.sock"
    result = await doctor("--workload-api", str(missing), "--token-service", "https://127.0.0.1:1", "--json")
    assert result.exit_code == 1
    failed = failure(document(result))
    assert failed["name"] == "workload-api"
    assert failed["message"] == f"no socket at {missing}"
    assert "SPIFFE_ENDPOINT_SOCKET" in failed["fix"] and "SPIRE agent" in failed["fix"]


async def test_a_stale_socket_nobody_listens_on_says_nothing_answers(directory: Path) -> None:
    stale = directory / "agent.sock"
    with socket.socket(socket.AF_UNIX) as left_behind:  # an agent that died: its socket file stays
        left_behind.bind(str(stale))
    result = await doctor("--workload-api", f"unix://{stale}", "--token-service", "https://127.0.0.1:1", "--json")
    assert result.exit_code == 1
    failed = failure(document(result))
    assert failed["name"] == "workload-api"
    assert failed["message"].startswith(f"nothing answers on the Workload API at unix://{stale} (UNAVAILABLE")
    assert "start (or restart) the SPIRE agent" in failed["fix"]


async def test_no_entry_for_this_uid_names_the_uid_and_how_to_register_it(ca: DevCA, directory: Path) -> None:
    uid = os.geteuid()
    async with workload_api(ca, directory, uid=uid + 4242) as address, token_service(ca) as issuer:
        result = await doctor("--workload-api", address, "--token-service", issuer, "--audience", API, "--json")
    assert result.exit_code == 1
    failed = failure(document(result))
    assert failed["name"] == "workload-api"
    assert f"uid {uid}" in failed["message"] and "no registration entry matches" in failed["message"]
    assert "PERMISSION_DENIED" in failed["message"]
    assert f"unix:uid:{uid}" in failed["fix"] and "spiffe-broker entries apply" in failed["fix"]
    assert failed["details"]["uid"] == uid


async def test_token_service_down_is_named_after_the_identity_checks_pass(ca: DevCA, directory: Path) -> None:
    nobody = f"https://127.0.0.1:{free_loopback_port()}"  # nothing listens there
    async with workload_api(ca, directory) as address:
        result = await doctor("--workload-api", address, "--token-service", nobody, "--audience", API, "--json")
    assert result.exit_code == 1
    found = document(result)
    assert statuses(found)["workload-api"] == statuses(found)["trust-bundle"] == "ok"
    failed = failure(found)
    assert failed["name"] == "token-service"
    assert failed["message"].startswith(f"cannot connect to the token service at {nobody.removeprefix('https://')}")
    assert "start the token service" in failed["fix"]


async def test_another_server_id_names_the_id_it_found(ca: DevCA, directory: Path) -> None:
    async with workload_api(ca, directory) as address, token_service(ca) as issuer:
        result = await doctor("--workload-api", address, "--token-service", issuer, "--json",
                              "--token-service-id", "spiffe://example.org/somebody-else")  # fmt: skip
    failed = failure(document(result))
    assert failed["name"] == "token-service"
    assert f"is {BROKER_ID}, not the expected spiffe://example.org/somebody-else" in failed["message"]
    assert f"--token-service-id {BROKER_ID}" in failed["fix"]


async def test_audience_not_in_policy_names_the_audience_and_the_spiffe_id(ca: DevCA, directory: Path) -> None:
    other = "https://payroll.example.org"
    async with workload_api(ca, directory) as address, token_service(ca) as issuer:
        result = await doctor("--workload-api", address, "--token-service", issuer, "--audience", other, "--json")
    assert result.exit_code == 1
    failed = failure(document(result))
    assert failed["name"] == "policy"
    assert failed["message"].startswith(f"audience {other} is not in the broker policy for {WORKLOAD} (invalid_target")
    assert "policy file" in failed["fix"] and "docs/operations.md" in failed["fix"]


async def test_a_skewed_token_service_clock_is_named_with_the_skew_measured(ca: DevCA, directory: Path) -> None:
    async with workload_api(ca, directory) as address, token_service(ca, clock=lambda: time.time() + SKEW) as issuer:
        result = await doctor("--workload-api", address, "--token-service", issuer, "--audience", API, "--json")
    assert result.exit_code == 1
    found = document(result)
    failed = failure(found)
    assert failed["name"] == "time-sync"
    assert statuses(found)["jwks"] == "ok"
    assert (
        failed["message"].startswith("the token service's clock is 1") and "s ahead of this node's" in failed["message"]
    )
    assert failed["details"]["clock"] == "the token service"
    assert SKEW - 2 < failed["details"]["offset"] < SKEW + 2
    assert "chrony" in failed["fix"]


def test_max_skew_beyond_the_services_leeway_is_a_usage_error() -> None:
    result = CliRunner().invoke(main, ["doctor", "--max-skew", "31", "--token-service", "https://127.0.0.1:1"])
    assert result.exit_code == 2
    assert "--max-skew" in result.output


def test_without_a_token_service_url_it_is_a_usage_error() -> None:
    result = CliRunner().invoke(main, ["doctor", "--workload-api", "unix:///tmp/x.sock"])
    assert result.exit_code == 2
    assert "--token-service" in result.output


SERVICE, SPIRE = "the token service", "the SPIRE server"


@pytest.mark.parametrize(
    ("offsets", "named"),
    [
        pytest.param({SERVICE: 40.0, SPIRE: 0.2}, "the token service's clock is 40.", id="one-clock-off"),
        pytest.param({SERVICE: -40.0, SPIRE: -39.0}, "this node's clock is about 39.", id="all-others-agree"),
        pytest.param({SERVICE: 40.0, SPIRE: -40.0}, "the token service's clock is 40.", id="opposite-ways"),
    ],
)
def test_the_clock_named_is_the_odd_one_out(offsets: dict[str, float], named: str) -> None:
    now = time.time()
    samples = [
        ClockSample(clock, "a reading", now + offset - 0.5, Timed(now, now)) for clock, offset in offsets.items()
    ]
    judged = time_sync_failure([s for s in samples if abs(s.offset) > 5], samples, 5.0)
    assert judged.description.startswith(named)
