"""A client from another ecosystem, go-spiffe v2, against our dev Workload API, token service and demo API.

The Go program (goclient/) uses go-spiffe's own Workload API client, X.509/JWT-SVID verifiers and mTLS config,
so these tests check the wire contracts, not our reading of them: the Workload API messages (SPIFFE Workload API
standard, X509-SVID and JWT-SVID standards), the JWKS with ``use: jwt-svid`` in the JWT bundles, the SPIFFE IDs
our servers present, RFC 8414 metadata, RFC 8693 token exchange and RFC 8705 certificate binding.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.devstack_process import DevProcess
from tests.interop.gointerop import GoClient

WORKLOAD_ID = "spiffe://example.org/workload"
BROKER_ID = "spiffe://example.org/spiffe-broker"
DEMO_ID = "spiffe://example.org/demo-api"
TRUST_DOMAIN = "spiffe://example.org"
JWT_AUDIENCE = "spiffe://example.org/go-interop"
JWT_EXTRA_AUDIENCE = "https://extra.example.org"
DEMO_SCOPE = "hello:read"


def exchange_args(dev: DevProcess, *extra: str, audience: str | None = None) -> list[str]:
    return [
        "mtls-token", "-addr", dev.workload_api, "-issuer", dev.issuer,
        "-audience", audience or dev.demo_audience, *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def jwt_report(goclient: GoClient, dev: DevProcess) -> dict[str, Any]:
    args = ["-addr", dev.workload_api, "-audience", JWT_AUDIENCE, "-extra-audience", JWT_EXTRA_AUDIENCE]
    return goclient.json("jwt", *args)


def test_go_spiffe_fetches_x509_context_whose_chain_verifies_against_the_bundle(
    goclient: GoClient, dev: DevProcess
) -> None:
    report = goclient.json("x509", "-addr", dev.workload_api)
    assert report["spiffe_id"] == WORKLOAD_ID
    assert report["verified_id"] == WORKLOAD_ID, "x509svid.Verify against the context's bundle"
    assert report["x509_bundles_verified_id"] == WORKLOAD_ID, "x509svid.Verify against FetchX509Bundles"
    assert report["svid_count"] == 1 and report["verified_chain_count"] >= 1
    assert report["bundle_trust_domains"] == [TRUST_DOMAIN]
    assert report["x509_bundles_trust_domains"] == [TRUST_DOMAIN]
    assert datetime.fromisoformat(report["not_after"]) > datetime.now(UTC)


def test_go_spiffe_validates_jwt_svid_via_workload_api_and_locally_against_jwt_bundles(
    jwt_report: dict[str, Any],
) -> None:
    assert jwt_report["spiffe_id"] == WORKLOAD_ID
    assert jwt_report["audience"] == [JWT_AUDIENCE, JWT_EXTRA_AUDIENCE]
    assert jwt_report["workload_api_validated_id"] == WORKLOAD_ID
    assert jwt_report["local_validated_id"] == WORKLOAD_ID, "jwtsvid.ParseAndValidate with our JWKS bundle"
    header = jwt_report["header"]
    assert header["alg"] == "ES256" and header.get("typ", "JWT") in ("JWT", "JOSE")
    assert set(header) <= {"alg", "kid", "typ"}, "JWT-SVID standard §2: only alg, kid and typ headers"
    assert header["kid"] in jwt_report["jwt_bundle_key_ids"][TRUST_DOMAIN]
    claims = jwt_report["claims"]
    assert claims["sub"] == WORKLOAD_ID and claims["exp"] > claims["iat"]


def test_jwt_svid_with_extra_audience_validates_for_either_audience(jwt_report: dict[str, Any]) -> None:
    assert jwt_report["claims"]["aud"] == [JWT_AUDIENCE, JWT_EXTRA_AUDIENCE]
    assert jwt_report["extra_audience_validated_ids"] == [WORKLOAD_ID, WORKLOAD_ID], "Workload API, then local"


@pytest.mark.parametrize(
    ("check", "expected"),
    [
        pytest.param("workload_api_other_audience", "InvalidArgument", id="workload-api-other-audience"),
        pytest.param("workload_api_tampered", "InvalidArgument", id="workload-api-tampered-signature"),
        pytest.param("local_other_audience", "expected audience", id="local-other-audience"),
        pytest.param("local_tampered", "cryptographic primitive", id="local-tampered-signature"),
    ],
)
def test_jwt_svid_validation_refuses_other_audience_and_tampered_signature(
    jwt_report: dict[str, Any], check: str, expected: str
) -> None:
    assert expected in jwt_report["rejections"][check]


def test_go_spiffe_watch_receives_rotated_x509_svids_pushed_on_one_stream(
    goclient: GoClient, rotating_dev: DevProcess
) -> None:
    result = goclient.run("watch", "-addr", rotating_dev.workload_api, "-count", "3", "-timeout", "9s", timeout=20)
    assert result.returncode == 0, result.stderr + result.stdout
    updates = [json.loads(line) for line in result.stdout.splitlines()]
    serials = list(dict.fromkeys(update["serial"] for update in updates))
    assert len(serials) >= 3
    assert all(update["verified"] and update["spiffe_id"] == WORKLOAD_ID for update in updates)
    second = next(update for update in updates if update["serial"] == serials[1])
    assert second["elapsed_ms"] < 6000, "a 4 s SVID is re-issued at half-life"
    not_afters = [datetime.fromisoformat(update["not_after"]) for update in updates]
    assert not_afters == sorted(not_afters) and len(set(not_afters)) == len(serials)


def test_go_client_exchanges_jwt_svid_over_mtls_and_the_token_works_at_the_demo_api(
    goclient: GoClient, dev: DevProcess
) -> None:
    report = goclient.json(*exchange_args(dev, "-scope", DEMO_SCOPE, "-demo-url", dev.hello_url))
    assert report["client_id"] == WORKLOAD_ID
    assert report["token_service_id"] == BROKER_ID
    metadata = report["metadata"]
    assert metadata["issuer"] == dev.issuer and metadata["token_endpoint"] == f"{dev.issuer}/token"
    assert metadata["token_endpoint_auth_methods_supported"] == ["tls_client_auth", "spiffe_jwt", "private_key_jwt"]
    assert metadata["tls_client_certificate_bound_access_tokens"] is True
    assert metadata["response_types_supported"] == []
    assert report["token_status"] == 200, report["token_response"]
    response = report["token_response"]
    assert response["token_type"] == "Bearer" and response["scope"] == DEMO_SCOPE
    assert response["issued_token_type"] == "urn:ietf:params:oauth:token-type:access_token"
    assert report["demo_status"] == 200, report
    assert report["demo_server_id"] == DEMO_ID
    assert json.loads(report["demo_body"]) == {"hello": WORKLOAD_ID, "scope": DEMO_SCOPE}


def test_access_token_verifies_with_go_jose_against_jwks_and_is_bound_to_the_go_clients_leaf(
    goclient: GoClient, dev: DevProcess
) -> None:
    report = goclient.json(*exchange_args(dev, "-scope", DEMO_SCOPE))
    token = report["access_token"]
    assert token["header"]["typ"] == "at+jwt", "RFC 9068 §2.1"
    assert token["kid_is_rfc7638_thumbprint"] is True
    assert token["key_use"] == "sig"
    claims = token["claims"]
    assert claims["iss"] == dev.issuer and claims["aud"] == dev.demo_audience
    assert claims["sub"] == WORKLOAD_ID and claims["client_id"] == WORKLOAD_ID
    assert report["cnf_matches_leaf"] is True, "RFC 8705 §3.1 cnf.x5t#S256 of the leaf go-spiffe presented"


def test_go_spiffe_refuses_a_token_service_presenting_another_spiffe_id(goclient: GoClient, dev: DevProcess) -> None:
    result = goclient.run(*exchange_args(dev, "-broker-id", "spiffe://example.org/someone-else"))
    assert result.returncode == 1
    assert f'unexpected ID "{BROKER_ID}"' in result.stderr


def test_token_service_refuses_an_audience_outside_policy_with_invalid_target(
    goclient: GoClient, dev: DevProcess
) -> None:
    report = goclient.json(*exchange_args(dev, audience="spiffe://example.org/not-allowed"))
    assert report["token_status"] == 400
    assert report["token_response"]["error"] == "invalid_target"
    assert "access_token" not in report
