"""The consumer side of SPIFFE, in go-spiffe's shape: one module or package per concept.

* :mod:`~broker.identity.spiffeid`: SPIFFE IDs and trust domains (SPIFFE ID §2);
* :mod:`~broker.identity.bundle`, :mod:`~broker.identity.svid`: trust bundles, X.509-SVIDs and JWT-SVIDs;
* :mod:`~broker.identity.x509svid`, :mod:`~broker.identity.jwtsvid`: their validation (X509-SVID §4-§5,
  JWT-SVID §3-§4);
* :mod:`~broker.identity.source`: one-method source Protocols; :mod:`~broker.identity.memory` and
  :mod:`~broker.identity.files`: the in-memory and file sources;
* :mod:`~broker.identity.workloadapi`: the asyncio Workload API client (the production source);
* :mod:`~broker.identity.spiffetls`: mTLS contexts, peer checks and the aiohttp connector;
* :mod:`~broker.identity.errors`: the identity errors.

Nothing here imports a layer above it; only ``spiffetls/connector.py`` imports aiohttp.
"""

__all__: list[str] = []
