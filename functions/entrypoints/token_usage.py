from __future__ import annotations

from simplytalk.firestore import firestore_client
from simplytalk.http import Api, ApiRequest, Reply
from simplytalk.services.usage import usage_summary

api = Api("token-usage")


@api.route("GET", "/")
def get_usage(req: ApiRequest) -> Reply:
    return Reply(200, usage_summary(firestore_client(), req.uid))
