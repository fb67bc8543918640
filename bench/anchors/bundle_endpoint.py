"""A tiny HTTPS SPIFFE bundle endpoint (a thread in the harness) for Keycloak's ``spiffe`` identity provider.

It serves the broker dev CA's JWT authorities as a SPIFFE bundle in JWKS form (keys with ``use: jwt-svid``, plus
``spiffe_sequence``) at ``/bundle`` over TLS with the test CA's 127.0.0.1
certificate, which Keycloak trusts through ``truststore-paths``. Keycloak caches the keys, so it is asked once.

No ``spiffe_refresh_hint``: Keycloak 26.7.3 (read from its bytecode: ``SpiffeBundleEndpointLoader.loadKeys`` and
``InfinispanPublicKeyStorageProvider.isExpired``) passes the hint, which the SPIFFE bundle format defines in
seconds, as the key set's expiration time, which the key cache reads as epoch milliseconds. Any real hint is
therefore already past: every JWT-SVID check then tries to reload the keys, is throttled to one fetch per 10 s,
and logs a warning (seen in the first runs: hundreds of warnings and a bundle fetch every 10 s). Without a hint
the keys never expire and are reloaded only for an unknown ``kid``.
"""

from __future__ import annotations

import json
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self

from bench.anchors.tlsfiles import TestCa

__all__ = ["BundleEndpoint"]


class BundleEndpoint:
    """Start with the constructor, stop with :meth:`close` (or as a context manager)."""

    def __init__(self, jwks: bytes, ca: TestCa) -> None:
        document = json.loads(jwks)
        document["spiffe_sequence"] = 1
        body = json.dumps(document).encode()
        self.requests = 0
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                endpoint.requests += 1
                self.send_response(200 if self.path == "/bundle" else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                return

        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(ca.cert), str(ca.key))
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self._server.server_address[1]}/bundle"
        self._thread = threading.Thread(target=self._server.serve_forever, name="bundle-endpoint", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
