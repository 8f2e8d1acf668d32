"""openai-assistants and assistants through the functions host, on the emulators."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests

from devtools.stack import Stack
from tests.emulator.conftest import wait_for

SERVER_FIELDS = {"id", "userId", "createdAt", "updatedAt", "tokenUsage", "isSubscribed"}


@pytest.fixture
def url(stack: Stack) -> str:
    return stack.function_url("openai-assistants")


@pytest.fixture
def ann(db: Any, new_user: Any) -> Any:
    user = new_user()
    db.collection("users").document(user.uid).set({"email": user.email})
    return user


def create(url: str, user: Any, **body: Any) -> requests.Response:
    return requests.post(url, json={"name": "Receptionist", **body}, headers=user.headers, timeout=20)


def user_array(db: Any, uid: str) -> list[str]:
    return list((db.collection("users").document(uid).get().to_dict() or {}).get("openaiAssistants", []))


def collection_ids(db: Any, uid: str) -> set[str]:
    from google.cloud.firestore_v1.base_query import FieldFilter

    return {d.id for d in db.collection("openaiAssistants").where(filter=FieldFilter("userId", "==", uid))
            .stream()}


def test_full_lifecycle(url: str, db: Any, ann: Any) -> None:
    created = create(url, ann, systemPrompt="You book dental appointments.\nBe brief.",
                     firstMessage="Hello!", voiceDetails={"voice": "coral"},
                     transcriberDetails={"model": "gpt-4o-transcribe", "language": "en"},
                     messages=[{"role": "user", "content": "hi"}])
    assert created.status_code == 201, created.text
    body = created.json()
    assert set(body) >= SERVER_FIELDS
    assert body["userId"] == ann.uid
    assert body["tokenUsage"] == {"totalTokens": 0, "inputTokens": 0, "outputTokens": 0}
    assert body["isSubscribed"] is False
    assert body["voiceDetails"] == {"voice": "coral"}
    assert body["createdAt"].endswith("Z") and body["createdAt"] == body["updatedAt"]
    assistant_id = body["id"]
    assert user_array(db, ann.uid) == [assistant_id]

    got = requests.get(f"{url}/{assistant_id}", headers=ann.headers, timeout=10)
    assert got.status_code == 200
    assert got.json() == body

    listed = requests.get(url, headers=ann.headers, timeout=10).json()
    assert [a["id"] for a in listed["assistants"]] == [assistant_id]
    assert listed["nextPageToken"] is None

    patched = requests.patch(f"{url}/{assistant_id}", json={"name": "  Front desk  ",
                                                             "voiceDetails": {"voice": "sage"}},
                             headers=ann.headers, timeout=10)
    assert patched.status_code == 200, patched.text
    assert patched.json()["name"] == "Front desk"
    assert patched.json()["voiceDetails"] == {"voice": "sage"}
    assert patched.json()["systemPrompt"] == "You book dental appointments.\nBe brief."
    assert patched.json()["updatedAt"] > body["updatedAt"]
    assert requests.get(f"{url}/{assistant_id}", headers=ann.headers, timeout=10).json()["name"] == \
        "Front desk"

    deleted = requests.delete(f"{url}/{assistant_id}", headers=ann.headers, timeout=10)
    assert deleted.status_code == 204 and deleted.text == ""
    assert requests.get(f"{url}/{assistant_id}", headers=ann.headers, timeout=10).status_code == 404
    assert user_array(db, ann.uid) == []
    assert requests.delete(f"{url}/{assistant_id}", headers=ann.headers, timeout=10).status_code == 404


def test_subscription_comes_from_the_user(url: str, db: Any, ann: Any) -> None:
    db.collection("users").document(ann.uid).update({"isSubscribed": True})

    assert create(url, ann).json()["isSubscribed"] is True


def test_a_user_without_a_profile_gets_one(url: str, db: Any, new_user: Any) -> None:
    bob = new_user()

    created = create(url, bob)

    assert created.status_code == 201
    assert user_array(db, bob.uid) == [created.json()["id"]]
    wait_for(lambda: db.collection("tokenUsage").document(bob.uid).get().exists)  # init-user ran


def test_deleting_keeps_usage_history(url: str, db: Any, ann: Any) -> None:
    assistant_id = create(url, ann).json()["id"]
    db.collection("usageEvents").document("resp_1").set({"userId": ann.uid, "assistantId": assistant_id})

    assert requests.delete(f"{url}/{assistant_id}", headers=ann.headers, timeout=10).status_code == 204

    assert db.collection("usageEvents").document("resp_1").get().exists


def test_paging_over_45_assistants(url: str, db: Any, ann: Any) -> None:
    with ThreadPoolExecutor(8) as pool:
        made = list(pool.map(lambda i: create(url, ann, name=f"a{i}"), range(45)))
    assert all(r.status_code == 201 for r in made)

    seen: list[dict[str, Any]] = []
    token = None
    pages = 0
    while True:
        params = {"pageSize": 10, **({"pageToken": token} if token else {})}
        page = requests.get(url, params=params, headers=ann.headers, timeout=10)
        assert page.status_code == 200, page.text
        seen += page.json()["assistants"]
        pages += 1
        token = page.json()["nextPageToken"]
        if not token:
            break

    assert pages == 5
    assert len(seen) == 45 and len({a["id"] for a in seen}) == 45
    keys = [(a["createdAt"], a["id"]) for a in seen]
    assert keys == sorted(keys, reverse=True)
    default_page = requests.get(url, headers=ann.headers, timeout=10).json()
    assert len(default_page["assistants"]) == 20


@pytest.mark.parametrize("params", [{"pageSize": 0}, {"pageSize": 101}, {"pageSize": "ten"},
                                    {"pageToken": "garbage!"}, {"pageToken": "eyJ4IjoxfQ"}])
def test_bad_paging_parameters_are_400(url: str, ann: Any, params: dict[str, Any]) -> None:
    response = requests.get(url, params=params, headers=ann.headers, timeout=10)

    assert response.status_code == 400
    assert response.json()["error"]["details"][0]["field"] in ("pageSize", "pageToken")


def test_another_users_assistant_is_404_everywhere(url: str, db: Any, ann: Any, new_user: Any) -> None:
    assistant = create(url, ann).json()
    mallory = new_user()

    assert requests.get(f"{url}/{assistant['id']}", headers=mallory.headers, timeout=10).status_code == 404
    assert requests.patch(f"{url}/{assistant['id']}", json={"name": "pwned"}, headers=mallory.headers,
                          timeout=10).status_code == 404
    assert requests.delete(f"{url}/{assistant['id']}", headers=mallory.headers,
                           timeout=10).status_code == 404
    assert requests.post(f"{url}/{assistant['id']}/scrape", headers=mallory.headers,
                         timeout=10).status_code == 404
    assert requests.get(url, headers=mallory.headers, timeout=10).json()["assistants"] == []
    after = requests.get(f"{url}/{assistant['id']}", headers=ann.headers, timeout=10).json()
    assert after == assistant


def test_missing_assistant_and_bad_token_and_wrong_method(url: str, ann: Any) -> None:
    assert requests.get(f"{url}/asst_nope", headers=ann.headers, timeout=10).status_code == 404
    assert requests.get(url, timeout=10).status_code == 401
    wrong = requests.put(f"{url}/asst_nope", json={}, headers=ann.headers, timeout=10)
    assert wrong.status_code == 405
    assert wrong.headers["Allow"] == "DELETE, GET, PATCH"


INVALID = [
    ({"name": ""}, "name"),
    ({"name": "   "}, "name"),
    ({"name": "x" * 101}, "name"),
    ({"name": "bell\x07"}, "name"),
    ({"name": "two\nlines"}, "name"),
    ({"name": 5}, "name"),
    ({"systemPrompt": "x" * 20_001}, "systemPrompt"),
    ({"systemPrompt": "nul\x00byte"}, "systemPrompt"),
    ({"firstMessage": "x" * 2_001}, "firstMessage"),
    ({"voiceDetails": {"voice": "robot"}}, "voiceDetails.voice"),
    ({"voiceDetails": {"voice": "alloy", "pitch": 3}}, "voiceDetails.pitch"),
    ({"voiceDetails": {"speed": 9}}, "voiceDetails.speed"),
    ({"transcriberDetails": {"model": "whisper-9"}}, "transcriberDetails.model"),
    ({"transcriberDetails": {"language": "English"}}, "transcriberDetails.language"),
    ({"scrapedUrls": ["not a url"]}, "scrapedUrls.0"),
    ({"scrapedUrls": ["ftp://example.com/x"]}, "scrapedUrls.0"),
    ({"scrapedUrls": ["https://user:pw@example.com/"]}, "scrapedUrls.0"),
    ({"scrapedUrls": ["http://example.com:99999/"]}, "scrapedUrls.0"),
    ({"scrapedUrls": ["http://" + "a" * 64 + ".example.com/"]}, "scrapedUrls.0"),
    ({"scrapedUrls": [f"https://example.com/{i}" for i in range(11)]}, "scrapedUrls"),
    ({"messages": [{"role": "robot", "content": "x"}]}, "messages.0.role"),
    ({"messages": [{"role": "user", "content": "x"}] * 51}, "messages"),
    ({"trainingFiles": [{"name": ""}]}, "trainingFiles.0.name"),
    ({"trainingFiles": [{"name": "a.pdf", "sizeBytes": -1}]}, "trainingFiles.0.sizeBytes"),
    ({"id": "asst_mine"}, "id"),
    ({"userId": "someone"}, "userId"),
    ({"tokenUsage": {"totalTokens": 0}}, "tokenUsage"),
    ({"isSubscribed": True}, "isSubscribed"),
    ({"createdAt": "2020-01-01T00:00:00Z"}, "createdAt"),
    ({"scrapedContent": "injected"}, "scrapedContent"),
    ({"colour": "red"}, "colour"),
]


@pytest.mark.parametrize(("change", "field"), INVALID)
def test_invalid_create_is_400_naming_the_field(url: str, db: Any, ann: Any, change: dict[str, Any],
                                                field: str) -> None:
    response = requests.post(url, json={"name": "ok", **change}, headers=ann.headers, timeout=10)

    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["status"] == "INVALID_ARGUMENT"
    assert field in [d["field"] for d in error["details"]]
    assert collection_ids(db, ann.uid) == set()


@pytest.mark.parametrize(("change", "field"), [*INVALID[:10], ({"name": None}, "name"), ({}, "body")])
def test_invalid_patch_is_400_and_changes_nothing(url: str, ann: Any, change: dict[str, Any],
                                                  field: str) -> None:
    before = create(url, ann).json()

    response = requests.patch(f"{url}/{before['id']}", json=change, headers=ann.headers, timeout=10)

    assert response.status_code == 400, response.text
    assert field in [d["field"] for d in response.json()["error"]["details"]]
    assert requests.get(f"{url}/{before['id']}", headers=ann.headers, timeout=10).json() == before


@pytest.mark.parametrize("body", [b"not json", b"[]", b'"text"', b""])
def test_a_body_that_is_not_a_json_object_is_400(url: str, ann: Any, body: bytes) -> None:
    response = requests.post(url, data=body, headers={**ann.headers, "Content-Type": "application/json"},
                             timeout=10)

    assert response.status_code == 400


def test_oversized_body_is_413(url: str, ann: Any) -> None:
    response = requests.post(url, data=b'{"name": "' + b"x" * 70_000 + b'"}',
                             headers={**ann.headers, "Content-Type": "application/json"}, timeout=10)

    assert response.status_code == 413


def test_20_concurrent_creates_keep_array_and_collection_equal(url: str, db: Any, ann: Any) -> None:
    with ThreadPoolExecutor(20) as pool:
        results = list(pool.map(lambda i: create(url, ann, name=f"c{i}"), range(20)))

    assert [r.status_code for r in results] == [201] * 20
    ids = {r.json()["id"] for r in results}
    array = user_array(db, ann.uid)
    assert len(array) == 20
    assert set(array) == ids == collection_ids(db, ann.uid)


def test_20_concurrent_deletes_leave_nothing_behind(url: str, db: Any, ann: Any) -> None:
    with ThreadPoolExecutor(8) as pool:
        ids = [r.json()["id"] for r in pool.map(lambda i: create(url, ann, name=f"d{i}"), range(20))]

    def delete(assistant_id: str) -> int:
        return requests.delete(f"{url}/{assistant_id}", headers=ann.headers, timeout=30).status_code

    with ThreadPoolExecutor(20) as pool:
        assert list(pool.map(delete, ids)) == [204] * 20

    assert user_array(db, ann.uid) == []
    assert collection_ids(db, ann.uid) == set()


def test_the_limit_holds_under_concurrent_creates(url: str, db: Any, ann: Any) -> None:
    with ThreadPoolExecutor(8) as pool:
        assert all(r.status_code == 201 for r in pool.map(lambda i: create(url, ann, name=f"l{i}"),
                                                           range(45)))

    with ThreadPoolExecutor(10) as pool:
        results = list(pool.map(lambda i: create(url, ann, name=f"m{i}"), range(10)))

    assert sorted(r.status_code for r in results) == [201] * 5 + [429] * 5
    refused = next(r for r in results if r.status_code == 429).json()["error"]
    assert refused["status"] == "RESOURCE_EXHAUSTED"  # a quota (AIP-193)
    assert "50" in refused["message"]
    assert len(user_array(db, ann.uid)) == 50 == len(collection_ids(db, ann.uid))


@pytest.mark.parametrize("bad", ["..", "__x__"])
def test_an_id_no_document_can_have_is_404_not_500(url: str, ann: Any, bad: str) -> None:
    for method in ("GET", "PATCH", "DELETE"):
        response = requests.request(method, f"{url}/{bad}", json={"name": "x"}, headers=ann.headers, timeout=10)
        assert response.status_code == 404, (method, response.text)
