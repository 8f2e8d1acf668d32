from __future__ import annotations

from simplytalk.api_models import AssistantSummaryPage, PageQuery
from simplytalk.http import Api, ApiRequest, Reply
from simplytalk.paging import page_size
from simplytalk.services.assistants import list_all_assistants
from simplytalk.services.assistants_deps import firestore_deps as deps

api = Api("assistants")


@api.route("GET", "/", summary="The caller's vapi and OpenAI assistants, newest first", query=PageQuery,
           response=AssistantSummaryPage)
def list_(req: ApiRequest) -> Reply:
    page = list_all_assistants(deps(), req.uid, page_size(req.query("pageSize")),
                               req.query("pageToken"))
    return Reply(200, {"assistants": page.items, "nextPageToken": page.next_page_token})
