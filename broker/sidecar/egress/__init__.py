"""The sidecar's egress proxy: governed API-key exceptions injected into an app's outgoing requests (issue 12).

An app that must call a third-party API with a static key never holds the key. It sends its request, in plain
HTTP/1.1, to the sidecar's egress listener (``[egress] socket`` and/or ``port``), in one of two ways:

* as to a forward proxy (``HTTP_PROXY=http://127.0.0.1:<port>``, ``http://`` URLs): ``GET http://api.example.com/x``;
* to a local route: ``GET /<exception name>/x`` on the listener.

The sidecar finds the exception that covers the target (``GET /v1/apikeys``, the catalog), gets its secret from the
token service (``POST /v1/apikeys/{name}/grant``, held in memory until ``hold_until``), puts it in the exception's
header or query parameter, and sends the request to ``https://`` the target, the target's certificate verified.
Nothing else is reachable: a target no usable exception covers is 403, so this is never an open proxy. What was
injected, and what was refused, goes to the token service in aggregated reports (``POST /v1/apikeys/report``).

**Why CONNECT is refused (405 connect_not_supported).** ``https://`` URLs through a proxy use ``CONNECT``: the app
opens a TLS session with the target through a tunnel, and the proxy sees only ciphertext. Adding a header inside
would take TLS interception: the sidecar terminating the app's TLS with a certificate the app trusts for every
target host, i.e. a local CA able to impersonate any site to the app. The sidecar does not do that. Apps use
``http://`` URLs through the proxy instead (the app-to-sidecar hop never leaves the host; the sidecar adds TLS), or
local routes.

Modules, in the order a request meets them: :mod:`.proxy` (the handler and its rules), :mod:`.routing`,
:mod:`.placeholders`, :mod:`.catalog`, :mod:`.grants`, :mod:`.inject`, :mod:`.headers`, :mod:`.upstream`,
:mod:`.report`; :mod:`.client` talks to the token service; :mod:`.errors` draws every refusal;
:mod:`.service` starts it all (:func:`~broker.sidecar.service.start_sidecar` does, with ``egress=``).

**The secret** is in a :class:`~broker.apikeys.grant.Grant` (repr without it), in the request sent to the target,
and nowhere else: not on disk, not in a log line at any level, not in an error body or an exception's message, and
not in the response to the app (echoes are masked, :mod:`.inject`).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from broker.sidecar.egress.client import ApiKeyClient, ApiKeyLink
    from broker.sidecar.egress.proxy import EgressProxy
    from broker.sidecar.egress.service import EgressOptions, RunningEgress, build_proxy, start_egress

__all__ = ["ApiKeyClient", "ApiKeyLink", "EgressOptions", "EgressProxy", "RunningEgress", "build_proxy", "start_egress"]

# Loaded on first use (PEP 562): a sidecar without an egress listener never imports the proxy, nor broker.apikeys
# and broker.events under it (issue 14).
_HOMES = {"ApiKeyClient": "client", "ApiKeyLink": "client", "EgressProxy": "proxy", "EgressOptions": "service",
          "RunningEgress": "service", "build_proxy": "service", "start_egress": "service"}  # fmt: skip


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
