"""Where a token exchange's server time goes: each step of ``POST /token`` timed in process, without the network.

``python -m bench.breakdown --rounds R`` (own process, pinned by the harness) prints microseconds per call of
each step the token service runs per request, with the same inputs a real exchange has: the client's
certificate check (``verify_x509_svid``, now once per TLS connection), form parsing (the parser in use and
``parse_qs``, which it replaced), policy (remembered per policy object), JWT-SVID validation (memoised in the
server), issuing (claims and ES256 signature), the response body (direct, and the ``json.dumps`` it replaced) and
the access-log line; and, for scale, one raw ES256 verify and one raw ES256 sign. Each value is
the median over ``R`` rounds of the best of three timings. This explains the gap between the server's CPU
time per exchange and the bare cryptography, it is not itself a target.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import timeit
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar, cast
from urllib.parse import parse_qs

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from bench.exchange_bench import exchange_bodies
from broker._logging import TextFormatter
from broker.devtools.devca import DevCA
from broker.identity.jwtsvid import validate_jwt_svid
from broker.identity.spiffeid import SpiffeId, TrustDomain
from broker.identity.x509svid import verify_x509_svid
from broker.oauth.urlencoded import parse_form
from broker.tokens.issuer import AccessTokenIssuer, AuthenticatedClient
from broker.tokens.keys import InMemoryKeyStore, SigningKey
from broker.tokens.policy import InMemoryPolicyStore, parse_policy
from broker.tokens.standard import standard_endpoint
from broker.tokens.svid_cache import ValidatedSvidCache

__all__ = ["main", "step_costs"]

ISSUER = "https://127.0.0.1:8443"
ECDSA_SHA256 = ec.ECDSA(hashes.SHA256())
T = TypeVar("T")


def _microseconds(step: Callable[[], object], rounds: int) -> float:
    number = 200
    results = [min(timeit.repeat(step, number=number, repeat=3)) / number * 1e6 for _ in range(rounds)]
    return round(statistics.median(results), 1)


def _run_sync(coroutine: Coroutine[Any, Any, T]) -> T:
    """Drive a coroutine that never suspends (``TokenEndpoint.handle`` awaits nothing) without a loop."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        return cast(T, done.value)
    coroutine.close()
    raise RuntimeError("the coroutine suspended")


def _fixture() -> dict[str, Any]:
    td = TrustDomain.parse("bench.example")
    ca = DevCA.ephemeral(td)
    workload = SpiffeId(td, "/workload")
    svid = ca.issue_x509_svid(workload, ttl=3600)
    policy = parse_policy(
        f"rules:\n  - spiffe_id: {workload}\n    audiences: ['https://api.bench.example']\n"
        "    scopes: ['orders:read']\n    max_token_lifetime: 1800\n"
    )
    store = InMemoryPolicyStore(policy)
    issuer = AccessTokenIssuer(issuer=ISSUER, key_store=InMemoryKeyStore(SigningKey.generate()))
    jwt_bundles = {td: ca.jwt_bundle()}
    service = standard_endpoint(
        issuer=issuer,
        policy_store=store,
        x509_bundles=lambda: {td: ca.x509_bundle()},
        jwt_bundles=lambda: jwt_bundles,
        svid_memo=ValidatedSvidCache(),
    )
    jwt_svid = ca.mint_jwt_svid(workload, [ISSUER], ttl=900).token
    return {
        "td": td, "workload": workload, "svid": svid, "der": svid.leaf.public_bytes(serialization.Encoding.DER),
        "x509_bundles": {td: ca.x509_bundle()}, "jwt_bundles": jwt_bundles, "store": store, "issuer": issuer,
        "service": service, "jwt_svid": jwt_svid, "form": exchange_bodies(jwt_svid)["token_exchange"].decode(),
    }  # fmt: skip


def _access_line() -> Callable[[], None]:
    """The one INFO line a served exchange writes (the access log), with the CLI's text formatter."""
    handler = logging.FileHandler("/dev/null")
    handler.setFormatter(TextFormatter())
    access = logging.getLogger("bench.access")
    access.addHandler(handler)
    access.setLevel(logging.INFO)
    access.propagate = False
    fields = {"peer": "127.0.0.1", "method": "POST", "route": "/token", "status": 200, "duration_ms": 1.1,
              "request_id": "0123456789abcdef"}  # fmt: skip

    def write() -> None:
        access.info("%s %s %s %d %.1fms", "127.0.0.1", "POST", "/token", 200, 1.1, extra=fields)

    return write


def step_costs(rounds: int) -> dict[str, float]:
    f = _fixture()
    der, leaf = f["der"], x509.load_der_x509_certificate(f["der"])
    client = AuthenticatedClient(spiffe_id=f["workload"], leaf=leaf)
    form = parse_qs(f["form"], keep_blank_values=True)
    response = _run_sync(f["service"].handle(form, client))
    key = ec.generate_private_key(ec.SECP256R1())
    signature, data = key.sign(b"e" * 290, ECDSA_SHA256), b"e" * 290
    public = key.public_key()
    audience = "https://api.bench.example"
    steps: dict[str, Callable[[], object]] = {
        "peer_certificate_load": lambda: x509.load_der_x509_certificate(der),
        "client_certificate_check": lambda: verify_x509_svid([leaf], f["x509_bundles"]),
        "form_parse_qs_before": lambda: parse_qs(f["form"], keep_blank_values=True, max_num_fields=64),
        "form_parse": lambda: parse_form(f["form"], max_fields=64),
        "policy_authorize": lambda: f["store"].current().authorize(f["workload"], audience, frozenset({"orders:read"})),
        "jwt_svid_validate": lambda: validate_jwt_svid(f["jwt_svid"], audience=ISSUER, bundles=f["jwt_bundles"]),
        "access_token_issue": lambda: f["issuer"].issue(
            client=client, audience=audience, scopes=frozenset({"orders:read"}), max_lifetime=1800
        ),
        "exchange_handle_total": lambda: _run_sync(f["service"].handle(form, client)),
        "response_json_dumps_before": lambda: json.dumps(response.to_json()),
        "response_body": response.body,
        "access_log_line": _access_line(),
        "raw_es256_verify": lambda: public.verify(signature, data, ECDSA_SHA256),
        "raw_es256_sign": lambda: key.sign(b"t" * 520, ECDSA_SHA256),
    }
    return {name: _microseconds(step, rounds) for name, step in steps.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.breakdown")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    print(json.dumps(step_costs(args.rounds)), flush=True)


if __name__ == "__main__":
    main()
