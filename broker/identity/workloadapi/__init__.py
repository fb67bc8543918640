"""The asyncio SPIFFE Workload API client (Workload API §5-§6, Workload Endpoint §4): go-spiffe's ``workloadapi``.

* :mod:`~broker.identity.workloadapi.source`: :class:`WorkloadApiSvidSource`, the two streams bridged into asyncio;
* :mod:`~broker.identity.workloadapi.messages`: Workload API messages -> the broker's identity types;
* :mod:`~broker.identity.workloadapi.pb`: py-spiffe's generated messages, loaded by file, and a grpcio stub.
"""

from broker.identity.workloadapi.source import WorkloadApiSvidSource, workload_api_address

__all__ = ["WorkloadApiSvidSource", "workload_api_address"]
