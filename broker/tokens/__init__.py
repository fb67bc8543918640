"""Token logic without a web framework: policy, signing keys, RFC 9068 issuing, RFC 8693 exchange.

* :mod:`broker.tokens.policy`    who may get which audience and scopes, for how long (default deny; reloadable)
* :mod:`broker.tokens.keys`      ES256 signing keys (kid = RFC 7638 thumbprint), JWKS, file/in-memory stores
* :mod:`broker.tokens.issuer`    RFC 9068 access tokens bound to the client certificate (RFC 8705 ``cnf``)
* :mod:`broker.tokens.exchange`  the token endpoint's rules (RFC 6749 §3.2/§5.2, RFC 8693 §2, RFC 8705 §2)
"""
