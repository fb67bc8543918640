"""``spiffe-broker doctor``'s results: one outcome per check, the first failure with its fix, text and JSON.

A check passes (``ok``), fails (``FAIL``: what is broken, then what to do), or is skipped: because an earlier
check failed (the doctor names the first broken link only, since everything after it would fail for the same
reason), or because its input was not given (``--audience``). Nothing here ever holds a token, key or secret:
checks put SPIFFE IDs, key IDs, URLs and times into ``details``.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from broker.errors import BrokerError

__all__ = ["AFTER_FAILURE", "CheckFailed", "Outcome", "Report", "Status"]

AFTER_FAILURE = "because an earlier check failed"
Details = Mapping[str, Any]


class Status(enum.Enum):
    OK = "ok"
    FAIL = "FAIL"
    SKIPPED = "skipped"


class CheckFailed(BrokerError):
    """A check found its link broken: ``description`` says what is broken, ``fix`` what to do about it."""

    error = "doctor_check_failed"

    def __init__(self, description: str, fix: str, **details: Any) -> None:
        super().__init__(description)
        self.fix = fix
        self.details: Details = details


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one check found."""

    name: str
    status: Status
    message: str
    fix: str | None = None
    details: Details = field(default_factory=dict)

    @classmethod
    def passed(cls, name: str, message: str, **details: Any) -> Outcome:
        return cls(name, Status.OK, message, details=details)

    @classmethod
    def failed(cls, name: str, failure: CheckFailed) -> Outcome:
        return cls(name, Status.FAIL, failure.description, failure.fix, failure.details)

    @classmethod
    def skipped(cls, name: str, why: str = AFTER_FAILURE) -> Outcome:
        return cls(name, Status.SKIPPED, why)

    def line(self, number: int, width: int) -> str:
        head = f"{number} {self.name.ljust(width)}  "
        if self.status is Status.SKIPPED:
            return f"{head}skipped ({self.message})"
        if self.status is Status.FAIL:
            return f"{head}FAIL     {self.message}. Fix: {self.fix}"
        return f"{head}ok       {self.message}"

    def document(self, number: int) -> dict[str, Any]:
        return {
            "number": number,
            "name": self.name,
            "status": self.status.value.lower(),
            "message": self.message,
            "fix": self.fix,
            "details": dict(self.details),
        }


@dataclass(frozen=True, slots=True)
class Report:
    """Every check's outcome, in the order they ran."""

    outcomes: Sequence[Outcome]

    @property
    def first_failure(self) -> Outcome | None:
        return next((o for o in self.outcomes if o.status is Status.FAIL), None)

    @property
    def exit_code(self) -> int:
        """0 when nothing failed (a check skipped for want of ``--audience`` is not a failure), else 1."""
        return 1 if self.first_failure is not None else 0

    def lines(self) -> list[str]:
        width = max(len(o.name) for o in self.outcomes)
        return [o.line(n, width) for n, o in enumerate(self.outcomes, start=1)]

    def json(self) -> str:
        failed = self.first_failure
        document = {
            "ok": failed is None,
            "exit_code": self.exit_code,
            "first_failure": failed.name if failed is not None else None,
            "checks": [o.document(n) for n, o in enumerate(self.outcomes, start=1)],
        }
        return json.dumps(document, indent=2, sort_keys=True, default=str)
