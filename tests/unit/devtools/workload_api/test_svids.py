"""Per-entry X.509-SVIDs, re-issued at half of their lifetime measured from issue (not the backdated notBefore)."""

from __future__ import annotations

import time

from broker.devtools.devca import DevCA
from broker.devtools.workload_api.entries import RegistrationEntry
from broker.devtools.workload_api.svids import SvidCache
from broker.testing import ManualClock

WEB = RegistrationEntry.of("spiffe://example.org/web", ["unix:uid:1"], x509_svid_ttl=100)
DB = RegistrationEntry.of("spiffe://example.org/db", ["unix:uid:2"], dns_names=["db.example.org"])


def test_svid_is_rotated_only_after_half_its_lifetime(ca: DevCA) -> None:
    clock = ManualClock(time.time())
    cache = SvidCache(ca, default_ttl=3600, clock=clock)
    cache.sync([WEB])
    first = cache.get(WEB)
    expires = first.not_after.timestamp()
    clock.now += (expires - clock.now) / 2 - 1
    assert not cache.rotate_due()
    assert cache.get(WEB) is first
    clock.now += 1
    assert cache.rotate_due()
    assert cache.get(WEB).leaf.serial_number != first.leaf.serial_number


def test_entry_ttl_and_dns_names_are_used_and_default_ttl_otherwise(ca: DevCA) -> None:
    cache = SvidCache(ca, default_ttl=3600)
    cache.sync([WEB, DB])
    now = time.time()
    assert 98 <= cache.get(WEB).not_after.timestamp() - now <= 100
    assert 3598 <= cache.get(DB).not_after.timestamp() - now <= 3600
    assert "db.example.org" in str(cache.get(DB).leaf.extensions)


def test_sync_issues_new_and_forgets_removed_entries(ca: DevCA) -> None:
    cache = SvidCache(ca, default_ttl=3600)
    assert cache.sync([WEB])
    assert not cache.sync([WEB])
    assert cache.sync([DB])
    next_rotation = cache.next_rotation()
    assert next_rotation is not None and next_rotation > time.time() + 1000


def test_next_rotation_is_none_without_entries(ca: DevCA) -> None:
    assert SvidCache(ca, default_ttl=60).next_rotation() is None
