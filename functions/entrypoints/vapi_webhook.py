from __future__ import annotations

from simplytalk import logs
from simplytalk.api_models import VapiReceived, VapiServerMessage
from simplytalk.clock import utcnow
from simplytalk.config import settings
from simplytalk.errors import InvalidInput
from simplytalk.firestore import firestore_client
from simplytalk.http import Api, ApiRequest, Reply
from simplytalk.repositories.vapi_calls import FirestoreVapiCalls
from simplytalk.services.vapi import (
    CallOutcome,
    EndOfCallReport,
    Limits,
    WebhookAuth,
    authenticate,
    parse_body,
    record_end_of_call,
)
from simplytalk.validation import parse_model

# End-of-call reports carry the whole transcript: allow large bodies here.
api = Api("vapi-webhook", max_body_bytes=8 * 1024 * 1024, cors=False)
log = logs.get_logger("vapi-webhook")


# authenticated by a vapi credential, not a Firebase token
@api.route("POST", "/", public=True, summary="vapi server messages (an end-of-call report is recorded)",
           body=VapiServerMessage, response=VapiReceived, errors=(401,),
           security=(("vapiSignature", "vapiTimestamp"), ("vapiBearer",), ("vapiSecret",)))
def receive(req: ApiRequest) -> Reply:
    raw = req.body()  # the HMAC signs these exact bytes
    config = settings()
    scheme = authenticate(dict(req.raw.headers), raw, WebhookAuth.from_settings(config), utcnow())
    body = parse_body(raw)
    message = body.get("message") if isinstance(body, dict) else None
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise InvalidInput("body must be a vapi server message: {message: {type, ...}}")
    if message["type"] != "end-of-call-report":
        return Reply(200, {"received": True})  # other messages are acknowledged and ignored
    report = parse_model(EndOfCallReport, message)
    done = record_end_of_call(FirestoreVapiCalls(firestore_client()), report, raw, utcnow(),
                              Limits(max_call_seconds=config.vapi_max_call_seconds))
    fields = {"callId": done.event_id, "outcome": done.outcome.value, "reason": done.reason, "auth": scheme}
    if done.outcome is CallOutcome.SET_ASIDE:  # never counted, and vapi will not send it again: an operator must look
        log.error("vapi call %s set aside (%s): it can never be counted", done.event_id, done.reason,
                  extra={"fields": fields})
    else:
        log.info("vapi call %s: %s", done.event_id, done.outcome.value, extra={"fields": fields})
    return Reply(200, {"received": True, "outcome": done.outcome.value})
