"""DPoP with the workload's own key (RFC 9449; spiffe/spiffe#260): proofs signed by the X.509-SVID's private key.

With ``token_binding = "dpop"`` the sidecar still authenticates to the token service with its X.509-SVID (mTLS,
RFC 8705 §2), and adds a ``DPoP`` proof made with the same SVID's key; the token comes back bound to that key
(``cnf.jkt``, RFC 9449 §6.1) instead of to the certificate. The app then asks the sidecar for a proof per request
(``POST /v1/dpop-proof``, :mod:`broker.sidecar.proofs`), so it calls a DPoP-protected API without ever holding a
private key.

* The key is whatever the Workload API handed out last: a rotation (SPIRE issues a new key with every SVID)
  changes the thumbprint (:func:`current_jkt`), and tokens bound to the old key are dropped
  (:mod:`broker.sidecar.cache`).
* The algorithm follows the key (RFC 7518 §3.1): ES256/ES384/ES512 for EC P-256/P-384/P-521; for RSA, PS256
  unless the server advertises only others (``dpop_signing_alg_values_supported``, RFC 9449 §5.1), then the
  first of PS256, RS256, PS384, RS384, PS512, RS512 it accepts (:func:`choose_algorithm`).
* Server nonces (RFC 9449 §8): :class:`NonceMemory` keeps the latest ``DPoP-Nonce`` a server sent.

Nothing here logs a proof, a token or key material.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric import ec, rsa

from broker.identity.errors import SvidUnavailableError
from broker.identity.source import X509Source
from broker.identity.svid import X509Svid
from broker.oauth.binding import Jkt
from broker.oauth.dpop import access_token_hash, create_proof
from broker.sidecar.errors import DpopKeyError

__all__ = ["NONCE", "NonceMemory", "SignedProof", "SvidProofSigner", "choose_algorithm", "current_jkt"]

_EC_ALGORITHMS = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}
_RSA_PREFERENCE = ("PS256", "RS256", "PS384", "RS384", "PS512", "RS512")
NONCE = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]{1,512}")  # RFC 9449 §8.1: nonce = 1*NQCHAR (bounded here)

SigningKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


def _signing_key(svid: X509Svid) -> SigningKey:
    key = svid.private_key
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name in _EC_ALGORITHMS:
        return key
    if isinstance(key, rsa.RSAPrivateKey):
        return key
    raise DpopKeyError("the X.509-SVID key cannot sign DPoP proofs (EC P-256/P-384/P-521 or RSA are needed)")


def choose_algorithm(key: SigningKey, advertised: Collection[str] | None = None) -> str:
    """The JWS ``alg`` for proofs made with ``key`` (RFC 7518 §3.1), among ``advertised`` when the server says.

    Raises :class:`DpopKeyError` when the server accepts none of the algorithms the key can sign with."""
    if isinstance(key, ec.EllipticCurvePrivateKey):
        candidates: tuple[str, ...] = (_EC_ALGORITHMS[key.curve.name],)
    else:
        candidates = _RSA_PREFERENCE
    if advertised is None:
        return candidates[0]
    for alg in candidates:
        if alg in advertised:
            return alg
    raise DpopKeyError(
        f"the token service accepts no DPoP algorithm the X.509-SVID key can sign with ({', '.join(candidates)})"
    )


def current_jkt(source: X509Source) -> str | None:
    """RFC 7638 thumbprint of the current X.509-SVID's public key (the ``cnf.jkt`` it binds); None without an SVID
    or for a key that cannot sign proofs."""
    try:
        return Jkt.of_public_key(_signing_key(source.x509_svid()).public_key()).value
    except (SvidUnavailableError, DpopKeyError):
        return None


@dataclass(frozen=True, slots=True)
class SignedProof:
    """A proof and the thumbprint of the key that signed it (what a token obtained with it is bound to)."""

    proof: str = field(repr=False)
    jkt: str


class SvidProofSigner:
    """Makes DPoP proofs (RFC 9449 §4.2) with the private key of ``source``'s current X.509-SVID."""

    def __init__(self, source: X509Source, *, clock: Callable[[], float] = time.time) -> None:
        self._source = source
        self._clock = clock
        self._memo: tuple[X509Svid, SigningKey, str] | None = None  # the SVID last seen, its key and thumbprint

    def jkt(self) -> str:
        """The thumbprint of the current SVID key; :class:`SvidUnavailableError` without an SVID,
        :class:`DpopKeyError` for a key that cannot sign proofs."""
        return self._current()[1]

    def sign(
        self,
        *,
        htm: str,
        htu: str,
        access_token: str | None = None,
        nonce: str | None = None,
        advertised: Collection[str] | None = None,
    ) -> SignedProof:
        """A proof for ``htm htu`` (give ``htu`` without query and fragment, §4.2); ``ath`` for ``access_token``
        (§4.2, §7), ``nonce`` when the server asked for one (§8, §9). ``iat`` is this signer's clock."""
        key, jkt = self._current()
        ath = access_token_hash(access_token) if access_token is not None else None
        proof = create_proof(
            key,
            htm=htm,
            htu=htu,
            ath=ath,
            nonce=nonce,
            iat=int(self._clock()),
            alg=choose_algorithm(key, advertised),
        )
        return SignedProof(proof, jkt)

    def _current(self) -> tuple[SigningKey, str]:
        svid = self._source.x509_svid()
        memo = self._memo
        if memo is None or memo[0] is not svid:
            key = _signing_key(svid)
            memo = self._memo = (svid, key, Jkt.of_public_key(key.public_key()).value)
        return memo[1], memo[2]


class NonceMemory:
    """The latest server nonce (RFC 9449 §8): every response's ``DPoP-Nonce`` header replaces it.

    A value that is not RFC 9449 §8.1 ``1*NQCHAR`` (or is longer than 512 characters) is ignored."""

    def __init__(self) -> None:
        self.value: str | None = None

    def remember(self, header: str | None) -> bool:
        """Keep ``header`` if it is a valid nonce; True when it is a new value."""
        if header is None or not NONCE.fullmatch(header) or header == self.value:
            return False
        self.value = header
        return True
