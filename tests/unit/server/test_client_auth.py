"""Client authentication is checked once per TLS connection, and again whenever it could have changed."""

from __future__ import annotations

import ssl
from typing import Any

import aiohttp
import pytest

import broker.tokens.client_auth.mtls as mtls_module
from broker.devtools.devca import DevCA
from broker.identity.spiffeid import TrustDomain
from broker.identity.spiffetls.context import peer_spiffe_id
from tests.unit.server.token_service_helpers import API, CLIENT_ID, Broker, client_context

FORM = {"grant_type": "client_credentials", "audience": API}


@pytest.fixture
def verifications(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    real = peer_spiffe_id  # what broker.tokens.client_auth.mtls calls

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(mtls_module, "peer_spiffe_id", counting)
    return calls


async def _two_requests_on_one_connection(broker: Broker, ctx: ssl.SSLContext, between: Any = None) -> list[int]:
    connector = aiohttp.TCPConnector(ssl=ctx, limit=1)
    statuses = []
    async with aiohttp.ClientSession(connector=connector) as session:
        for round_ in range(2):
            if round_ == 1 and between is not None:
                between()
            async with session.post(f"{broker.url}/token", data=FORM) as response:
                await response.read()
                statuses.append(response.status)
    return statuses


async def test_keep_alive_connection_verifies_client_certificate_once(
    broker: Broker, ca: DevCA, verifications: list[int]
) -> None:
    ctx = client_context(ca.issue_x509_svid(CLIENT_ID, ttl=600), ca)
    assert await _two_requests_on_one_connection(broker, ctx) == [200, 200]
    assert len(verifications) == 1


async def test_bundle_change_rechecks_open_connection_and_refuses_untrusted_client(
    broker: Broker, ca: DevCA, verifications: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx = client_context(ca.issue_x509_svid(CLIENT_ID, ttl=600), ca)
    replacement = DevCA.ephemeral("example.org")  # example.org's bundle now names another CA

    def rotate_trust() -> None:
        monkeypatch.setattr(
            broker.source, "x509_bundles", lambda: {TrustDomain("example.org"): replacement.x509_bundle()}
        )

    assert await _two_requests_on_one_connection(broker, ctx, rotate_trust) == [200, 401]
    assert len(verifications) == 2


async def test_new_connection_is_verified_again(broker: Broker, ca: DevCA, verifications: list[int]) -> None:
    ctx = client_context(ca.issue_x509_svid(CLIENT_ID, ttl=600), ca)
    for _ in range(2):
        connector = aiohttp.TCPConnector(ssl=ctx, force_close=True)
        async with (
            aiohttp.ClientSession(connector=connector) as session,
            session.post(f"{broker.url}/token", data=FORM) as response,
        ):
            assert response.status == 200
    assert len(verifications) == 2


@pytest.mark.parametrize("suffix", ["&&&", "&unknown", "&scope"], ids=["empty-pairs", "valueless", "empty-scope"])
async def test_valueless_and_empty_parameters_are_treated_as_omitted(broker: Broker, ca: DevCA, suffix: str) -> None:
    """RFC 6749 §3.1: parameters sent without a value are treated as omitted; unknown ones are ignored."""
    ctx = client_context(ca.issue_x509_svid(CLIENT_ID, ttl=600), ca)
    body = f"grant_type=client_credentials&audience={API}{suffix}"
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    connector = aiohttp.TCPConnector(ssl=ctx, force_close=True)
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.post(f"{broker.url}/token", data=body, headers=headers) as response,
    ):
        assert response.status == 200, await response.text()


@pytest.mark.parametrize("with_certificate", [True, False], ids=["with-certificate", "without-certificate"])
async def test_client_secret_basic_is_refused_with_a_basic_challenge(
    broker: Broker, ca: DevCA, with_certificate: bool
) -> None:
    """RFC 6749 §5.2 and §2.3: only tls_client_auth; a Basic attempt gets 401 and a Basic challenge, never a token."""
    svid = ca.issue_x509_svid(CLIENT_ID, ttl=600) if with_certificate else None
    connector = aiohttp.TCPConnector(ssl=client_context(svid, ca), force_close=True)
    before = broker.snapshot()
    headers = {"Authorization": "Basic Y2xpZW50OnNlY3JldA=="}
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.post(f"{broker.url}/token", data=FORM, headers=headers) as response,
    ):
        body = await response.json()
        assert response.status == 401
        assert response.headers["WWW-Authenticate"].startswith("Basic ")
    assert body["error"] == "invalid_client" and "access_token" not in body
    assert broker.snapshot() == before
