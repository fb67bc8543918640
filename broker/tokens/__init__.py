"""Token logic without a web framework: the token endpoint, its client authentication and grants, policy,
signing keys and RFC 9068 issuing (the RFC 8705 ``cnf`` binding it writes is :mod:`broker.oauth.binding`).

* :mod:`broker.tokens.policy`    who may get which audience and scopes, for how long (default deny; reloadable)
* :mod:`broker.tokens.keys`      ES256 signing keys (kid = RFC 7638 thumbprint), JWKS, file/in-memory stores
* :mod:`broker.tokens.issuer`    RFC 9068 access tokens bound to the client certificate (RFC 8705 ``cnf``)
* :mod:`broker.tokens.endpoint`  the token endpoint (RFC 6749 §3.2/§5.2): client-auth and grant registries
* :mod:`broker.tokens.client_auth`  client authentication: ``tls_client_auth`` (RFC 8705 §2.1)
* :mod:`broker.tokens.grants`    RFC 8693 token exchange, RFC 6749 §4.4 ``client_credentials``
* :mod:`broker.tokens.svid_cache`  the memo of validated JWT-SVIDs, injected into the token exchange grant
"""
