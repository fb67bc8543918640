"""The spine against real SPIRE with an UpstreamAuthority (issue 7, defect 2): every X509-SVID is leaf + SPIRE's
intermediate CA, the bundle is the upstream root. The sidecar, token service and demo API verify each other's
chains through that intermediate, per trust domain, on every supported Python."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

from broker.identity.bundle import X509Bundle
from broker.identity.spiffeid import SpiffeId, TrustDomain
from broker.identity.x509svid import verify_x509_svid
from tests.integration.spine import (
    APP,
    DEMO_SCOPE,
    OTHER,
    Spine,
    fetch_svid_files,
    https_request,
    jwt_part,
    private_dir,
    spine_fixture,
)
from tests.integration.spine import tls_context as spine_tls_context
from tests.integration.spire import TRUST_DOMAIN, SpireDeployment

pytestmark = pytest.mark.spire


@pytest.fixture(scope="module")
def spire(spire_upstream: SpireDeployment) -> SpireDeployment:
    """This module's spine runs on the UpstreamAuthority deployment (spine_fixture asks for ``spire``)."""
    return spire_upstream


spine = spine_fixture(APP)


@pytest.fixture
def svid_dir() -> Iterator[Path]:
    with private_dir("svids.") as path:
        yield path


def _is_ca(cert: x509.Certificate) -> bool:
    return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)


def test_agent_serves_svids_through_an_intermediate_under_the_upstream_root(spine: Spine, svid_dir: Path) -> None:
    files = fetch_svid_files(spine.spire, APP, svid_dir)
    chain = x509.load_pem_x509_certificates(files.cert.read_bytes())
    roots = x509.load_pem_x509_certificates(files.bundle.read_bytes())
    assert len(chain) == 2
    leaf, intermediate = chain
    assert not _is_ca(leaf) and _is_ca(intermediate)
    assert leaf.issuer == intermediate.subject
    assert intermediate not in roots
    assert intermediate.issuer in {root.subject for root in roots}
    td = TrustDomain(TRUST_DOMAIN)
    assert verify_x509_svid(chain, {td: X509Bundle(td, tuple(roots))}) == SpiffeId.parse(APP.spiffe_id)


def test_sidecar_token_service_and_demo_api_work_end_to_end_through_the_intermediate(spine: Spine) -> None:
    """The app calls the demo API: sidecar -> token service mTLS, demo API -> token service JWKS over mTLS and
    app -> demo API mTLS each present leaf + intermediate and verify the other side's."""
    result = spine.call(scope=DEMO_SCOPE)
    assert (result.returncode, result.status) == (0, 200), result.stderr + spine.procs.tails()
    assert result.json() == {"hello": APP.spiffe_id, "scope": DEMO_SCOPE}


def test_token_is_bound_to_the_leaf_not_the_intermediate(spine: Spine, svid_dir: Path) -> None:
    reply = spine.token(scope=DEMO_SCOPE)
    assert reply.status == 200, reply.body
    token: str = reply.json()["access_token"]
    app_svid = fetch_svid_files(spine.spire, APP, svid_dir / "app")
    assert jwt_part(token, 1)["cnf"] == {"x5t#S256": app_svid.x5t_s256()}
    other_svid = fetch_svid_files(spine.spire, OTHER, svid_dir / "other")
    headers = {"Authorization": f"Bearer {token}"}
    own = https_request(
        spine.demo_port, "GET", "/hello", context=spine_tls_context(app_svid.bundle, app_svid), headers=headers
    )
    assert own.status == 200, own.body
    other = https_request(
        spine.demo_port, "GET", "/hello", context=spine_tls_context(other_svid.bundle, other_svid), headers=headers
    )
    assert other.status == 401
