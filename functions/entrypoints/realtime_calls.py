"""`realtime-calls`: start an OpenAI Realtime call (the browser's SDP offer in, OpenAI's answer out),
list and read the caller's calls, read a transcript, hang up."""

from __future__ import annotations

from simplytalk import api_models as shapes
from simplytalk.config import settings
from simplytalk.http import Api, ApiRequest, Reply
from simplytalk.paging import page_size
from simplytalk.rate_limits import rate_limiter
from simplytalk.realtime import StartCall
from simplytalk.services import realtime_calls as svc
from simplytalk.services.realtime_deps import firestore_deps as deps

api = Api("realtime-calls")


def limits() -> svc.CallLimits:
    cfg = settings()
    return svc.CallLimits(model=cfg.realtime_model, free_minutes=cfg.free_minutes,
                          max_concurrent=cfg.max_concurrent_calls)


@api.route("POST", "/", summary="Start a Realtime call: the browser's SDP offer in, OpenAI's answer out",
           body=StartCall, response=shapes.StartedCall, status=201, errors=(402, 429, 503),
           response_headers=("Location",))
def start(req: ApiRequest) -> Reply:
    request = req.parse(StartCall)
    rate_limiter().take(req.uid, "call-start")
    started = svc.start_call(deps(), limits(), req.uid, request)
    return Reply(201, started.to_json(), {"Location": f"/{started.record.id}"})


@api.route("GET", "/", summary="The caller's calls, newest first", query=shapes.PageQuery,
           response=shapes.CallPage)
def list_(req: ApiRequest) -> Reply:
    calls, token = svc.list_calls(deps(), req.uid, page_size(req.query("pageSize")), req.query("pageToken"))
    return Reply(200, {"calls": calls, "nextPageToken": token})


@api.route("GET", "/{call_id}", summary="One call, with its usage so far", response=shapes.Call)
def get(req: ApiRequest) -> Reply:
    return Reply(200, svc.owned_call(deps(), req.uid, req.params["call_id"]).call.to_json())


@api.route("GET", "/{call_id}/transcript", summary="A call's transcript, oldest first", query=shapes.PageQuery,
           response=shapes.Transcript)
def transcript(req: ApiRequest) -> Reply:
    lines, token = svc.transcript(deps(), req.uid, req.params["call_id"], page_size(req.query("pageSize")),
                                  req.query("pageToken"))
    return Reply(200, {"transcript": lines, "nextPageToken": token})


@api.route("DELETE", "/{call_id}", summary="Hang up", response=shapes.Call, errors=(503,))
def hang_up(req: ApiRequest) -> Reply:
    return Reply(200, svc.hang_up(deps(), req.uid, req.params["call_id"]).to_json())
