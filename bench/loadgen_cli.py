"""The load generator's command line: ``python -m bench.loadgen ...`` (see :mod:`bench.loadgen` for the modes)."""

from __future__ import annotations

import argparse
import asyncio
import json
import ssl
from pathlib import Path

from bench import loadgen
from bench.assertion_signer import AssertionSigner
from bench.loadgen import LoadSpec, run_load

__all__ = ["client_tls_context", "main"]


def client_tls_context(ca: Path, cert: Path | None, key: Path | None) -> ssl.SSLContext:
    """mTLS client context: our certificate (none if ``cert`` is None), the server verified against ``ca`` (no host
    name check)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = False
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(cafile=str(ca))
    if cert is not None:
        context.load_cert_chain(certfile=str(cert), keyfile=str(key) if key is not None else None)
    return context


def _parser() -> argparse.ArgumentParser:
    summary = (loadgen.__doc__ or "").splitlines()[0]
    parser = argparse.ArgumentParser(prog="python -m bench.loadgen", description=summary)
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--unix", help="Unix socket path")
    where.add_argument("--tcp", help="HOST:PORT")
    parser.add_argument("--tls-ca", type=Path)
    parser.add_argument("--tls-cert", type=Path)
    parser.add_argument("--tls-key", type=Path)
    parser.add_argument("--method", default="GET", choices=["GET", "POST"])
    parser.add_argument("--path", default="/")
    parser.add_argument("--body-file", type=Path, help="request body (POST)")
    parser.add_argument("--content-type")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--duration", type=float, default=2.0, help="measured seconds (unless --requests)")
    parser.add_argument("--requests", type=int, help="measure exactly this many requests instead")
    parser.add_argument("--warmup", type=float, default=0.5, help="seconds of unmeasured requests first")
    parser.add_argument("--client", choices=["raw", "aiohttp"], default="raw")
    parser.add_argument("--assertion-key", type=Path, help="P-256 private key (PEM): a fresh assertion per request")
    parser.add_argument("--assertion-kid", help="the assertions' kid (the registered JWK's)")
    parser.add_argument("--client-id", help="the assertions' iss and sub")
    parser.add_argument("--audience-claim", help="the assertions' aud: the token service's issuer identifier")
    parser.add_argument("--new-connection", action="store_true", help="a new TCP+TLS connection per request")
    parser.add_argument("--resume", action="store_true", help="with --new-connection: offer the last TLS session")
    parser.add_argument("--grpc-jwt-audience", help="Workload API FetchJWTSVID over --unix for this audience")
    return parser


def _parse_args(argv: list[str] | None) -> LoadSpec:
    parser = _parser()
    args = parser.parse_args(argv)
    assertions = None
    if args.assertion_key is not None:
        if not (args.assertion_kid and args.client_id and args.audience_claim):
            parser.error("--assertion-key needs --assertion-kid, --client-id and --audience-claim")
        assertions = AssertionSigner.from_pem(
            args.assertion_key.read_bytes(), kid=args.assertion_kid, client_id=args.client_id,
            audience=args.audience_claim,
        )  # fmt: skip
    tcp = None
    if args.tcp:
        host, _, port = args.tcp.rpartition(":")
        tcp = (host, int(port))
    context = None
    if args.tls_ca is not None:
        context = client_tls_context(args.tls_ca, args.tls_cert, args.tls_key)
    return LoadSpec(
        unix=args.unix,
        tcp=tcp,
        ssl_context=context,
        method=args.method,
        path=args.path,
        body=args.body_file.read_bytes() if args.body_file else b"",
        content_type=args.content_type,
        concurrency=args.concurrency,
        duration=args.duration,
        requests=args.requests,
        warmup=args.warmup,
        client=args.client,
        assertions=assertions,
        new_connection=args.new_connection,
        resume=args.resume,
        grpc_audience=args.grpc_jwt_audience,
    )


def main(argv: list[str] | None = None) -> None:
    spec = _parse_args(argv)
    print(json.dumps(asyncio.run(run_load(spec))), flush=True)
