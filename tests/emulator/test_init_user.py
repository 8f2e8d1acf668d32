"""init-user fires through the Firestore emulator, exactly as Eventarc delivers it."""

from __future__ import annotations

import base64
from typing import Any

import requests

from devtools.firestore_events import document_event
from devtools.stack import Stack
from tests.emulator.conftest import wait_for


def test_creating_a_user_document_gives_zero_usage_and_empty_arrays(db: Any, new_user: Any) -> None:
    user = new_user()
    db.collection("users").document(user.uid).set({"email": user.email, "displayName": "Ann"})

    usage = wait_for(lambda: (s := db.collection("tokenUsage").document(user.uid).get()).exists and s)

    assert usage.to_dict()["totalTokens"] == 0
    assert usage.to_dict()["inputTokens"] == 0
    assert usage.to_dict()["outputTokens"] == 0
    assert usage.to_dict()["userId"] == user.uid
    profile = wait_for(lambda: "openaiAssistants" in (d := db.collection("users").document(user.uid)
                                                      .get().to_dict()) and d)
    assert profile == {"email": user.email, "displayName": "Ann",
                       "vapiAssistants": [], "openaiAssistants": []}


def test_existing_arrays_are_kept(db: Any) -> None:
    db.collection("users").document("u-arrays").set({"vapiAssistants": ["v1"]})

    wait_for(lambda: db.collection("tokenUsage").document("u-arrays").get().exists)

    profile = db.collection("users").document("u-arrays").get().to_dict()
    assert profile["vapiAssistants"] == ["v1"]
    assert profile["openaiAssistants"] == []


def _created_event(project: str, uid: str, fields: dict[str, Any]) -> tuple[dict[str, str], bytes]:
    return document_event(project, f"users/{uid}", fields)


def test_the_same_event_delivered_twice_changes_nothing(stack: Stack, db: Any) -> None:
    db.collection("users").document("u-twice").set({"email": "t@example.com"})
    usage_ref = db.collection("tokenUsage").document("u-twice")
    wait_for(lambda: usage_ref.get().exists)
    user_before = db.collection("users").document("u-twice").get()
    usage_before = usage_ref.get()

    headers, body = _created_event(stack.project, "u-twice", {"email": "t@example.com"})
    url = f"{stack.functions_url}/functions/projects/{stack.project}/triggers/init-user"
    for _ in range(2):
        assert requests.post(url, data=body, headers=headers, timeout=10).status_code == 200

    assert db.collection("users").document("u-twice").get().update_time == user_before.update_time
    assert usage_ref.get().update_time == usage_before.update_time


def test_raw_protobuf_body_as_production_sends_it(stack: Stack, db: Any) -> None:
    db.collection("users").document("u-raw").set({"email": "r@example.com"})
    wait_for(lambda: db.collection("tokenUsage").document("u-raw").get().exists)
    db.collection("tokenUsage").document("u-raw").delete()

    headers, body = _created_event(stack.project, "u-raw", {"email": "r@example.com"})
    url = f"{stack.functions_url}/functions/projects/{stack.project}/triggers/init-user"
    assert requests.post(url, data=base64.b64decode(body), headers=headers, timeout=10).status_code == 200

    assert db.collection("tokenUsage").document("u-raw").get().exists


def test_event_for_a_deleted_user_recreates_nothing(stack: Stack, db: Any) -> None:
    headers, body = _created_event(stack.project, "u-gone", {"email": "g@example.com"})
    url = f"{stack.functions_url}/functions/projects/{stack.project}/triggers/init-user"

    assert requests.post(url, data=body, headers=headers, timeout=10).status_code == 200

    assert not db.collection("users").document("u-gone").get().exists
    assert not db.collection("tokenUsage").document("u-gone").get().exists


def test_undecodable_event_is_acknowledged_not_retried(stack: Stack) -> None:
    headers, _ = _created_event(stack.project, "u-bad", {})
    url = f"{stack.functions_url}/functions/projects/{stack.project}/triggers/init-user"

    response = requests.post(url, data=b"\x0a\xff\xff\xff", headers=headers, timeout=10)

    assert response.status_code == 200
