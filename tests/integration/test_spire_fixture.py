"""The SPIRE fixture is real: py-spiffe gets an X509-SVID from the spire-agent for this process's uid."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator

import pytest
from cryptography import x509
from spiffe import X509Source
from spiffe.svid.x509_svid import X509Svid

from tests.integration.spire import TRUST_DOMAIN, SpireDeployment

pytestmark = pytest.mark.spire


@pytest.fixture
def uid_entry(spire: SpireDeployment) -> Iterator[str]:
    """An entry for ``unix:uid:<our uid>`` under a fresh SPIFFE ID; deleted afterwards."""
    spiffe_id = f"spiffe://{TRUST_DOMAIN}/test/fixture-{uuid.uuid4().hex[:8]}"
    entry_id = spire.create_entry(spiffe_id, [f"unix:uid:{os.getuid()}"], x509_ttl=600, jwt_ttl=300)
    try:
        spire.wait_for_entry(spiffe_id)
        yield spiffe_id
    finally:
        spire.delete_entry(entry_id)


def _picker(spiffe_id: str) -> Callable[[list[X509Svid]], X509Svid]:
    def pick(svids: list[X509Svid]) -> X509Svid:
        return next((s for s in svids if str(s.spiffe_id) == spiffe_id), svids[0])

    return pick


def test_x509_source_gets_svid_for_uid_entry_from_real_agent(
    spire: SpireDeployment, uid_entry: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SPIFFE_ENDPOINT_SOCKET", spire.workload_api_address)
    source = X509Source(timeout_in_seconds=30, svid_picker=_picker(uid_entry))
    try:
        svid = source.get_x509_context().default_svid
        assert str(svid.spiffe_id) == uid_entry
        sans = svid.leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert sans.get_values_for_type(x509.UniformResourceIdentifier) == [uid_entry]
        bundle = source.get_bundle_for_trust_domain(svid.spiffe_id.trust_domain)
        assert bundle is not None
        authority_subjects = {authority.subject for authority in bundle.x509_authorities}
        assert svid.cert_chain[-1].issuer in authority_subjects
    finally:
        source.close()


def test_restarted_agent_resumes_from_saved_svid_and_serves_entries(spire: SpireDeployment, uid_entry: str) -> None:
    spire.stop_agent()
    assert spire.fetched_spiffe_ids() == set()
    spire.start_agent()
    spire.wait_for_entry(uid_entry)


def test_entry_for_another_uid_is_not_served_to_this_process(spire: SpireDeployment) -> None:
    spiffe_id = f"spiffe://{TRUST_DOMAIN}/test/other-uid-{uuid.uuid4().hex[:8]}"
    entry_id = spire.create_entry(spiffe_id, [f"unix:uid:{os.getuid() + 4242}"])
    try:
        marker = f"spiffe://{TRUST_DOMAIN}/test/marker-{uuid.uuid4().hex[:8]}"
        marker_id = spire.create_entry(marker, [f"unix:uid:{os.getuid()}"])
        try:
            spire.wait_for_entry(marker)  # both entries were synced by now (same server cache reload)
            assert spiffe_id not in spire.fetched_spiffe_ids()
        finally:
            spire.delete_entry(marker_id)
    finally:
        spire.delete_entry(entry_id)
