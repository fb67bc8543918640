"""Token service lifecycle: policy reload, key persistence, health probes, logs that never show secrets."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest

from broker.devtools.devca import DevCA
from broker.errors import ConfigError
from broker.identity.memory import InMemorySvidSource
from broker.oauth.constants import GRANT_CLIENT_CREDENTIALS, GRANT_TOKEN_EXCHANGE, TOKEN_TYPE_JWT
from broker.server.app import normalize_issuer
from broker.server.service import start_token_service
from broker.server.state import POLICY as POLICY_STORE
from broker.tokens.keys import ACTIVE_KEY_FILE, FileKeyStore, InMemoryKeyStore
from broker.tokens.policy import FilePolicyStore, InMemoryPolicyStore, Policy
from tests.unit.server.token_service_helpers import API, CLIENT_ID, ISSUER, POLICY, Broker, client_context, request

REPORTS = "https://reports.example.org"


async def token_status(broker: Broker, ca: DevCA, audience: str) -> tuple[int, str]:
    ctx = client_context(ca.issue_x509_svid(CLIENT_ID, ttl=600), ca)
    reply = await request(
        ctx, "POST", broker.url + "/token", data={"grant_type": GRANT_CLIENT_CREDENTIALS, "audience": audience}
    )
    return reply.status, reply.body.get("error", "")


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll a background watcher's effect (bounded)."""
    async with asyncio.timeout(timeout):
        while not condition():  # noqa: ASYNC110 (the watcher runs in a thread on a timer: no event to await)
            await asyncio.sleep(0.01)


async def test_policy_change_applies_without_restart_and_broken_file_keeps_last_good(
    broker: Broker, ca: DevCA, caplog: pytest.LogCaptureFixture
) -> None:
    store = broker.service.app[POLICY_STORE]
    assert isinstance(store, FilePolicyStore)
    assert await token_status(broker, ca, REPORTS) == (400, "invalid_target")
    broker.policy_path.write_text(POLICY.replace('["https://api.example.org"]', f'["{API}", "{REPORTS}"]'))
    await until(lambda: store.generation == 2)
    assert (await token_status(broker, ca, REPORTS))[0] == 200
    with caplog.at_level(logging.ERROR, logger="broker.tokens.policy"):
        broker.policy_path.write_text(POLICY + "    bogus: true\n")
        await until(lambda: store.last_error is not None)
        assert (await token_status(broker, ca, REPORTS))[0] == 200  # last good policy still in force
    assert "policy.yaml:6: unknown field 'bogus'" in caplog.text


async def test_deeply_nested_policy_file_is_refused_and_requests_keep_the_last_good_policy(
    broker: Broker, ca: DevCA, caplog: pytest.LogCaptureFixture
) -> None:
    store = broker.service.app[POLICY_STORE]
    assert isinstance(store, FilePolicyStore)
    with caplog.at_level(logging.ERROR, logger="broker.tokens.policy"):
        broker.policy_path.write_text("rules: " + "[" * 100_000)  # RecursionError in PyYAML's composer before
        await until(lambda: store.last_error is not None)
    assert "nested deeper than" in caplog.text
    assert await token_status(broker, ca, API) == (200, "")


async def test_policy_watcher_notices_broken_file_without_requests(
    broker: Broker, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="broker.tokens.policy"):
        broker.policy_path.write_text("rules: [\n")
        await until(lambda: "policy not reloaded" in caplog.text)
    assert "policy not reloaded" in caplog.text and "not valid YAML" in caplog.text


async def test_signing_key_is_generated_0600_and_reused_after_restart(
    source: InMemorySvidSource, ca: DevCA, state_dir: Path
) -> None:
    kids = []
    for _ in range(2):
        service = await start_token_service(
            source=source,
            policy_store=InMemoryPolicyStore(Policy(rules=())),
            key_store=FileKeyStore(state_dir),
            listen_host="127.0.0.1",
            listen_port=0,
            issuer=ISSUER,
        )
        try:
            jwks = (await request(client_context(None, ca), "GET", f"https://127.0.0.1:{service.port}/jwks.json")).body
            kids.append(jwks["keys"][0]["kid"])
        finally:
            await service.aclose()
    assert kids[0] == kids[1]
    assert (state_dir / ACTIVE_KEY_FILE).stat().st_mode & 0o777 == 0o600


async def test_health_port_serves_plain_http_probes(broker: Broker) -> None:
    url = f"http://127.0.0.1:{broker.service.health_port}"
    async with aiohttp.ClientSession() as session:
        async with session.get(url + "/healthz") as resp:
            assert resp.status == 200
        async with session.get(url + "/readyz") as resp:
            assert (resp.status, (await resp.json())["status"]) == (200, "ready")
        broker.source.set_unavailable()
        async with session.get(url + "/readyz") as resp:
            assert resp.status == 503
            assert (await resp.json())["reason"] == "no X.509-SVID"
        async with session.get(url + "/token") as resp:
            assert resp.status == 404


