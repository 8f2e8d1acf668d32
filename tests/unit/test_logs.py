from __future__ import annotations

import json
import logging

from simplytalk.logs import CloudLoggingFormatter, reset_trace, set_trace, trace_from_headers


def _format(record: logging.LogRecord) -> dict[str, object]:
    result: dict[str, object] = json.loads(CloudLoggingFormatter().format(record))
    return result


def test_a_record_is_one_json_line_with_severity_and_trace() -> None:
    record = logging.LogRecord("simplytalk.x", logging.WARNING, __file__, 1, "hello %s", ("ann",), None)
    record.fields = {"uid": "u1"}
    token = set_trace("projects/p/traces/abc")
    try:
        payload = _format(record)
    finally:
        reset_trace(token)

    assert payload == {"severity": "WARNING", "message": "hello ann", "logger": "simplytalk.x",
                       "logging.googleapis.com/trace": "projects/p/traces/abc", "uid": "u1"}


def test_trace_from_traceparent_or_cloud_trace_header() -> None:
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"

    assert trace_from_headers({"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"}, "p") == \
        f"projects/p/traces/{trace_id}"
    assert trace_from_headers({"X-Cloud-Trace-Context": f"{trace_id}/1;o=1"}, "p") == \
        f"projects/p/traces/{trace_id}"
    assert trace_from_headers({"X-Cloud-Trace-Context": "<script>/1"}, "p") is None
    assert trace_from_headers({}, "p") is None
