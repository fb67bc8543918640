"""Test doubles shared by the project's tests and by integrators testing code built on the broker.

- :class:`ManualClock`: a settable ``() -> float`` clock for every ``clock=`` parameter;
- :class:`FakeTokenService`: a stand-in for the sidecar's token service client (RFC 8693 exchanges, probes);
- :func:`forged_svid`, :func:`intermediate_ca`, :func:`svid_through_intermediates`, :func:`upstream_source`:
  X509-SVIDs (SPIFFE X509-SVID §4, §5) that are valid except, possibly, for which CA signed them, and chains as
  SPIRE issues them under an UpstreamAuthority;
- :func:`policy_yaml` and :data:`WEB_POLICY`: the broker policy file the tests share;
- :func:`short_dir`: a short private directory for Unix sockets.

Nothing under ``broker`` imports this package (an import-linter contract enforces it); it imports
``broker.devtools`` for the dev CA, so it sits at the top of the layers.
"""

from broker.testing.clock import ManualClock
from broker.testing.forged import forged_svid, intermediate_ca, svid_through_intermediates, upstream_source
from broker.testing.paths import short_dir
from broker.testing.policy import API, WEB_ID, WEB_POLICY, policy_yaml
from broker.testing.token_service import FakeTokenService

__all__ = [
    "API",
    "WEB_ID",
    "WEB_POLICY",
    "FakeTokenService",
    "ManualClock",
    "forged_svid",
    "intermediate_ca",
    "policy_yaml",
    "short_dir",
    "svid_through_intermediates",
    "upstream_source",
]
