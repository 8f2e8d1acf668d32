from __future__ import annotations

from simplytalk.api_models import UsageQuery, UsageView
from simplytalk.clock import utcnow
from simplytalk.firestore import firestore_client
from simplytalk.http import Api, ApiRequest, Reply
from simplytalk.paging import page_size
from simplytalk.services.rate_cards import list_cards
from simplytalk.services.usage import parse_grouping, parse_period, usage_view

api = Api("token-usage")


@api.route("GET", "/", summary="The caller's usage: totals, a month with its estimated cost, per assistant, "
           "and the paged history", query=UsageQuery, response=UsageView, errors=(404,))
def get_usage(req: ApiRequest) -> Reply:
    period = parse_period(req.query("period"), utcnow())
    size = page_size(req.query("pageSize"))
    group_by = parse_grouping(req.query("groupBy"))
    assistant_id = req.query("assistantId") or None
    db = firestore_client()
    view = usage_view(db, req.uid, list_cards(db), period, assistant_id, size, req.query("pageToken"), group_by)
    return Reply(200, view)
