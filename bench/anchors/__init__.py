"""``python -m bench.anchors``: Keycloak and the real SPIRE agent measured beside spiffe-broker (issue 14, item 4).

Not part of CI. See :mod:`bench.anchors.__main__` for the method and docs/benchmarks.md, "Anchors", for results.
"""
