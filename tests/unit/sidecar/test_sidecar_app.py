"""Tests for the sidecar's HTTP API (broker.sidecar.app via start_sidecar) over its real Unix socket."""

from __future__ import annotations

import asyncio
import os
import stat
from typing import Any

import aiohttp
import pytest

from broker.identity.memory import InMemorySvidSource
from broker.jose.jws import parse_compact
from broker.sidecar.exchanger import TokenServiceClient
from broker.sidecar.service import RunningSidecar
from broker.testing import FakeTokenService
from tests.unit.sidecar.sidecar_helpers import API, RealTokenService, Starter, sidecar_get, wait_for


def bound_x5t(access_token: str) -> str:
    return str(parse_compact(access_token).payload["cnf"]["x5t#S256"])


async def test_socket_is_created_with_mode_0600_by_default(start: Starter, workload_source: InMemorySvidSource) -> None:
    sidecar = await start(workload_source, token_service=FakeTokenService(workload_source))
    assert sidecar.socket_path is not None
    assert stat.S_IMODE(os.stat(sidecar.socket_path).st_mode) == 0o600
    assert [p.name for p in sidecar.socket_path.parent.iterdir()] == ["sidecar.sock"]  # no temporary name left


async def test_socket_mode_is_configurable(start: Starter, workload_source: InMemorySvidSource) -> None:
    sidecar = await start(workload_source, token_service=FakeTokenService(workload_source), socket_mode=0o660)
    assert sidecar.socket_path is not None
    assert stat.S_IMODE(os.stat(sidecar.socket_path).st_mode) == 0o660


async def test_stopping_removes_the_socket(start: Starter, workload_source: InMemorySvidSource) -> None:
    fake = FakeTokenService(workload_source)
    sidecar = await start(workload_source, token_service=fake)
    await sidecar.aclose()
    assert sidecar.socket_path is not None and not sidecar.socket_path.exists()
    assert fake.closed


