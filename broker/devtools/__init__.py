"""Development tools: the dev CA, the embedded dev Workload API server and the ``spiffe-broker dev`` stack.

Nothing on a production path imports this package; only ``broker.cli`` and the tests do (an import-linter
contract enforces it).
"""

__all__: list[str] = []
