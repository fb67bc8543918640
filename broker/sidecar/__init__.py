"""The sidecar: the workload's access tokens for its apps, on a Unix socket, from a cache kept fresh.

``start_sidecar`` serves ``GET /v1/token?audience=A[&scope=S]`` (plus ``/healthz`` and ``/readyz``);
``TokenCache`` holds tokens per (audience, scope) with single-flight exchanges and refresh ahead of expiry;
``TokenServiceClient`` performs the RFC 8693 exchange with the token service over mTLS; ``fetch_token`` is the
app's side of the socket. See the modules for the rules and the RFC sections they come from.
"""

from broker.sidecar.cache import CachedToken, TokenCache
from broker.sidecar.client import SidecarError, SidecarToken, fetch_token
from broker.sidecar.exchanger import Exchanger, TokenResult, TokenServiceClient
from broker.sidecar.retry import RetryPolicy
from broker.sidecar.service import RunningSidecar, start_sidecar, token_service_matcher

__all__ = [
    "CachedToken",
    "Exchanger",
    "RetryPolicy",
    "RunningSidecar",
    "SidecarError",
    "SidecarToken",
    "TokenCache",
    "TokenResult",
    "TokenServiceClient",
    "fetch_token",
    "start_sidecar",
    "token_service_matcher",
]
