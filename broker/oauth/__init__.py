"""The OAuth vocabulary shared by the token service, the sidecar and the verifier; no web framework.

* :mod:`broker.oauth.constants`  grant, token type and client-auth method names (RFC 6749, RFC 8693, RFC 8705)
* :mod:`broker.oauth.grammar`    RFC 6749 §3.3 scope and §5.2 error character rules, audience characters
* :mod:`broker.oauth.metadata`   RFC 8414: the one issuer rule, the well-known URL, document validation
* :mod:`broker.oauth.form`       RFC 6749 §3.2 repeated parameters, RFC 8693 §2.1 / RFC 8707 target selection
* :mod:`broker.oauth.response`   the one error response (RFC 6749 §5.2 body, RFC 6750 §3 challenge, no-store)
* :mod:`broker.oauth.binding`    ``cnf`` (RFC 7800 §3.1): ``x5t#S256`` (RFC 8705 §3.1), ``jkt`` (RFC 9449 §6.1)
* :mod:`broker.oauth.replay`     the ``jti`` replay cache (RFC 7523 §3, RFC 9449 §11.1)
* :mod:`broker.oauth.dpop`       RFC 9449 DPoP proofs: create, check (§4.3), replay (§11.1)
* :mod:`broker.oauth.dpop_nonce` RFC 9449 §8, §9 server nonces without storage
"""

__all__: list[str] = []