async def test_two_hundred_concurrent_requests_for_a_cold_key_cause_one_exchange(
    start: Starter, workload_source: InMemorySvidSource
) -> None:
    fake = FakeTokenService(workload_source, gate=asyncio.Event())
    sidecar = await start(workload_source, token_service=fake)
    connector = aiohttp.UnixConnector(path=str(sidecar.socket_path), limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one() -> tuple[int, Any]:
            async with session.get("http://sc/v1/token", params={"audience": API}) as response:
                return response.status, await response.json()

        requests = [asyncio.create_task(one()) for _ in range(200)]
        try:
            await wait_for(lambda: asyncio.sleep(0, len(fake.calls) == 1))
            await asyncio.sleep(0.2)  # give every request time to arrive and join the flight
            assert fake.gate is not None
            fake.gate.set()
            replies = await asyncio.gather(*requests)
        finally:
            for request in requests:
                request.cancel()
            await asyncio.gather(*requests, return_exceptions=True)
    assert {status for status, _ in replies} == {200}
    assert {body["access_token"] for _, body in replies} == {"token-1"}
    assert len(fake.calls) == 1


async def test_two_hundred_concurrent_requests_cause_one_exchange_with_the_real_token_service(
    start: Starter, workload_source: InMemorySvidSource, token_service: RealTokenService
) -> None:
    sidecar = await start(workload_source, token_service_url=token_service.issuer)
    connector = aiohttp.UnixConnector(path=str(sidecar.socket_path), limit=0)
    params = {"audience": API, "scope": "orders:read"}
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one() -> int:
            async with session.get("http://sc/v1/token", params=params) as response:
                await response.read()
                return response.status

        statuses = await asyncio.gather(*(one() for _ in range(200)))
    assert set(statuses) == {200}
    assert token_service.issued_count == 1
    assert isinstance(sidecar.token_service, TokenServiceClient)
    assert sidecar.token_service.exchange_count == 1


async def test_token_response_has_the_documented_fields_and_no_store(
    start: Starter, workload_source: InMemorySvidSource, token_service: RealTokenService
) -> None:
    sidecar = await start(workload_source, token_service_url=token_service.issuer)
    reply = await sidecar_get(sidecar.socket_path, "/v1/token", {"audience": API, "scope": "orders:read"})
    assert reply.status == 200
    assert set(reply.body) == {"access_token", "token_type", "expires_in", "issued_token_type", "scope"}
    assert reply.body["scope"] == "orders:read"
    assert 295 <= reply.body["expires_in"] <= 300
    assert reply.headers["Cache-Control"] == "no-store"
    assert bound_x5t(reply.body["access_token"]) == workload_source.x509_svid().x5t_s256()


async def test_rotation_leads_to_new_tokens_bound_to_the_new_certificate(
    start: Starter, workload_source: InMemorySvidSource, token_service: RealTokenService
) -> None:
    sidecar = await start(workload_source, token_service_url=token_service.issuer)
    params = {"audience": API}
    before = (await sidecar_get(sidecar.socket_path, "/v1/token", params)).body["access_token"]
    new_svid = workload_source.rotate()
    after = (await sidecar_get(sidecar.socket_path, "/v1/token", params)).body["access_token"]
    assert before != after
    assert bound_x5t(after) == new_svid.x5t_s256() != bound_x5t(before)
    assert token_service.issued_count == 2


async def _status(sidecar: RunningSidecar, path: str, expected: int) -> bool:
    assert sidecar.socket_path is not None
    return (await sidecar_get(sidecar.socket_path, path)).status == expected


@pytest.mark.parametrize(
    ("params", "description"),
    [
        ({}, "exactly one audience"),
        ([("audience", API), ("audience", "https://b")], "exactly one audience"),
        ({"audience": "has space"}, "exactly one audience"),
        ([("audience", API), ("scope", "a"), ("scope", "b")], "scope must not be repeated"),
        ({"audience": API, "scope": "a  b"}, "scope tokens"),
        ({"audience": API, "scope": 'quote"d'}, "scope tokens"),
    ],
    ids=["no-audience", "two-audiences", "audience-with-space", "repeated-scope", "double-space", "bad-char"],
)
async def test_malformed_token_request_is_400_invalid_request(
    start: Starter, workload_source: InMemorySvidSource, params: Any, description: str
) -> None:
    fake = FakeTokenService(workload_source)
    sidecar = await start(workload_source, token_service=fake)
    reply = await sidecar_get(sidecar.socket_path, "/v1/token", params)
    assert (reply.status, reply.body["error"]) == (400, "invalid_request")
    assert description in reply.body["error_description"]
    assert fake.calls == []


async def test_policy_refusal_is_403_with_the_token_service_error(
    start: Starter, workload_source: InMemorySvidSource, token_service: RealTokenService
) -> None:
    sidecar = await start(workload_source, token_service_url=token_service.issuer)
    denied_audience = await sidecar_get(sidecar.socket_path, "/v1/token", {"audience": "https://other.example"})
    denied_scope = await sidecar_get(sidecar.socket_path, "/v1/token", {"audience": API, "scope": "orders:delete"})
    assert (denied_audience.status, denied_audience.body["error"]) == (403, "invalid_target")
    assert (denied_scope.status, denied_scope.body["error"]) == (403, "invalid_scope")
    assert denied_audience.body["error_description"]


async def test_equivalent_scopes_share_one_cache_entry(start: Starter, workload_source: InMemorySvidSource) -> None:
    fake = FakeTokenService(workload_source)
    sidecar = await start(workload_source, token_service=fake)
    for scope in ("orders:read orders:write", "orders:write orders:read"):
        assert (await sidecar_get(sidecar.socket_path, "/v1/token", {"audience": API, "scope": scope})).status == 200
    assert fake.calls == [(API, "orders:read orders:write")]


async def test_without_an_svid_the_sidecar_is_not_ready_and_cannot_mint(
    start: Starter, workload_source: InMemorySvidSource
) -> None:
    sidecar = await start(workload_source, token_service=FakeTokenService(workload_source))
    assert (await sidecar_get(sidecar.socket_path, "/readyz")).status == 200
    workload_source.set_unavailable()
    ready = await sidecar_get(sidecar.socket_path, "/readyz")
    token = await sidecar_get(sidecar.socket_path, "/v1/token", {"audience": API})
    assert (ready.status, ready.body["error"]) == (503, "not_ready")
    assert (token.status, token.body["error"]) == (503, "temporarily_unavailable")
    assert token.body["error_description"] == "no X.509-SVID yet from the Workload API"


async def test_token_response_without_a_scope_omits_the_member_instead_of_null(
    start: Starter, workload_source: InMemorySvidSource
) -> None:
    sidecar = await start(workload_source, token_service=FakeTokenService(workload_source))
    reply = await sidecar_get(sidecar.socket_path, "/v1/token", {"audience": API})
    assert reply.status == 200
    assert set(reply.body) == {"access_token", "token_type", "expires_in", "issued_token_type"}  # RFC 6749 §5.1


async def test_healthz_answers_and_unknown_routes_are_json_errors(
    start: Starter, workload_source: InMemorySvidSource
) -> None:
    sidecar = await start(workload_source, token_service=FakeTokenService(workload_source, reachable=False))
    assert (await sidecar_get(sidecar.socket_path, "/healthz")).status == 200
    assert (await sidecar_get(sidecar.socket_path, "/readyz")).status == 503
    missing = await sidecar_get(sidecar.socket_path, "/v2/token")
    assert (missing.status, missing.body["error"]) == (404, "not_found")
    connector = aiohttp.UnixConnector(path=str(sidecar.socket_path))
    async with aiohttp.ClientSession(connector=connector) as session, session.post("http://sc/v1/token") as response:
        assert (response.status, (await response.json())["error"]) == (405, "method_not_allowed")


async def test_optional_loopback_port_serves_the_same_api(start: Starter, workload_source: InMemorySvidSource) -> None:
    sidecar = await start(workload_source, token_service=FakeTokenService(workload_source), http_port=0)
    assert sidecar.http_port
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{sidecar.http_port}/v1/token", params={"audience": API}) as response,
    ):
        assert response.status == 200
        assert (await response.json())["access_token"] == "token-1"


