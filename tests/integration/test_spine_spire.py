"""The spine against a real SPIRE agent: token service, demo API and sidecar as separate processes, each with its
own SPIFFE ID from the agent; an app's bound token works only on a connection presenting the app's own SVID."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.spine import (
    APP,
    DEMO_AUDIENCE,
    DEMO_SCOPE,
    OTHER,
    Reply,
    Spine,
    SvidFiles,
    fetch_svid_files,
    https_request,
    jwt_part,
    private_dir,
    spine_fixture,
    tls_context,
)

pytestmark = pytest.mark.spire


spine = spine_fixture(APP)


@pytest.fixture
def svid_dir() -> Iterator[Path]:
    with private_dir("svids.") as path:
        yield path


def _hello(spine: Spine, token: str, *, client: SvidFiles | None, bundle: Path) -> Reply:
    """GET /hello on the demo API from this process, with ``client``'s certificate (or none) and ``token``."""
    context = tls_context(bundle, client)
    return https_request(
        spine.demo_port, "GET", "/hello", context=context, headers={"Authorization": f"Bearer {token}"}
    )


def _token(spine: Spine) -> str:
    reply = spine.token()
    assert reply.status == 200, reply.body
    assert reply.headers["cache-control"] == "no-store"
    token: str = reply.json()["access_token"]
    return token


def test_sidecar_token_is_accepted_by_demo_api_over_mtls_with_the_apps_svid(spine: Spine) -> None:
    result = spine.call(scope=DEMO_SCOPE)
    assert (result.returncode, result.status) == (0, 200), result.stderr
    assert result.json() == {"hello": APP.spiffe_id, "scope": DEMO_SCOPE}


def test_sidecar_token_is_bound_to_the_x509_svid_the_agent_serves_the_app(spine: Spine, svid_dir: Path) -> None:
    claims = jwt_part(_token(spine), 1)
    app_svid = fetch_svid_files(spine.spire, APP, svid_dir)
    assert claims["sub"] == APP.spiffe_id
    assert claims["aud"] in (DEMO_AUDIENCE, [DEMO_AUDIENCE])
    assert claims["iss"] == spine.issuer
    assert claims["cnf"] == {"x5t#S256": app_svid.x5t_s256()}


def test_token_on_a_connection_with_another_valid_svid_is_rejected_as_invalid_token(
    spine: Spine, svid_dir: Path
) -> None:
    token = _token(spine)
    app_svid = fetch_svid_files(spine.spire, APP, svid_dir / "app")
    other_svid = fetch_svid_files(spine.spire, OTHER, svid_dir / "other")
    # Control: the same request with the app's own certificate is accepted, so only the certificate differs.
    assert _hello(spine, token, client=app_svid, bundle=app_svid.bundle).status == 200
    reply = _hello(spine, token, client=other_svid, bundle=other_svid.bundle)
    assert reply.status == 401
    assert reply.json()["error"] == "invalid_token"
    assert 'error="invalid_token"' in reply.headers["www-authenticate"]


def test_token_without_client_certificate_is_rejected_as_invalid_token(spine: Spine, svid_dir: Path) -> None:
    token = _token(spine)
    bundle = fetch_svid_files(spine.spire, OTHER, svid_dir).bundle
    reply = _hello(spine, token, client=None, bundle=bundle)
    assert reply.status == 401
    assert reply.json()["error"] == "invalid_token"
    assert 'error="invalid_token"' in reply.headers["www-authenticate"]


@pytest.mark.parametrize(
    ("audience", "scope", "error"),
    [
        ("https://not-in-policy.example.org", None, "invalid_target"),
        (DEMO_AUDIENCE, "hello:admin", "invalid_scope"),
    ],
    ids=["audience-outside-policy", "scope-outside-policy"],
)
def test_request_outside_policy_is_passed_through_by_sidecar_as_403(
    spine: Spine, audience: str, scope: str | None, error: str
) -> None:
    reply = spine.token(audience, scope)
    assert reply.status == 403
    assert reply.json()["error"] == error


def test_call_with_audience_outside_policy_fails_without_reaching_the_api(spine: Spine) -> None:
    result = spine.call(audience="https://not-in-policy.example.org")
    assert result.returncode != 0
    assert result.status == 0
    assert "invalid_target" in result.stderr
