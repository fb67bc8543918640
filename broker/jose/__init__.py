"""The broker's JOSE core: framework-free, in joserfc's shape (a small facade over RFC-named internals).

* :mod:`broker.jose.jws`     compact JWS: one parser, a verified and an unverified (bookkeeping) way in
* :mod:`broker.jose.jwk`     JWK / JWK Set <-> ``cryptography`` keys
* :mod:`broker.jose.jwt`     JWT claim values (NumericDate)
* :mod:`broker.jose.x5t`     the ``x5t#S256`` certificate thumbprint (RFC 7515 §4.1.8, RFC 8705 §3.1)
* :mod:`broker.jose.errors`  the error tree
* ``_rfc7515`` compact serialization, strict JSON, base64url; ``_rfc7518`` algorithms; ``_rfc7519`` NumericDate;
  ``_rfc7638`` the JWK thumbprint.

Nothing here imports from the rest of the broker except :mod:`broker.errors`.
"""

from __future__ import annotations

from broker.jose._rfc7638 import thumbprint
from broker.jose.errors import JoseError

__all__ = ["JoseError", "thumbprint"]
