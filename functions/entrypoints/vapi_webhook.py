from __future__ import annotations

from simplytalk import logs
from simplytalk.clock import utcnow
from simplytalk.config import settings
from simplytalk.errors import InvalidArgument
from simplytalk.firestore import firestore_client
from simplytalk.http import Api, ApiRequest, Reply, parse_model
from simplytalk.services.vapi import EndOfCallReport, check_secret, record_end_of_call

# End-of-call reports carry the whole transcript: allow large bodies here.
api = Api("vapi-webhook", max_body_bytes=8 * 1024 * 1024)
log = logs.get_logger("vapi-webhook")


@api.route("POST", "/", public=True)  # authenticated by the shared secret, not a Firebase token
def receive(req: ApiRequest) -> Reply:
    check_secret(req.raw.headers.get("x-vapi-secret"), settings().vapi_webhook_secret)
    body = req.json()
    message = body.get("message") if isinstance(body, dict) else None
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise InvalidArgument("body must be a vapi server message: {message: {type, ...}}")
    if message["type"] != "end-of-call-report":
        return Reply(200, {"received": True})  # other messages are acknowledged and ignored
    report = parse_model(EndOfCallReport, message)
    outcome = record_end_of_call(firestore_client(), report, utcnow())
    log.info("vapi call %s: %s", report.call.id, outcome, extra={"fields": {"callId": report.call.id,
                                                                           "outcome": outcome}})
    return Reply(200, {"received": True, "outcome": outcome})
