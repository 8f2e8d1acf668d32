from __future__ import annotations

from simplytalk.billing import DEFAULT_RATE_CARD
from simplytalk.clock import utcnow
from simplytalk.firestore import firestore_client
from simplytalk.http import Api, ApiRequest, Reply
from simplytalk.paging import page_size
from simplytalk.services.usage import parse_period, usage_view

api = Api("token-usage")


@api.route("GET", "/")
def get_usage(req: ApiRequest) -> Reply:
    period = parse_period(req.query("period"), utcnow())
    size = page_size(req.query("pageSize"))
    assistant_id = req.query("assistantId") or None
    view = usage_view(firestore_client(), req.uid, DEFAULT_RATE_CARD, period, assistant_id, size,
                      req.query("pageToken"))
    return Reply(200, view)
