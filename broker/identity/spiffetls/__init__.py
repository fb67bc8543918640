"""SPIFFE mTLS (SPIFFE X509-SVID §5), go-spiffe's ``spiffetls``: framework-free except the aiohttp connector.

* :mod:`~broker.identity.spiffetls.context`: ``ssl`` contexts kept current by an X.509 source, peer checks;
* :mod:`~broker.identity.spiffetls.connector`: the aiohttp connector that checks the server's SPIFFE ID before
  any request byte is sent (the only module here that imports aiohttp; import it by its own name).
"""

__all__: list[str] = []
