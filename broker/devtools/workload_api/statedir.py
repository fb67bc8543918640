"""The dev Workload API's state directory: the CA keys and the registration entries, private to their owner.

Layout: ``ca.key``, ``ca.pem``, ``jwt.key`` (written by :meth:`DevCA.load_or_create`) and ``entries.yaml``, all
mode 0600, in a directory of mode 0700. A restart with the same directory keeps the same trust anchors, so
workloads and relying parties configured with the bundle keep working.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from broker.devtools.devca import DevCA
from broker.devtools.workload_api.entries import FileEntryStore
from broker.identity.errors import IdentityError
from broker.identity.spiffeid import TrustDomain

__all__ = ["ENTRIES_FILE", "StateDirError", "open_dev_state", "prepare_state_dir"]

log = logging.getLogger(__name__)

ENTRIES_FILE = "entries.yaml"


class StateDirError(IdentityError):
    """The state directory cannot be made private to this user."""

    reason = "state_dir_error"


def prepare_state_dir(path: Path) -> Path:
    """Create ``path`` with mode 0700, or tighten an existing directory we own to 0700."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    st = path.stat()
    if not stat.S_ISDIR(st.st_mode):
        raise StateDirError(f"{path} is not a directory")
    if stat.S_IMODE(st.st_mode) & 0o077:
        if st.st_uid != os.geteuid():
            raise StateDirError(f"{path} is accessible by other users and not owned by us")
        os.chmod(path, 0o700)
        log.info("state directory %s: permissions tightened to 0700", path)
    return path


def open_dev_state(
    state_dir: Path, trust_domain: TrustDomain | str, *, entries_path: Path | None = None
) -> tuple[DevCA, FileEntryStore]:
    """The persisted dev CA and the entry store (``<state_dir>/entries.yaml`` unless ``entries_path``)."""
    prepare_state_dir(state_dir)
    ca = DevCA.load_or_create(state_dir, trust_domain)
    return ca, FileEntryStore(entries_path if entries_path is not None else state_dir / ENTRIES_FILE)
