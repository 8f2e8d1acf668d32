"""Structured JSON logs that Cloud Logging understands.

Each record is one line of JSON on stdout with `severity`, `message` and, inside
a request, `logging.googleapis.com/trace` so log lines group under their
request in the console. Extra fields passed as `extra={"fields": {...}}` are
added to the JSON payload.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
from typing import Any

_trace: contextvars.ContextVar[str | None] = contextvars.ContextVar("trace", default=None)

_SEVERITY = {
    logging.DEBUG: "DEBUG",
    logging.INFO: "INFO",
    logging.WARNING: "WARNING",
    logging.ERROR: "ERROR",
    logging.CRITICAL: "CRITICAL",
}


def trace_from_headers(headers: Any, project_id: str) -> str | None:
    """The Cloud Trace resource name from `traceparent` or `X-Cloud-Trace-Context`."""
    trace_id = None
    parent = headers.get("traceparent")
    if parent:
        parts = parent.split("-")
        if len(parts) >= 2 and len(parts[1]) == 32:
            trace_id = parts[1]
    if trace_id is None:
        legacy = headers.get("X-Cloud-Trace-Context")
        if legacy:
            trace_id = legacy.split("/")[0] or None
    if not trace_id or not all(c in "0123456789abcdefABCDEF" for c in trace_id):
        return None
    return f"projects/{project_id}/traces/{trace_id}"


def set_trace(trace: str | None) -> contextvars.Token[str | None]:
    return _trace.set(trace)


def reset_trace(token: contextvars.Token[str | None]) -> None:
    _trace.reset(token)


class CloudLoggingFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "severity": _SEVERITY.get(record.levelno, "DEFAULT"),
            "message": record.getMessage(),
            "logger": record.name,
        }
        trace = _trace.get()
        if trace:
            payload["logging.googleapis.com/trace"] = trace
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            payload.update(fields)
        if record.exc_info:
            payload["stack_trace"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str)


def get_logger(name: str) -> logging.Logger:
    """A logger under `simplytalk` whose records are JSON lines on stdout."""
    root = logging.getLogger("simplytalk")
    if not root.handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(CloudLoggingFormatter())
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        root.propagate = False
    return root.getChild(name) if name != "simplytalk" else root
