"""`assistants`: the caller's assistants of both providers in one list.

vapi documents are listed once the `vapi-listed-at` trigger has given them `listedAt`, so
each test that writes them waits for the real trigger (`_listed`) before it lists.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
import requests
from simplytalk.repositories.assistants import listed_at_is_current
from simplytalk.services.assistants import list_all_assistants
from simplytalk.services.assistants_deps import firestore_deps

from devtools.bench.counting import CountingClient
from devtools.stack import Stack
from tests.emulator.conftest import wait_for


@pytest.fixture
def ann(db: Any, new_user: Any) -> Any:
    user = new_user()
    db.collection("users").document(user.uid).set({"email": user.email})
    return user


def _vapi(db: Any, doc_id: str, uid: str, created: Any, **fields: Any) -> None:
    if created is not None:
        fields["createdAt"] = created
    db.collection("assistants").document(doc_id).set({"userId": uid, "name": doc_id, **fields})


def _listed(db: Any, ids: list[str], timeout: float = 60.0) -> None:
    """Wait until the trigger has given every one of these vapi documents its listedAt."""
    refs = [db.collection("assistants").document(i) for i in ids]
    wait_for(lambda: all(s.exists and listed_at_is_current(s.to_dict() or {}) for s in db.get_all(refs)),
             timeout=timeout, interval=0.2)


def _walk(url: str, headers: dict[str, str], size: int) -> list[dict[str, Any]]:
    everything: list[dict[str, Any]] = []
    token = None
    while True:
        params = {"pageSize": size, **({"pageToken": token} if token else {})}
        page = requests.get(url, params=params, headers=headers, timeout=10)
        assert page.status_code == 200, page.text
        everything += page.json()["assistants"]
        token = page.json()["nextPageToken"]
        if not token:
            return everything
        assert len(page.json()["assistants"]) == size


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
    _listed(db, ["v-ts", "v-str", "v-ms", "v-none", "v-other"])

    url = stack.function_url("assistants")
    everything = _walk(url, ann.headers, 2)

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


def _stamp(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def test_paging_a_mix_of_both_providers_yields_each_once_in_order(stack: Stack, db: Any, ann: Any) -> None:
    """Ties of createdAt across providers and within one, every stored shape, every page size:
    each assistant once, in (createdAt, provider, id) descending order, whatever the cursor's provider."""
    openai_url = stack.function_url("openai-assistants")
    made = [requests.post(openai_url, json={"name": f"o{i}"}, headers=ann.headers, timeout=10).json()["id"]
            for i in range(4)]
    expected: list[tuple[str, str, str]] = []
    for oid in made:
        created = db.collection("openaiAssistants").document(oid).get().to_dict()["createdAt"]
        expected.append((_stamp(created), "openai", oid))
        # vapi assistants at the very same microsecond, ids sorting below and above "asst_..."
        _vapi(db, f"a-tie-{oid}", ann.uid, created)
        _vapi(db, f"z-tie-{oid}", ann.uid, _stamp(created))
        expected += [(_stamp(created), "vapi", f"a-tie-{oid}"), (_stamp(created), "vapi", f"z-tie-{oid}")]
    base = dt.datetime(2025, 6, 1, 12, 0, tzinfo=dt.UTC)
    for k in range(4):
        seconds = base + dt.timedelta(hours=k)
        millis = base + dt.timedelta(hours=k, minutes=30, milliseconds=250)
        _vapi(db, f"v-s-{k}", ann.uid, int(seconds.timestamp()))
        _vapi(db, f"v-ms-{k}", ann.uid, int(millis.timestamp() * 1000))
        expected += [(_stamp(seconds), "vapi", f"v-s-{k}"), (_stamp(millis), "vapi", f"v-ms-{k}")]
    epoch = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    for doc_id, created in [("v-none-1", None), ("v-none-2", None), ("v-none-3", None), ("v-bad", "yesterday")]:
        _vapi(db, doc_id, ann.uid, created)
        expected.append((_stamp(epoch), "vapi", doc_id))
    _vapi(db, "w-other", "someone-else", base)
    _listed(db, [i for _, p, i in expected if p == "vapi"] + ["w-other"])
    expected.sort(reverse=True)

    url = stack.function_url("assistants")
    for size in (1, 2, 5, 100):
        listed = _walk(url, ann.headers, size)
        assert [(a["createdAt"], a["provider"], a["id"]) for a in listed] == expected, size


def test_a_page_reads_a_bounded_number_of_documents(stack: Stack, db: Any, ann: Any) -> None:
    """200 vapi assistants: a page of 2 reads at most 2 x 3 documents (each provider's query
    from the cursor, size + 1), counted on the wire as Firestore bills reads; reading them
    all, as before listedAt, would be 200 a page."""
    base = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    shapes = [lambda t: t, lambda t: _stamp(t), lambda t: int(t.timestamp() * 1000), lambda t: int(t.timestamp())]
    ids = [f"v{i:03d}" for i in range(200)]
    for start in range(0, 200, 100):
        batch = db.batch()
        for i in range(start, start + 100):
            created = shapes[i % 4](base + dt.timedelta(minutes=i))
            batch.set(db.collection("assistants").document(ids[i]), {"userId": ann.uid, "name": ids[i],
                                                                     "createdAt": created})
        batch.commit()
    requests.post(stack.function_url("openai-assistants"), json={"name": "newest"}, headers=ann.headers,
                  timeout=10).raise_for_status()
    _listed(db, ids, timeout=240)

    counting = CountingClient(stack.project)
    seen: list[dict[str, Any]] = []
    token = None
    for _ in range(6):
        counting.counter.take_reads()
        page = list_all_assistants(firestore_deps(counting), ann.uid, 2, token)
        reads = counting.counter.take_reads()
        assert 3 <= reads <= 2 * (2 + 1), reads
        seen += page.items
        token = page.next_page_token
    assert [a["id"] for a in seen[1:]] == ids[::-1][:11]
    assert seen[0]["name"] == "newest" and token
    first = requests.get(stack.function_url("assistants"), params={"pageSize": 2}, headers=ann.headers,
                         timeout=10).json()
    assert [a["id"] for a in first["assistants"]] == [a["id"] for a in seen[:2]]
