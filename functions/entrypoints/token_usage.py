from __future__ import annotations

from simplytalk.api_models import UsageQuery, UsageView
from simplytalk.clock import utcnow
from simplytalk.firestore import firestore_client
from simplytalk.http import Api, ApiRequest, Reply
from simplytalk.invoicing import card_for
from simplytalk.paging import page_size
from simplytalk.services.rate_cards import list_cards
from simplytalk.services.usage import parse_period, usage_view

api = Api("token-usage")


@api.route("GET", "/", summary="The caller's usage: totals, a month with its estimated cost, per assistant, "
           "and the paged history", query=UsageQuery, response=UsageView, errors=(404,))
def get_usage(req: ApiRequest) -> Reply:
    period = parse_period(req.query("period"), utcnow())
    size = page_size(req.query("pageSize"))
    assistant_id = req.query("assistantId") or None
    db = firestore_client()
    card = card_for(period, list_cards(db))  # the card in effect for that month, as invoicing prices it
    view = usage_view(db, req.uid, card, period, assistant_id, size, req.query("pageToken"))
    return Reply(200, view)
