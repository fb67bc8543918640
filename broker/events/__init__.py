"""Change events between replicas: a small publish/subscribe seam that the store implements (issue 9).

Use::

    subscription = store.changes.subscribe(KEYRING)
    async for change in subscription:      # the first change is a resync: read everything
        await reload_keyring()             # a later one: the keyring changed (re-read; resync or not)
    ...
    subscription.close()

Events carry counter versions, not state: see :mod:`broker.events.change` for why that makes a lost or coalesced
event harmless, and :mod:`broker.events.hub` for the per-subscriber cost.
"""

from __future__ import annotations

from broker.events.change import Change, ChangeFeed, check_topic
from broker.events.hub import ChangeHub, FollowedFeed, Subscription
from broker.events.topics import KEYRING

__all__ = ["KEYRING", "Change", "ChangeFeed", "ChangeHub", "FollowedFeed", "Subscription", "check_topic"]
