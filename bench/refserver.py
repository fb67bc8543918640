"""Bare aiohttp references (each in its own process), run until SIGTERM/SIGINT.

``python -m bench.refserver token --socket PATH --body-file FILE``: the reference of benchmark (a). ``GET
/v1/token`` returns fixed bytes (the sidecar's own response, captured by the harness) with the sidecar's headers
(``Content-Type: application/json``, ``Cache-Control: no-store``, ``Pragma: no-cache``); no query parsing, no
cache lookup; no access log, like the sidecar.

``python -m bench.refserver exchange --port N --cert C --key K --ca CA``: a diagnostic floor for benchmark (b).
``POST /token`` over TLS with client certificates requested (as the token service does) reads the body, does one
ES256 verify and one ES256 sign with ``cryptography`` (the bare crypto of an exchange) and returns a JSON body of
the token service's size: what any aiohttp token service on this machine costs before its own logic.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

__all__ = ["build_exchange_app", "build_token_app", "main"]

HEADERS = {"Content-Type": "application/json", "Cache-Control": "no-store", "Pragma": "no-cache"}
ECDSA_SHA256 = ec.ECDSA(hashes.SHA256())


def build_token_app(body: bytes) -> web.Application:
    async def token(request: web.Request) -> web.Response:
        return web.Response(body=body, headers=HEADERS)

    app = web.Application()
    app.router.add_get("/v1/token", token)
    return app


def build_exchange_app() -> web.Application:
    svid_key = ec.generate_private_key(ec.SECP256R1())
    token_key = ec.generate_private_key(ec.SECP256R1())
    svid_input = b"e" * 290
    svid_signature = svid_key.sign(svid_input, ECDSA_SHA256)
    public = svid_key.public_key()
    token_input = b"t" * 520

    async def token(request: web.Request) -> web.Response:
        await request.read()
        public.verify(svid_signature, svid_input, ECDSA_SHA256)
        signature = token_key.sign(token_input, ECDSA_SHA256)
        document = {"access_token": "x" * 620 + signature.hex()[:20], "token_type": "Bearer", "expires_in": 1800}
        return web.Response(body=json.dumps(document).encode(), headers=HEADERS)

    app = web.Application()
    app.router.add_post("/token", token)
    return app


def _server_tls(cert: Path, key: Path, ca: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.verify_mode = ssl.CERT_OPTIONAL
    context.load_verify_locations(cafile=str(ca))
    context.load_cert_chain(certfile=str(cert), keyfile=str(key))
    return context


async def _serve(app: web.Application, start: Callable[[web.AppRunner], Awaitable[None]]) -> None:
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    await start(runner)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.refserver")
    commands = parser.add_subparsers(dest="command", required=True)
    token = commands.add_parser("token")
    token.add_argument("--socket", type=Path, required=True)
    token.add_argument("--body-file", type=Path, required=True)
    exchange = commands.add_parser("exchange")
    exchange.add_argument("--port", type=int, required=True)
    for name in ("--cert", "--key", "--ca"):
        exchange.add_argument(name, type=Path, required=True)
    args = parser.parse_args(argv)
    if args.command == "token":
        socket_path: Path = args.socket

        async def start_unix(runner: web.AppRunner) -> None:
            await web.UnixSite(runner, str(socket_path)).start()

        asyncio.run(_serve(build_token_app(args.body_file.read_bytes()), start_unix))
        socket_path.unlink(missing_ok=True)
    else:
        context = _server_tls(args.cert, args.key, args.ca)

        async def start_tls(runner: web.AppRunner) -> None:
            await web.TCPSite(runner, "127.0.0.1", args.port, ssl_context=context).start()

        asyncio.run(_serve(build_exchange_app(), start_tls))


if __name__ == "__main__":
    main()