async def test_unexpected_failure_is_500_server_error_without_details(
    source: InMemorySvidSource, ca: DevCA, caplog: pytest.LogCaptureFixture
) -> None:
    detail = "internal detail " + "0x" + "deadbeef"  # built at run time: the source line shows no value

    class ExplodingPolicyStore:
        def current(self) -> Policy:
            raise RuntimeError(detail)

    service = await start_token_service(
        source=source,
        policy_store=ExplodingPolicyStore(),
        key_store=InMemoryKeyStore(),
        listen_host="127.0.0.1",
        listen_port=0,
        issuer=ISSUER,
    )
    try:
        ctx = client_context(ca.issue_x509_svid(CLIENT_ID, ttl=600), ca)
        with caplog.at_level(logging.DEBUG):
            reply = await request(
                ctx,
                "POST",
                f"https://127.0.0.1:{service.port}/token",
                data={"grant_type": GRANT_CLIENT_CREDENTIALS, "audience": API},
            )
    finally:
        await service.aclose()
    assert (reply.status, reply.body) == (500, {"error": "server_error"})
    assert "RuntimeError" in caplog.text and "0xdeadbeef" not in caplog.text


async def test_logs_never_contain_tokens_jwt_svids_or_keys(
    broker: Broker, ca: DevCA, caplog: pytest.LogCaptureFixture
) -> None:
    svid = ca.issue_x509_svid(CLIENT_ID, ttl=600)
    ctx = client_context(svid, ca)
    good = ca.mint_jwt_svid(CLIENT_ID, [ISSUER], ttl=300).token
    wrong = ca.mint_jwt_svid(CLIENT_ID, ["https://other"], ttl=300).token
    secrets = [good, wrong]
    with caplog.at_level(logging.DEBUG):
        for subject in (good, wrong):
            reply = await request(
                ctx,
                "POST",
                broker.url + "/token",
                data={
                    "grant_type": GRANT_TOKEN_EXCHANGE,
                    "subject_token": subject,
                    "subject_token_type": TOKEN_TYPE_JWT,
                    "audience": API,
                },
            )
            if "access_token" in reply.body:
                secrets.append(reply.body["access_token"])
        await request(ctx, "POST", broker.url + f"/token?subject_token={good}", data={"grant_type": "x"})
        broker.source.rotate()
        await request(ctx, "GET", broker.url + "/jwks.json")
    assert len(secrets) == 3, "the good exchange must have issued a token"
    key_pem = (broker.state_dir / ACTIVE_KEY_FILE).read_text()
    pieces = [*secrets, *(part for s in secrets for part in s.split(".")), key_pem, svid.key_pem().decode()]
    pieces += [line for line in key_pem.splitlines() if "PRIVATE KEY" not in line]
    pieces += [broker.source.x509_svid().key_pem().decode()]
    assert caplog.records, "the flow must have logged something"
    for piece in pieces:
        assert piece not in caplog.text
    assert "PRIVATE KEY" not in caplog.text


@pytest.mark.parametrize(
    ("issuer", "expected"),
    [("https://broker.test", "https://broker.test"), ("https://broker.test:8443/", "https://broker.test:8443")],
    ids=["host", "port-and-slash"],
)
def test_normalize_issuer_accepts_https_origin(issuer: str, expected: str) -> None:
    assert normalize_issuer(issuer) == expected


@pytest.mark.parametrize(
    "issuer",
    [
        "http://broker.test",
        "https://broker.test/path",
        "https://broker.test?x=1",
        "https://broker.test#f",
        "https://u:p@broker.test",
        "broker.test",
    ],
    ids=["http", "path", "query", "fragment", "userinfo", "no-scheme"],
)
def test_normalize_issuer_refuses_non_rfc8414_issuer(issuer: str) -> None:
    with pytest.raises(ConfigError):
        normalize_issuer(issuer)


async def test_start_failure_releases_everything(source: InMemorySvidSource, broker: Broker) -> None:
    """Binding a taken port fails cleanly: the error surfaces and the context is detached from the source."""
    subscribers = len(source._subscribers)
    with pytest.raises(OSError):
        await start_token_service(
            source=source, policy_store=InMemoryPolicyStore(Policy(rules=())), key_store=InMemoryKeyStore(),
            listen_host="127.0.0.1", listen_port=broker.service.port, issuer=ISSUER,
        )  # fmt: skip
    assert len(source._subscribers) == subscribers


async def test_probes_and_metadata_stay_out_of_the_info_access_log(
    broker: Broker, ca: DevCA, caplog: pytest.LogCaptureFixture
) -> None:
    """Before: every sidecar's metadata probe (every 5 s) and every kubelet probe was an INFO access line."""
    public = client_context(None, ca)
    with caplog.at_level(logging.DEBUG, logger="aiohttp.access"):
        await request(public, "GET", broker.url + "/.well-known/oauth-authorization-server")
        await request(public, "GET", broker.url + "/healthz")
        await request(public, "GET", broker.url + "/readyz")
        await token_status(broker, ca, API)
    lines = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "aiohttp.access"]
    assert [message.split()[2] for level, message in lines if level == logging.INFO] == ["/token"]
    assert len([1 for level, _ in lines if level == logging.DEBUG]) == 3
