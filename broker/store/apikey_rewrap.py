"""KEK rotation for API-key secrets: every stored version re-wrapped under the primary KEK, the secrets unchanged.

The counterpart of the signing keys' :func:`broker.tokens.keyring.rotate_kek`, run by the same ``keys
rotate-kek``. Each version's data key is unwrapped with the KEK it names and wrapped again by the primary one
(:meth:`~broker._sealing.KekRing.rewrap`, NIST SP 800-38D AES-256-GCM; the associated data is
:func:`~broker.apikeys.model.secret_aad` ``(name, version)``, so a blob moved to another row does not open).

All or nothing where it matters: every version is re-wrapped in memory first, so a version that does not open
(its KEK is not configured, or the blob or its row changed) is :class:`~broker.errors.SealingError` naming the
exception and the version, and nothing is written. Then each is stored by
:meth:`~broker.apikeys.store.ApiKeyStore.rewrap`, a compare-and-set on the old ``kek_id``: a version another
process re-wrapped meanwhile is left as it is. Idempotent: run it again and it re-wraps nothing. No secret
reaches a log or a message.
"""

from __future__ import annotations

import logging

from broker._sealing import KekRing
from broker.apikeys.model import SealedVersion, secret_aad
from broker.apikeys.store import ApiKeyStore
from broker.errors import SealingError

__all__ = ["rewrap_apikey_versions"]

log = logging.getLogger(__name__)


def _rewrapped(version: SealedVersion, kek_ring: KekRing) -> tuple[bytes, str]:
    try:
        return kek_ring.rewrap(version.sealed, secret_aad(version.name, version.version), version.kek_id)
    except SealingError as exc:
        raise SealingError(
            f"API-key exception {version.name!r} version {version.version}: {exc.description}; for rotate-kek give "
            "the new KEK as --kek-file and each old one as --previous-kek-file; nothing was changed"
        ) from None


async def rewrap_apikey_versions(store: ApiKeyStore, kek_ring: KekRing) -> int:
    """Re-wrap every API-key secret version not under the primary KEK; how many this call re-wrapped."""
    primary = kek_ring.primary.kek_id
    older = [v for v in await store.all_versions() if v.kek_id != primary]
    prepared = [(version, _rewrapped(version, kek_ring)) for version in older]  # every one opens, or none is written
    done = 0
    for version, (sealed, kek_id) in prepared:
        if await store.rewrap(version.name, version.version, version.kek_id, sealed, kek_id):
            done += 1
    if done:
        log.info("apikeys: re-wrapped %d secret versions under KEK %s", done, primary)
    return done
