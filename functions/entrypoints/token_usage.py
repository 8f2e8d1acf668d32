from __future__ import annotations

from simplytalk.api_models import UsageQuery, UsageView
from simplytalk.clock import utcnow
from simplytalk.http import Api, ApiRequest, Reply
from simplytalk.paging import page_size
from simplytalk.services.usage import parse_grouping, parse_period
from simplytalk.services.usage_deps import firestore_usage_deps

api = Api("token-usage")


@api.route("GET", "/", summary="The caller's usage: totals, a month with its estimated cost, per assistant, "
           "and the paged history", query=UsageQuery, response=UsageView, errors=(404,))
def get_usage(req: ApiRequest) -> Reply:
    period = parse_period(req.query("period"), utcnow())
    size = page_size(req.query("pageSize"))
    group_by = parse_grouping(req.query("groupBy"))
    assistant_id = req.query("assistantId") or None
    view = firestore_usage_deps(cached=False).view(req.uid, period, assistant_id, size, req.query("pageToken"),
                                                   group_by)
    return Reply(200, view)
