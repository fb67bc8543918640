"""The scenarios: which requests each side gets (bodies, paths, TLS), built from the started test bed.

1. ``mtls_keepalive`` / ``mtls_new_connection`` / ``mtls_resume``: ``client_credentials`` authenticated by the
   workload's X.509-SVID over mutual TLS, the token bound to it (``cnf.x5t#S256``). Keycloak: client
   ``workload-mtls`` (``client-x509``); the broker: ``POST /token`` with ``audience`` and ``scope``. Keep-alive
   connections; a new connection and a full handshake per grant; a new connection offering the previous session.
2. ``jwt_svid``: a JWT-SVID as the credential. Keycloak: ``client_credentials`` with the JWT-SVID as a
   ``jwt-spiffe`` client assertion (client ``workload-spiffe``, ``federated-jwt``, keys from the bundle endpoint);
   the broker: RFC 8693 token exchange with the JWT-SVID as ``subject_token``, over its mTLS connection. Both
   over keep-alive connections presenting the client certificate. Fresh JWT-SVIDs (same dev CA, ``aud`` = each
   server's issuer) before every round.
3. ``cached_jwt``: the SPIRE agent's ``FetchJWTSVID`` (gRPC over its Unix socket) against ``GET /v1/token`` on the
   sidecar's socket; the same fixed request count per round.
"""

from __future__ import annotations

import sys
from pathlib import Path
from urllib.parse import urlencode

from bench.anchors.scenarios import Scenario, Shape, Target
from bench.anchors.testbed import Bed
from bench.exchange_bench import FORM, exchange_bodies
from bench.sidecar_bench import TOKEN_PATH
from bench.stack import AUDIENCE, WORKLOAD_ID

__all__ = ["JWT_SPIFFE", "SVID_TTL", "build_scenarios", "keycloak_bodies"]

JWT_SPIFFE = "urn:ietf:params:oauth:client-assertion-type:jwt-spiffe"
SVID_TTL = 300
KEYCLOAK_TOKEN_PATH = "/realms/bench/protocol/openid-connect/token"
LOADGEN = [sys.executable, "-m", "bench.loadgen"]


def keycloak_bodies(bed: Bed) -> dict[str, bytes]:
    """Keycloak's two form bodies (the JWT-SVID one freshly minted)."""
    assert bed.keycloak is not None
    svid = bed.stack.ca.mint_jwt_svid(WORKLOAD_ID, [bed.keycloak.issuer], ttl=SVID_TTL).token
    spiffe = {"grant_type": "client_credentials", "client_assertion_type": JWT_SPIFFE, "client_assertion": svid}
    mtls = {"grant_type": "client_credentials", "client_id": "workload-mtls"}
    return {"mtls": urlencode(mtls).encode(), "jwt_svid": urlencode(spiffe).encode()}


def broker_bodies(bed: Bed) -> dict[str, bytes]:
    found = exchange_bodies(bed.stack.jwt_svid(ttl=SVID_TTL))
    return {"mtls": found["client_credentials"], "jwt_svid": found["token_exchange"]}


def _https(bed: Bed, port: int, ca: Path, path: str, body: Path, *extra: str) -> list[str]:
    files = bed.stack.files
    return [*LOADGEN, "--tcp", f"127.0.0.1:{port}", "--tls-ca", str(ca), "--tls-cert", str(files.client_cert),
            "--tls-key", str(files.client_key), "--method", "POST", "--path", path, "--body-file", str(body),
            "--content-type", FORM, *extra]  # fmt: skip


def _write_bodies(bed: Bed) -> dict[str, Path]:
    root = bed.stack.files.root
    paths = {}
    for side, bodies in (("keycloak", keycloak_bodies(bed)), ("broker", broker_bodies(bed))):
        for name, body in bodies.items():
            paths[f"{side}_{name}"] = root / f"{side}_{name}.form"
            paths[f"{side}_{name}"].write_bytes(body)
    return paths


def _token_scenarios(bed: Bed, shape: Shape) -> list[Scenario]:
    assert bed.keycloak is not None
    paths = _write_bodies(bed)
    kc, broker = bed.keycloak, bed.stack.children["server"]
    modes = {"mtls_keepalive": ("1. mTLS client_credentials, keep-alive", ()),
             "mtls_new_connection": ("1. mTLS client_credentials, new TLS connection per grant", ("--new-connection",)),
             "mtls_resume": ("1. mTLS client_credentials, new connection offering the last session",
                             ("--new-connection", "--resume"))}  # fmt: skip
    found = []
    for name, (title, extra) in modes.items():
        anchor = Target(
            "keycloak", kc, _https(bed, kc.port, bed.ca.root, KEYCLOAK_TOKEN_PATH, paths["keycloak_mtls"], *extra)
        )
        ours = Target("broker", broker, _https(bed, bed.stack.server_port, bed.stack.files.bundle, "/token",
                                               paths["broker_mtls"], *extra))  # fmt: skip
        found.append(Scenario(name, title, anchor, ours, shape))
    anchor = Target("keycloak", kc, _https(bed, kc.port, bed.ca.root, KEYCLOAK_TOKEN_PATH, paths["keycloak_jwt_svid"]))
    ours = Target("broker", broker, _https(bed, bed.stack.server_port, bed.stack.files.bundle, "/token",
                                           paths["broker_jwt_svid"]))  # fmt: skip
    title = "2. JWT-SVID: Keycloak jwt-spiffe client assertion vs broker RFC 8693 exchange"

    def refresh() -> None:
        _write_bodies(bed)

    found.append(Scenario("jwt_svid", title, anchor, ours, shape, refresh=refresh))
    return found


def _cached_scenario(bed: Bed, shape: Shape) -> Scenario:
    assert bed.spire is not None and bed.spire_agent is not None
    agent = Target("spire_agent", bed.spire_agent, [*LOADGEN, "--unix", bed.spire.workload_socket,
                                                    "--grpc-jwt-audience", AUDIENCE])  # fmt: skip
    sidecar = Target("sidecar", bed.stack.children["sidecar"], [*LOADGEN, "--unix", str(bed.stack.files.sidecar_socket),
                                                                "--path", TOKEN_PATH])  # fmt: skip
    title = "3. cached JWT: SPIRE agent FetchJWTSVID (gRPC) vs sidecar GET /v1/token"
    return Scenario("cached_jwt", title, agent, sidecar, shape)


def build_scenarios(bed: Bed, parts: set[str], *, token_shape: Shape, cached_shape: Shape) -> list[Scenario]:
    """The scenarios of ``parts`` (``"1"``: the three mTLS ones, ``"2"``: JWT-SVID, ``"3"``: cached JWT)."""
    found: list[Scenario] = []
    if parts & {"1", "2"}:
        part = {"mtls": "1", "jwt_": "2"}
        found += [s for s in _token_scenarios(bed, token_shape) if part[s.name[:4]] in parts]
    if "3" in parts:
        found.append(_cached_scenario(bed, cached_shape))
    return found