@pytest.mark.parametrize(
    "headers",
    [{"Host": "attacker.example"}, {"Host": "attacker.example:8081"}, {"Origin": "https://attacker.example"}],
    ids=["rebound-host", "rebound-host-with-port", "cross-site-origin"],
)
async def test_loopback_port_refuses_requests_a_web_page_could_make(
    start: Starter, workload_source: InMemorySvidSource, headers: dict[str, str]
) -> None:
    sidecar = await start(workload_source, token_service=FakeTokenService(workload_source), http_port=0)
    for path in ("/v1/token", "/v1/status"):
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{sidecar.http_port}{path}", params={"audience": API}, headers=headers) as r,
        ):
            body = await r.json()
            assert (r.status, body["error"]) == (403, "access_denied")
            assert "access_token" not in body


async def test_unix_socket_accepts_any_host_header(start: Starter, workload_source: InMemorySvidSource) -> None:
    sidecar = await start(workload_source, token_service=FakeTokenService(workload_source))
    assert sidecar.socket_path is not None
    connector = aiohttp.UnixConnector(path=str(sidecar.socket_path))
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.get("http://sidecar/v1/token", params={"audience": API}) as response,
    ):
        assert response.status == 200


async def test_unexpected_failure_is_a_json_server_error(start: Starter, workload_source: InMemorySvidSource) -> None:
    fake = FakeTokenService(workload_source, failure=RuntimeError("bug"))
    sidecar = await start(workload_source, token_service=fake)
    reply = await sidecar_get(sidecar.socket_path, "/v1/token", {"audience": API})
    assert (reply.status, reply.body) == (500, {"error": "server_error"})


async def test_token_service_is_probed_again_as_soon_as_the_svid_changes(
    start: Starter, workload_source: InMemorySvidSource
) -> None:
    fake = FakeTokenService(workload_source)
    await start(workload_source, token_service=fake, probe_interval=3600)
    await wait_for(lambda: asyncio.sleep(0, fake.probes == 1))
    workload_source.rotate()
    await wait_for(lambda: asyncio.sleep(0, fake.probes == 2), timeout=2)  # not after the 1 h interval


async def test_socket_mode_given_in_decimal_by_mistake_is_refused(
    start: Starter, workload_source: InMemorySvidSource
) -> None:
    from broker.errors import ConfigError

    with pytest.raises(ConfigError, match="permission bits"):
        await start(workload_source, token_service=FakeTokenService(workload_source), socket_mode=600)
