"""The sidecar: the workload's access tokens for its apps, on a Unix socket, from a cache kept fresh.

``start_sidecar`` serves ``GET /v1/token?audience=A[&scope=S]`` (plus ``/v1/status``, ``/healthz`` and ``/readyz``,
and with ``token_binding="dpop"`` ``POST /v1/dpop-proof``);
``TokenCache`` holds tokens per (audience, scope) with single-flight exchanges and refresh ahead of expiry;
``TokenServiceClient`` performs the RFC 8693 exchange with the token service over mTLS (the app's side of the
socket is :mod:`broker.appclient.sidecar`);
``SvidProofSigner`` makes DPoP proofs (RFC 9449) with the X.509-SVID's own key, for the exchange and for the apps;
``TokenFileKeeper`` keeps configured tokens in files; ``TokenServiceHealth`` tracks the token service's
reachability. See the modules for the rules and the RFC sections they come from.
"""

from broker.sidecar.cache import CachedToken, TokenCache
from broker.sidecar.dpop import SvidProofSigner
from broker.sidecar.exchanger import TokenServiceClient
from broker.sidecar.health import TokenServiceHealth
from broker.sidecar.retry import RetryPolicy
from broker.sidecar.service import RunningSidecar, start_sidecar, token_service_matcher
from broker.sidecar.token_files import TokenFile, TokenFileKeeper
from broker.sidecar.token_result import Exchanger, TokenResult

__all__ = [
    "CachedToken",
    "Exchanger",
    "RetryPolicy",
    "RunningSidecar",
    "SvidProofSigner",
    "TokenCache",
    "TokenFile",
    "TokenFileKeeper",
    "TokenResult",
    "TokenServiceClient",
    "TokenServiceHealth",
    "start_sidecar",
    "token_service_matcher",
]
