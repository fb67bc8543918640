"""Admin endpoints of the signing keyring (issue 9 item 3): list, rotate, emergency revoke.

``revoke`` is the path for a suspected key compromise: the keyring stops signing with the kid on every replica,
drops it from the JWKS and makes a fresh key active; the answer carries the blast radius from the issuance
ledger. An unknown kid is ``unknown_kid`` (404), an already revoked one ``kid_already_revoked`` (409); neither
changes anything. Both changes take an optional ``reason`` that goes into the audit journal.
"""

from __future__ import annotations

from typing import Any

from broker.admin.ports import KeyAdmin
from broker.admin.routes import AdminInput, AdminOutput, AdminRoute, describe_path, optional_reason
from broker.admin.wire import keys_document, revocation_document, rotation_document

__all__ = ["key_routes"]

_REASON = frozenset({"reason"})


def _describe_change(given: AdminInput) -> dict[str, Any]:
    detail = describe_path(given)
    reason = optional_reason(given)
    if reason is not None:
        detail["reason"] = reason
    return detail


def key_routes(keys: KeyAdmin) -> tuple[AdminRoute, ...]:
    async def list_keys(given: AdminInput) -> AdminOutput:
        infos = list(await keys.list_keys())
        return AdminOutput(keys_document(infos), {"keys": len(infos)})

    async def rotate(given: AdminInput) -> AdminOutput:
        rotation = await keys.rotate()
        return AdminOutput(
            rotation_document(rotation), {"active_kid": rotation.active_kid, "previous_kid": rotation.previous_kid}
        )

    async def revoke(given: AdminInput) -> AdminOutput:
        revocation = await keys.revoke(given.path["kid"])
        audit = {"active_kid": revocation.active_kid, "live_tokens": revocation.blast_radius.live_tokens}
        return AdminOutput(revocation_document(revocation), audit)

    return (
        AdminRoute("GET", "/keys", list_keys),
        AdminRoute("POST", "/keys/rotate", rotate, params=_REASON, describe=_describe_change),
        AdminRoute("POST", "/keys/{kid}/revoke", revoke, params=_REASON, describe=_describe_change),
    )
