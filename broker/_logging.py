"""Log lines as text or JSON, each carrying the request id of the request it belongs to.

* **Request id**: one value per request, in :data:`REQUEST_ID` (a context variable, so each aiohttp request task
  and each task it starts sees its own). The sidecar sends it to the token service as ``X-Request-Id``
  (:mod:`broker.web.request_id`), so one request can be followed across both processes' logs. A value a peer
  sends is kept only if it matches :data:`REQUEST_ID_PATTERN` (1-64 characters of ``[A-Za-z0-9._:-]``): a
  header is client input, and it must not be able to forge log structure or carry a token into the log.
* **Text** (the default): ``<time> <LEVEL> <logger>: <message>``, then `` request_id=<id>`` when there is one;
  an exception as its type and frames.
* **JSON lines** (``--log-format json``): one object per line with ``time`` (RFC 3339, UTC, milliseconds),
  ``level``, ``logger``, ``message``, ``request_id`` when there is one, the structured fields a call passed in
  ``extra`` (:data:`FIELDS`: the access log's ``method``, ``route``, ``status``, ``duration_ms``, ``peer``), and
  ``exc_type`` plus ``traceback`` (frames only) for an exception: never the exception's message, which may quote
  input (the rule of :mod:`broker.web.errors`).

Neither format adds anything a caller did not put in its message: what never reaches a log (tokens, keys,
secrets, request bytes) is each caller's rule, and ``tests/unit/test_log_hygiene.py`` greps a DEBUG run for them.
"""

from __future__ import annotations

import itertools
import json
import logging
import re
import secrets
import time
import traceback
from contextvars import ContextVar
from typing import Any, Literal

__all__ = [
    "FIELDS",
    "REQUEST_ID",
    "REQUEST_ID_HEADER",
    "REQUEST_ID_PATTERN",
    "JsonFormatter",
    "LogFormat",
    "RequestIdFilter",
    "TextFormatter",
    "adopt_request_id",
    "new_request_id",
    "skip_unprinted_record_fields",
]

LogFormat = Literal["text", "json"]
REQUEST_ID_HEADER = "X-Request-Id"
REQUEST_ID_PATTERN = re.compile(r"[A-Za-z0-9._:-]{1,64}")
REQUEST_ID: ContextVar[str | None] = ContextVar("spiffe_broker_request_id", default=None)
FIELDS = ("method", "route", "status", "duration_ms", "peer")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


_PROCESS_PREFIX = secrets.token_hex(4)
_SEQUENCE = itertools.count()


def new_request_id() -> str:
    """16 hex characters: this process's random prefix, then a sequence number. Unique enough to follow one
    request, says nothing about it, and costs no system call (the sidecar makes one for every cache hit)."""
    return f"{_PROCESS_PREFIX}{next(_SEQUENCE) & 0xFFFFFFFF:08x}"


def adopt_request_id(offered: str | None) -> str:
    """``offered`` (a peer's ``X-Request-Id``) if it is well formed, else a new id."""
    if offered is not None and REQUEST_ID_PATTERN.fullmatch(offered):
        return offered
    return new_request_id()


class RequestIdFilter(logging.Filter):
    """Puts the current request id on every record as ``request_id`` (None outside a request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = REQUEST_ID.get()
        return True


class TextFormatter(logging.Formatter):
    """The classic line, with `` request_id=<id>`` appended inside a request; an exception as its type and
    frames, never its message (which may quote input), as in JSON."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)
        self._second = -1
        self._prefix = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        """What :meth:`logging.Formatter.formatTime` writes (local time, ``,msec``), with the part up to the second
        (``localtime`` plus ``strftime``) formatted once per second."""
        if datefmt is not None:
            return super().formatTime(record, datefmt)
        second = int(record.created)
        if second != self._second:
            self._second, self._prefix = second, time.strftime(self.default_time_format, self.converter(second))
        msec_format = self.default_msec_format
        return msec_format % (self._prefix, record.msecs) if msec_format else self._prefix

    def formatException(self, ei: Any) -> str:
        kind, _, tb = ei
        name = kind.__name__ if kind is not None else "exception"
        return f"{name} (message not logged)\nTraceback (most recent call last):\n" + "".join(
            traceback.format_tb(tb)
        ).rstrip("\n")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        request_id = getattr(record, "request_id", None)
        return f"{line} request_id={request_id}" if request_id else line


class JsonFormatter(logging.Formatter):
    """One JSON object per record (see the module docstring for its members)."""

    def __init__(self) -> None:
        super().__init__()
        self._second = -1
        self._prefix = ""

    def _time(self, created: float) -> str:
        """RFC 3339 in UTC with milliseconds; the part up to the second is formatted once per second."""
        second = int(created)
        if second != self._second:
            self._second, self._prefix = second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._prefix}.{int((created - second) * 1000):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, object] = {
            "time": self._time(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None)
        if request_id:
            document["request_id"] = request_id
        for name in FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                document[name] = value
        if record.exc_info and record.exc_info[0] is not None:
            document["exc_type"] = record.exc_info[0].__name__
            document["traceback"] = "".join(traceback.format_tb(record.exc_info[2]))
        return json.dumps(document, ensure_ascii=False, default=str)


def formatter_for(log_format: LogFormat) -> logging.Formatter:
    return JsonFormatter() if log_format == "json" else TextFormatter()


def skip_unprinted_record_fields() -> None:
    """Stop :mod:`logging` from gathering what neither format prints: the caller's file and line (a stack walk
    per record), thread, process and multiprocessing names. Measured: about a fifth of a log line's cost."""
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    logging._srcfile = None  # the documented switch: findCaller() then returns placeholders
