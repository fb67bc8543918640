"""The admin API (``/admin/v1``): mTLS, open only to the admin SPIFFE IDs in config, every call audited.

* :mod:`~broker.admin.app`: :func:`~broker.admin.app.add_admin_routes` mounts it on the token service's app;
* :mod:`~broker.admin.gate`: authentication and the audit order (read its docstring before adding a route);
* :mod:`~broker.admin.routes`: an endpoint as data; one module per concern returns its routes
  (:mod:`~broker.admin.keys`, :mod:`~broker.admin.store_status`, :mod:`~broker.admin.audit_log`,
  :mod:`~broker.admin.quarantine`, :mod:`~broker.admin.clients`, :mod:`~broker.admin.clock_drift`);
* :mod:`~broker.admin.ports`: the Protocols the keyring, store and journal are adapted to, and their results;
* :mod:`~broker.admin.inputs`, :mod:`~broker.admin.wire`, :mod:`~broker.admin.errors`: strict input, the JSON
  documents, the error codes;
* :mod:`~broker.admin.client`: :class:`~broker.admin.client.AdminClient`, for the CLI.
"""

__all__: list[str] = []
