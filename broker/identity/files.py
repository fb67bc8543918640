"""An :class:`~broker.identity.source.SvidSource` read from files: the alternative to the Workload API.

For a token service whose certificate is provisioned as files (e.g. by cert-manager's csi-driver-spiffe):

* ``cert``: PEM chain, leaf first; the leaf must be an X509-SVID (its URI SAN names the service);
* ``key``: PEM private key matching the leaf;
* X.509 bundles: PEM roots per trust domain (the service's own trust domain, plus federated ones);
* JWT bundles: JWK Sets per trust domain (to validate JWT-SVIDs presented as subject tokens).

:meth:`FileSvidSource.refresh` re-reads the files when any of them changes and notifies subscribers; a broken
set of files is logged and the last good state kept. :meth:`watch` runs ``refresh`` periodically.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from broker._files import Watched
from broker.errors import ConfigError
from broker.identity.bundle import JwtBundle, JwtBundleSet, X509Bundle, X509BundleSet
from broker.identity.errors import IdentityError, SvidUnavailableError
from broker.identity.spiffeid import TrustDomain
from broker.identity.svid import JwtSvid, X509Svid
from broker.identity.x509svid import spiffe_id_from_certificate

__all__ = ["FileSvidSource", "SvidFiles"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class SvidFiles:
    """Where the files are; ``x509_bundles``/``jwt_bundles`` map a trust domain to a file."""

    cert: Path
    key: Path
    x509_bundles: Mapping[TrustDomain, Path]
    jwt_bundles: Mapping[TrustDomain, Path]

    def paths(self) -> list[Path]:
        return [self.cert, self.key, *self.x509_bundles.values(), *self.jwt_bundles.values()]


@dataclass(frozen=True)
class _State:
    svid: X509Svid
    x509_bundles: dict[TrustDomain, X509Bundle]
    jwt_bundles: dict[TrustDomain, JwtBundle]


class FileSvidSource:
    """X.509-SVID and bundles from files; it cannot mint JWT-SVIDs. The constructor raises :class:`ConfigError`."""

    def __init__(self, files: SvidFiles) -> None:
        self.files = files
        self._watched = Watched(files.paths(), lambda: _load(files))
        self._state = self._watched.reload()
        self._subscribers: list[Callable[[], None]] = []

    def x509_svid(self) -> X509Svid:
        return self._state.svid

    def x509_bundles(self) -> X509BundleSet:
        return self._state.x509_bundles

    def jwt_bundles(self) -> JwtBundleSet:
        return self._state.jwt_bundles

    async def fetch_jwt_svid(self, audience: str) -> JwtSvid:
        raise SvidUnavailableError("a file-based identity cannot mint JWT-SVIDs")

    def subscribe(self, callback: Callable[[], None]) -> Callable[[], None]:
        self._subscribers.append(callback)
        return lambda: self._subscribers.remove(callback) if callback in self._subscribers else None

    async def wait_ready(self, timeout: float) -> None:
        return None

    async def aclose(self) -> None:
        self._subscribers.clear()

    def refresh(self) -> bool:
        """Reload if any file changed; True (and subscribers notified) if a new state is in force."""
        try:
            if not self._watched.refresh():
                return False
        except ConfigError as exc:
            log.error("identity files not reloaded, keeping the previous ones: %s", exc.description)
            return False
        self._state = self._watched.value
        log.info("identity files reloaded: %s", self._state.svid.spiffe_id)
        for callback in list(self._subscribers):
            callback()
        return True

    async def watch(self, interval: float = 5.0) -> None:
        """Call :meth:`refresh` every ``interval`` seconds until cancelled."""
        while True:
            await asyncio.sleep(interval)
            self.refresh()


def _load(files: SvidFiles) -> _State:
    try:
        chain = tuple(_read_certs(files.cert))
        key = serialization.load_pem_private_key(_read(files.key), password=None)
        spiffe_id = spiffe_id_from_certificate(chain[0])
        x509_bundles = {td: X509Bundle.from_pem(td, _read(path)) for td, path in files.x509_bundles.items()}
        jwt_bundles = {td: JwtBundle.from_jwks(td, _read(path)) for td, path in files.jwt_bundles.items()}
    except (ValueError, TypeError, IdentityError) as exc:
        detail = exc.description if isinstance(exc, IdentityError) else type(exc).__name__
        raise ConfigError(f"identity files are not usable: {detail}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey):
        raise ConfigError(f"{files.key}: unsupported private key type")
    if key.public_key() != chain[0].public_key():
        raise ConfigError(f"{files.key}: private key does not match the certificate {files.cert}")
    if spiffe_id.trust_domain not in x509_bundles:
        raise ConfigError(f"no X.509 bundle for the certificate's own trust domain {spiffe_id.trust_domain}")
    svid = X509Svid(spiffe_id=spiffe_id, chain=chain, private_key=key)
    return _State(svid, x509_bundles, jwt_bundles)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror}") from None


def _read_certs(path: Path) -> list[x509.Certificate]:
    certs = x509.load_pem_x509_certificates(_read(path))
    if not certs:
        raise ConfigError(f"{path}: no certificate")
    return certs
