"""Conversion of Workload API messages (SPIFFE Workload API §5-§6) into the broker's identity types.

The X.509-SVID response carries DER chains (leaf first) and PKCS#8 keys; the JWT bundles response carries raw
JWKS keyed by trust domain ID (``spiffe://td``), parsed here so the ``use`` member is kept.
"""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from broker.identity.bundle import JwtBundle, X509Bundle, split_der_sequence
from broker.identity.errors import IdentityError, JwtSvidError
from broker.identity.jwtsvid import read_jwt_svid
from broker.identity.spiffeid import SpiffeId, TrustDomain
from broker.identity.svid import JwtSvid, X509Svid
from broker.identity.workloadapi.pb import workload_pb2

__all__ = ["X509Context", "jwt_bundles_from_response", "jwt_svid_from_token", "x509_context_from_response"]

_SPKI = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
X509Context = tuple[X509Svid, dict[TrustDomain, X509Bundle]]


def _uri_sans(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return san.get_values_for_type(x509.UniformResourceIdentifier)


def _x509_svid(message: workload_pb2.X509SVID) -> X509Svid:
    """DER chain (leaf first) and PKCS#8 key; the leaf must carry exactly the SVID's ID and match the key."""
    spiffe_id = SpiffeId.parse(message.spiffe_id)
    chain = tuple(x509.load_der_x509_certificate(der) for der in split_der_sequence(message.x509_svid))
    if not chain or _uri_sans(chain[0]) != [str(spiffe_id)]:
        raise IdentityError(f"the X.509-SVID for {spiffe_id} does not carry exactly that URI SAN")
    key = serialization.load_der_private_key(message.x509_svid_key, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey):
        raise IdentityError(f"the X.509-SVID key for {spiffe_id} is of an unsupported type")
    if key.public_key().public_bytes(*_SPKI) != chain[0].public_key().public_bytes(*_SPKI):
        raise IdentityError(f"the X.509-SVID key for {spiffe_id} does not match its certificate")
    return X509Svid(spiffe_id, chain, key)


def x509_context_from_response(response: workload_pb2.X509SVIDResponse) -> X509Context:
    """The default (first) X.509-SVID and the bundles: its own trust domain's, then the federated ones."""
    if not response.svids:
        raise IdentityError("the X509SVIDResponse holds no SVID")
    svid = _x509_svid(response.svids[0])
    own = svid.spiffe_id.trust_domain
    bundles = {own: X509Bundle.from_der(own, response.svids[0].bundle)}
    for key, der in response.federated_bundles.items():
        td = TrustDomain.parse(key)
        bundles.setdefault(td, X509Bundle.from_der(td, der))
    return svid, bundles


def jwt_bundles_from_response(response: workload_pb2.JWTBundlesResponse) -> dict[TrustDomain, JwtBundle]:
    """Keys are trust domain IDs (``spiffe://td``); values raw JWKS, parsed by us so that ``use`` is kept."""
    return {
        TrustDomain.parse(key): JwtBundle.from_jwks(TrustDomain.parse(key), jwks)
        for key, jwks in response.bundles.items()
    }


def jwt_svid_from_token(token: str, audience: str) -> JwtSvid:
    """Read ``sub``, ``aud`` and ``exp`` of a JWT-SVID without verifying it: it came from the local Workload API.

    The same strict parser as validation (:func:`broker.identity.jwtsvid.read_jwt_svid`: compact JWS, strict JSON
    of bounded depth, a SPIFFE ID ``sub``, finite NumericDates in range), so a malformed token is an
    :class:`IdentityError` and never a ``RecursionError``, ``OverflowError`` or ``UnicodeEncodeError``.
    """
    try:
        return read_jwt_svid(token, audience=audience)
    except JwtSvidError as exc:
        raise IdentityError(f"the Workload API returned an unusable JWT-SVID: {exc.description}") from None
