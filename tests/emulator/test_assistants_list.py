"""`assistants`: the caller's assistants of both providers in one list."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
import requests

from devtools.stack import Stack


@pytest.fixture
def ann(db: Any, new_user: Any) -> Any:
    user = new_user()
    db.collection("users").document(user.uid).set({"email": user.email})
    return user


def _vapi(db: Any, doc_id: str, uid: str, created: Any, **fields: Any) -> None:
    if created is not None:
        fields["createdAt"] = created
    db.collection("assistants").document(doc_id).set({"userId": uid, "name": doc_id, **fields})


def test_both_providers_newest_first_and_paged(stack: Stack, db: Any, ann: Any, new_user: Any) -> None:
    base = dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
    # vapi documents as they exist: timestamps, strings, epoch millis, or no createdAt at all
    _vapi(db, "v-ts", ann.uid, base + dt.timedelta(minutes=1), callSeconds=90)
    _vapi(db, "v-str", ann.uid, (base + dt.timedelta(minutes=3)).isoformat().replace("+00:00", "Z"))
    _vapi(db, "v-ms", ann.uid, int((base + dt.timedelta(minutes=5)).timestamp() * 1000))
    _vapi(db, "v-none", ann.uid, None)
    _vapi(db, "v-other", "someone-else", base)
    openai_url = stack.function_url("openai-assistants")
    made = [requests.post(openai_url, json={"name": f"o{i}"}, headers=ann.headers, timeout=10).json()
            for i in range(3)]

    url = stack.function_url("assistants")
    everything: list[dict[str, Any]] = []
    token = None
    while True:
        params = {"pageSize": 2, **({"pageToken": token} if token else {})}
        page = requests.get(url, params=params, headers=ann.headers, timeout=10)
        assert page.status_code == 200, page.text
        everything += page.json()["assistants"]
        token = page.json()["nextPageToken"]
        if not token:
            break

    assert [(a["provider"], a["id"]) for a in everything] == [
        *[("openai", a["id"]) for a in reversed(made)],
        ("vapi", "v-ms"), ("vapi", "v-str"), ("vapi", "v-ts"), ("vapi", "v-none"),
    ]
    vapi_ts = next(a for a in everything if a["id"] == "v-ts")
    assert vapi_ts["callSeconds"] == 90 and vapi_ts["name"] == "v-ts"
    newest = everything[0]
    assert newest["tokenUsage"] == {"totalTokens": 0, "inputTokens": 0, "outputTokens": 0}
    assert newest["name"] == "o2"
    assert requests.get(url, headers=new_user().headers, timeout=10).json() == {
        "assistants": [], "nextPageToken": None}


def test_requires_a_token(stack: Stack) -> None:
    assert requests.get(stack.function_url("assistants"), timeout=10).status_code == 401
