"""The token service (``spiffe-broker server``): aiohttp over TLS with the broker's own X.509-SVID.

* :mod:`broker.server.app`          application factories (TLS token app, plain health app), issuer rules
* :mod:`broker.server.handlers`     metadata (RFC 8414), JWKS, ``POST /token``, probes
* :mod:`broker.server.request`      client authentication from the TLS connection; bounded form parsing
* :mod:`broker.server.service`      :func:`start_token_service` for the CLI and ``spiffe-broker dev``
* :mod:`broker.server.feed`         ``GET /v1/revocations``, the revocation feed (SSE); its fan-out in
  :mod:`broker.server.feed_fanout`
* :mod:`broker.server.revocations`  the replica's view of the revocation log; the ``/token`` quarantine hook
* :mod:`broker.server.issued`       verifying a token presented back to its issuer (``/revoke``, ``/introspect``)
* :mod:`broker.server.token_status` ``POST /revoke`` (RFC 7009) and ``POST /introspect`` (RFC 7662)
* :mod:`broker.server.apikeys`      ``/v1/apikeys``: the sidecars' catalog, grants and egress reports (issue 12)

Threats considered (STRIDE, short): *spoofing* a client: mTLS X.509-SVID checked against its own trust
domain's bundle, JWT-SVIDs only with the matching certificate; *tampering*: tokens signed ES256, bound to the
client certificate (``cnf``); *repudiation*: one log line per issued token (``jti``, SPIFFE ID, audience);
*information disclosure*: no token, JWT-SVID or key in logs, errors or reprs; the access log names routes, not
request bytes; a malformed request's bytes are never echoed or logged (:mod:`broker.web`); *denial of service*:
bounded body and field count, no request decompression, a deadline on each request's headers and body and on the
TLS handshake (:mod:`broker.web`), the policy file parsed with bounded size and depth in a background thread,
never on a request, policy checks before signature checks; *elevation*: default deny policy, one target per
token, scopes a subset of the rule's.
"""
