from __future__ import annotations

from simplytalk.api_models import OpenAIAssistantPage, PageQuery
from simplytalk.assistant_input import AssistantCreate, AssistantPatch
from simplytalk.clock import utcnow
from simplytalk.config import settings
from simplytalk.firestore import firestore_client
from simplytalk.http import Api, ApiRequest, Reply
from simplytalk.models import OpenAIAssistant
from simplytalk.paging import page_size
from simplytalk.rate_limits import rate_limiter
from simplytalk.repositories.knowledge import FirestoreKnowledge
from simplytalk.scraping import FetchPolicy
from simplytalk.services import assistants, knowledge
from simplytalk.services.assistants_deps import firestore_deps as deps

api = Api("openai-assistants")


@api.route("POST", "/", summary="Create an OpenAI assistant", body=AssistantCreate, response=OpenAIAssistant,
           status=201, errors=(409, 429))
def create(req: ApiRequest) -> Reply:
    data = req.parse(AssistantCreate)
    rate_limiter().take(req.uid, "assistant-create")
    created = assistants.create_assistant(deps(), req.uid, data, settings().max_assistants_per_user)
    return Reply(201, created.to_json())


@api.route("GET", "/", summary="The caller's OpenAI assistants, newest first", query=PageQuery,
           response=OpenAIAssistantPage)
def list_(req: ApiRequest) -> Reply:
    page = assistants.list_openai_assistants(deps(), req.uid, page_size(req.query("pageSize")),
                                             req.query("pageToken"))
    return Reply(200, {"assistants": page.items, "nextPageToken": page.next_page_token})


@api.route("GET", "/{assistant_id}", summary="One of the caller's OpenAI assistants", response=OpenAIAssistant)
def get(req: ApiRequest) -> Reply:
    found = assistants.get_assistant(deps(), req.uid, req.params["assistant_id"])
    return Reply(200, found.to_json())


@api.route("PATCH", "/{assistant_id}", summary="Change some of an assistant's fields", body=AssistantPatch,
           response=OpenAIAssistant)
def update(req: ApiRequest) -> Reply:
    patch = req.parse(AssistantPatch)
    updated = assistants.update_assistant(deps(), req.uid, req.params["assistant_id"], patch)
    return Reply(200, updated.to_json())


@api.route("DELETE", "/{assistant_id}", summary="Delete an assistant", status=204, errors=(409,))
def delete(req: ApiRequest) -> Reply:
    assistants.delete_assistant(deps(), req.uid, req.params["assistant_id"])
    return Reply(204)


@api.route("POST", "/{assistant_id}/scrape", summary="Fetch the assistant's scrapedUrls again, now",
           response=OpenAIAssistant, errors=(409, 429))
def scrape(req: ApiRequest) -> Reply:
    """Fetch the assistant's scrapedUrls now (again), whatever was fetched before."""
    db = firestore_client()
    rate_limiter().take(req.uid, "scrape")  # per user; the per-assistant cooldown is the service's
    knowledge.scrape_now(FirestoreKnowledge(db), req.uid, req.params["assistant_id"], scrape_policy(), utcnow())
    return Reply(200, assistants.get_assistant(deps(db), req.uid, req.params["assistant_id"]).to_json())


def scrape_policy() -> FetchPolicy:
    return FetchPolicy(allow_loopback=settings().scrape_allow_loopback)
