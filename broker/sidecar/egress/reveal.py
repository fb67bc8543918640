"""``GET /v1/apikeys/{name}`` on the sidecar's own socket or port: the secret of a ``reveal`` exception, for an app
that must hold the key itself (an SDK that signs requests with it, a protocol the egress proxy cannot carry).

``reveal`` is the weaker delivery (docs/exceptions.md): the token service accepts it only where ``[apikeys]
allow_reveal`` is set, every report marks it, and the sidecar hands the key out only for an exception whose catalog
entry says ``reveal``; an ``inject`` exception is refused with 403 (send its requests through the egress proxy).
The grant is the one the egress proxy holds (one cache, one hold time, dropped on withdrawal or quarantine alike),
and each answer counts as a use of the exception at its target's origin in the sidecar's report.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from broker.apikeys.errors import ExceptionNotFoundError
from broker.apikeys.model import Delivery
from broker.errors import AccessDeniedError
from broker.sidecar.egress.proxy import EgressProxy

__all__ = ["Revealed", "reveal_secret"]


@dataclass(frozen=True, slots=True)
class Revealed:
    """The answer's JSON body (``body``, never logged) and the seconds it may be kept (``expires_in``)."""

    body: bytes = field(repr=False)
    expires_in: int


async def reveal_secret(proxy: EgressProxy, name: str) -> Revealed:
    """The current grant of ``name`` if its delivery is ``reveal``; ExceptionNotFoundError, AccessDeniedError or an
    :class:`~broker.sidecar.egress.errors.EgressError` (not granted, token service unavailable) otherwise."""
    entry = proxy.catalog.by_name(name)
    if entry is None:  # added a moment ago, or no catalog yet: one fetch (rate-limited once there is a catalog)
        await (proxy.catalog.refresh_on_miss() if proxy.catalog.loaded else proxy.catalog.refresh())
        entry = proxy.catalog.by_name(name)
    if entry is None:
        raise ExceptionNotFoundError()
    if entry.delivery is not Delivery.REVEAL:
        raise AccessDeniedError(
            f"exception {name} is delivered by injection only: send its requests through the egress proxy"
        )
    grant = await proxy.grants.get(name)
    proxy.reporter.used(grant.name, grant.version, f"https://{grant.target.host}:{grant.target.port}")
    expires_in = int(proxy.grants.held_for(name))
    document = {
        "name": grant.name,
        "version": grant.version,
        "secret": grant.secret,
        grant.presentation.kind: {"name": grant.presentation.name, "value": grant.presentation.render(grant.secret)},
        "expires_in": expires_in,
    }
    return Revealed(json.dumps(document).encode(), expires_in)
