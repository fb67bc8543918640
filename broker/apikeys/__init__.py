"""Governed API-key exceptions (issue 12; docs/exceptions.md): framework-free, below the store and the web layers.

* :mod:`broker.apikeys.model`     the record, its status at a time, the secret's rules and associated data
* :mod:`broker.apikeys.store`     what the registry needs from a store (:class:`~broker.apikeys.store.ApiKeyStore`)
* :mod:`broker.apikeys.rules`     ``[apikeys]``'s governance rules, checked on every add and change
* :mod:`broker.apikeys.sealing`   sealing a version at rest and opening it for a grant or a reveal
* :mod:`broker.apikeys.registry`  the admin's changes: checked, stored, withdrawn, audited
* :mod:`broker.apikeys.decision`  the sidecar's grant and catalog: every check, every outcome audited
* :mod:`broker.apikeys.usage`     the sidecars' egress reports: uses aggregated, refusals audited
* :mod:`broker.apikeys.report`    the governance report and ``--fail-on``
* :mod:`broker.apikeys.grant`     the sidecar's wire form (catalog, grant, report)
* :mod:`broker.apikeys.errors`    every refusal, with its wire code
"""

__all__: list[str] = []
