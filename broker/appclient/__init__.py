"""The app's side: call an API with this workload's X.509-SVID and a token from the sidecar bound to it.

RFC 8705 §3: the API accepts the token only on a TLS connection whose client certificate is the one named in the
token's ``cnf.x5t#S256``. These clients get the SVID from the Workload API (``SPIFFE_ENDPOINT_SOCKET``), the token
from the sidecar's Unix socket, make sure the two match, and check the API's SPIFFE ID before sending anything:

* :class:`SyncAppClient` (stdlib ``http.client``; :meth:`~SyncAppClient.credentials` for your own HTTP client),
* :class:`AppClient` (asyncio, aiohttp).

With a sidecar run with ``token_binding = "dpop"`` the token is bound to the workload's SVID key instead (RFC 9449)
and the sidecar signs the DPoP proofs: :func:`dpop_request_headers` / :func:`dpop_request_headers_sync` give the
``Authorization: DPoP`` and ``DPoP`` headers for a request, :func:`fetch_dpop_proof` /
:func:`fetch_dpop_proof_sync` a proof alone (:mod:`broker.appclient.dpop`).

See docs/apps.md for the same thing in curl, Go and Node.js.
"""

from broker.appclient.aio import AppClient
from broker.appclient.common import AppResponse, BindingMismatchError, SidecarError, SidecarToken, token_binding
from broker.appclient.dpop import dpop_headers, dpop_request_headers, fetch_dpop_proof
from broker.appclient.sync import SyncAppClient, dpop_request_headers_sync, fetch_dpop_proof_sync, fetch_token_sync

__all__ = [
    "AppClient",
    "AppResponse",
    "BindingMismatchError",
    "SidecarError",
    "SidecarToken",
    "SyncAppClient",
    "dpop_headers",
    "dpop_request_headers",
    "dpop_request_headers_sync",
    "fetch_dpop_proof",
    "fetch_dpop_proof_sync",
    "fetch_token_sync",
    "token_binding",
]
