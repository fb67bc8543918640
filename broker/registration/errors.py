"""Errors of registration as code (``workloads.yaml`` and the SPIRE Server entry API).

The hierarchy::

    BrokerError
    ├── ConfigError
    │   └── WorkloadsFileError     workloads.yaml is malformed: ``<file>:<line>: <field>: <reason>``
    └── RegistrationError          the SPIRE Server refused or failed a call, or an entry conflicts
"""

from __future__ import annotations

from broker.errors import BrokerError, ConfigError

__all__ = ["RegistrationError", "WorkloadsFileError"]


class WorkloadsFileError(ConfigError):
    """``workloads.yaml`` is invalid; the message names the file, the line and the field."""

    error = "invalid_workloads_file"


class RegistrationError(BrokerError):
    """The SPIRE Server API failed, refused an entry (naming it), or an entry is not ours to change."""

    error = "registration_error"
