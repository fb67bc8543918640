"""The admin API (``/admin/v1``): mTLS, open only to the admin SPIFFE IDs in config, every call audited."""
