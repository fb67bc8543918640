"""Tests for broker.identity.spiffetls.verified: a verified chain is answered again only while nothing changed."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from broker.devtools.devca import DevCA
from broker.identity.memory import InMemorySvidSource
from broker.identity.spiffeid import SpiffeId, TrustDomain
from broker.identity.spiffetls import context as context_module
from broker.identity.spiffetls.context import peer_spiffe_id
from broker.identity.spiffetls.verified import VerifiedChains, chain_key
from broker.identity.x509svid import ChainVerificationError, verify_x509_svid
from broker.testing import forged_svid
from tests.unit.identity.spiffetls.test_tls import EchoServer, ca_a, ca_b, connect, plain_client_context, tls_server

TD = TrustDomain("a.test")
CLIENT_ID = SpiffeId.parse("spiffe://a.test/client")
__all__ = ["ca_a", "ca_b", "tls_server"]  # fixtures, imported for the tests below


@pytest.fixture
def ca(ca_a: DevCA) -> DevCA:
    return ca_a


def kept(ca: DevCA) -> tuple[VerifiedChains, bytes, Any]:
    svid = ca.issue_x509_svid(CLIENT_ID, ttl=600)
    chains = VerifiedChains()
    key = chain_key([svid.leaf.public_bytes(Encoding.DER)], "client")
    chains.keep(key, CLIENT_ID, [svid.leaf], ca.x509_bundle())
    return chains, key, svid


def test_a_kept_chain_is_answered_while_its_bundle_is_unchanged_and_it_is_valid(ca: DevCA) -> None:
    chains, key, svid = kept(ca)
    found = chains.lookup(key, {TD: ca.x509_bundle()}, dt.datetime.now(dt.UTC))
    assert found is not None and found.spiffe_id == CLIENT_ID and found.leaf == svid.leaf


def test_a_changed_or_missing_bundle_is_a_miss(ca: DevCA) -> None:
    chains, key, _ = kept(ca)
    now = dt.datetime.now(dt.UTC)
    assert chains.lookup(key, {TD: DevCA.ephemeral(TD).x509_bundle()}, now) is None
    assert chains.lookup(key, {}, now) is None


def test_outside_the_validity_period_is_a_miss(ca: DevCA) -> None:
    chains, key, svid = kept(ca)
    bundles = {TD: ca.x509_bundle()}
    assert chains.lookup(key, bundles, svid.leaf.not_valid_after_utc + dt.timedelta(seconds=1)) is None
    assert chains.lookup(key, bundles, svid.leaf.not_valid_before_utc - dt.timedelta(seconds=1)) is None


def test_the_key_covers_the_role_and_every_certificate_in_order() -> None:
    assert chain_key([b"leaf"], "client") != chain_key([b"leaf"], "server")
    assert chain_key([b"a", b"b"], "client") != chain_key([b"b", b"a"], "client")
    assert chain_key([b"ab"], "client") != chain_key([b"a", b"b"], "client")


def test_the_oldest_chain_is_forgotten_beyond_the_bound(ca: DevCA) -> None:
    chains = VerifiedChains(max_chains=2)
    svid = ca.issue_x509_svid(CLIENT_ID, ttl=600)
    for name in (b"1", b"2", b"3"):
        chains.keep(name, CLIENT_ID, [svid.leaf], ca.x509_bundle())
    now, bundles = dt.datetime.now(dt.UTC), {TD: ca.x509_bundle()}
    assert len(chains) == 2 and chains.lookup(b"1", bundles, now) is None and chains.lookup(b"3", bundles, now)


async def test_a_second_connection_with_the_same_chain_is_not_verified_again(
    tls_server: tuple[EchoServer, InMemorySvidSource], ca: DevCA, monkeypatch: pytest.MonkeyPatch
) -> None:
    echo, server_source = tls_server
    monkeypatch.setattr(context_module, "VERIFIED_CHAINS", VerifiedChains())
    calls: list[int] = []
    real = verify_x509_svid

    def counting(*args: Any, **kwargs: Any) -> SpiffeId:
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(context_module, "verify_x509_svid", counting)
    client_svid = ca.issue_x509_svid(CLIENT_ID, ttl=600)
    for _ in range(2):
        await connect(echo.port, plain_client_context(client_svid, ca))
    answers = [peer_spiffe_id(ssl_object, server_source.x509_bundles()) for ssl_object in echo.ssl_objects]
    assert answers == [(CLIENT_ID, client_svid.leaf)] * 2 and len(calls) == 1


async def test_a_refused_chain_is_verified_again_every_time(
    tls_server: tuple[EchoServer, InMemorySvidSource], ca: DevCA, ca_b: DevCA, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A leaf of a.test under b's CA passes ``ssl`` (b is loaded) and fails the check, on every connection."""
    echo, server_source = tls_server
    monkeypatch.setattr(context_module, "VERIFIED_CHAINS", VerifiedChains())
    forged = forged_svid(ca_b, str(CLIENT_ID))
    for _ in range(2):
        await connect(echo.port, plain_client_context(forged, ca))
    for ssl_object in echo.ssl_objects:
        with pytest.raises(ChainVerificationError):
            peer_spiffe_id(ssl_object, server_source.x509_bundles())
