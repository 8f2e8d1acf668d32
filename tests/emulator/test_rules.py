"""Security rules, enforced by the emulator for REST calls that carry a user's ID token."""

from __future__ import annotations

from typing import Any

import pytest
import requests

from devtools.stack import Stack


@pytest.fixture
def rest(stack: Stack) -> str:
    return f"http://{stack.firestore_host}/v1/projects/{stack.project}/databases/(default)/documents"


def _get(rest: str, path: str, token: str) -> int:
    return requests.get(f"{rest}/{path}", headers={"Authorization": f"Bearer {token}"},
                        timeout=10).status_code


def _write(rest: str, path: str, token: str, fields: dict[str, Any]) -> int:
    body = {"fields": {k: _value(v) for k, v in fields.items()}}
    return requests.patch(f"{rest}/{path}", json=body, headers={"Authorization": f"Bearer {token}"},
                          timeout=10).status_code


def _value(v: Any) -> dict[str, Any]:
    if isinstance(v, bool):
        return {"booleanValue": v}
    if isinstance(v, int):
        return {"integerValue": str(v)}
    if isinstance(v, list):
        return {"arrayValue": {"values": [_value(x) for x in v]}}
    return {"stringValue": v}


@pytest.fixture
def two_users(db: Any, new_user: Any) -> tuple[Any, Any]:
    ann, bob = new_user(), new_user()
    for user in (ann, bob):
        db.collection("users").document(user.uid).set({"email": user.email})
        db.collection("tokenUsage").document(user.uid).set({"userId": user.uid, "totalTokens": 1})
    return ann, bob


def test_a_user_reads_their_own_profile_and_usage(rest: str, two_users: Any) -> None:
    ann, _ = two_users

    assert _get(rest, f"users/{ann.uid}", ann.id_token) == 200
    assert _get(rest, f"tokenUsage/{ann.uid}", ann.id_token) == 200


def test_another_users_documents_are_denied(rest: str, two_users: Any) -> None:
    ann, bob = two_users

    assert _get(rest, f"users/{bob.uid}", ann.id_token) == 403
    assert _get(rest, f"tokenUsage/{bob.uid}", ann.id_token) == 403


def test_no_client_writes_to_token_usage(rest: str, two_users: Any) -> None:
    ann, _ = two_users

    assert _write(rest, f"tokenUsage/{ann.uid}", ann.id_token, {"totalTokens": 0}) == 403
    assert _write(rest, "tokenUsage/someone-new", ann.id_token, {"totalTokens": 0}) == 403


def test_server_managed_profile_fields_are_not_client_writable(rest: str, two_users: Any) -> None:
    ann, bob = two_users

    assert _write(rest, f"users/{ann.uid}?updateMask.fieldPaths=isSubscribed", ann.id_token,
                  {"isSubscribed": True}) == 403
    assert _write(rest, f"users/{ann.uid}?updateMask.fieldPaths=openaiAssistants", ann.id_token,
                  {"openaiAssistants": ["x"]}) == 403
    assert _write(rest, f"users/{bob.uid}?updateMask.fieldPaths=displayName", ann.id_token,
                  {"displayName": "mine now"}) == 403
    assert _write(rest, f"users/{ann.uid}?updateMask.fieldPaths=displayName", ann.id_token,
                  {"displayName": "Ann"}) == 200


def test_a_user_creates_only_their_own_profile(rest: str, new_user: Any) -> None:
    carol, dave = new_user(), new_user()

    assert _write(rest, f"users/{dave.uid}", carol.id_token, {"email": carol.email}) == 403
    assert _write(rest, f"users/{carol.uid}", carol.id_token,
                  {"email": carol.email, "isSubscribed": True}) == 403
    assert _write(rest, f"users/{carol.uid}", carol.id_token, {"email": carol.email}) == 200


def test_unknown_collections_are_denied(rest: str, two_users: Any) -> None:
    ann, _ = two_users

    assert _get(rest, "somethingElse/x", ann.id_token) == 403
    assert _write(rest, "somethingElse/x", ann.id_token, {"a": "b"}) == 403


def test_anonymous_requests_are_denied(rest: str, two_users: Any) -> None:
    ann, _ = two_users

    assert requests.get(f"{rest}/users/{ann.uid}", timeout=10).status_code == 403


def test_a_user_reads_only_their_own_assistants_of_both_kinds(rest: str, db: Any, two_users: Any) -> None:
    ann, bob = two_users
    for collection in ("openaiAssistants", "assistants"):
        db.collection(collection).document(f"{collection}-ann").set({"userId": ann.uid, "name": "a"})

        assert _get(rest, f"{collection}/{collection}-ann", ann.id_token) == 200
        assert _get(rest, f"{collection}/{collection}-ann", bob.id_token) == 403
        assert _write(rest, f"{collection}/{collection}-ann", ann.id_token,
                      {"userId": ann.uid, "name": "b"}) == 403
        assert _write(rest, f"{collection}/new-one", ann.id_token, {"userId": ann.uid, "name": "c"}) == 403


def test_a_user_lists_only_their_own_assistants(rest: str, db: Any, two_users: Any) -> None:
    ann, bob = two_users
    db.collection("openaiAssistants").document("x").set({"userId": ann.uid, "name": "a"})
    parent = rest.rsplit("/documents", 1)[0] + "/documents"

    def run_query(token: str, uid: str | None) -> int:
        where = {"fieldFilter": {"field": {"fieldPath": "userId"}, "op": "EQUAL",
                                 "value": {"stringValue": uid}}} if uid else None
        query: dict[str, Any] = {"from": [{"collectionId": "openaiAssistants"}]}
        if where:
            query["where"] = where
        return requests.post(f"{parent}:runQuery", json={"structuredQuery": query},
                             headers={"Authorization": f"Bearer {token}"}, timeout=10).status_code

    assert run_query(ann.id_token, ann.uid) == 200
    assert run_query(ann.id_token, bob.uid) == 403
    assert run_query(ann.id_token, None) == 403


def test_a_user_reads_their_own_usage_events_and_counters_only(rest: str, db: Any, two_users: Any) -> None:
    ann, bob = two_users
    db.collection("usageEvents").document("resp_ann").set({"userId": ann.uid, "assistantId": "a"})
    db.collection("tokenUsage").document(ann.uid).collection("usageShards").document("0").set({"totals": {}})

    assert _get(rest, "usageEvents/resp_ann", ann.id_token) == 200
    assert _get(rest, "usageEvents/resp_ann", bob.id_token) == 403
    assert _get(rest, f"tokenUsage/{ann.uid}/usageShards/0", ann.id_token) == 200
    assert _get(rest, f"tokenUsage/{ann.uid}/usageShards/0", bob.id_token) == 403
    assert _get(rest, f"tokenUsage/{ann.uid}/applied/resp_ann", ann.id_token) == 403
    assert _write(rest, "usageEvents/resp_forged", ann.id_token, {"userId": ann.uid}) == 403
    assert _write(rest, f"tokenUsage/{ann.uid}/usageShards/0", ann.id_token, {"totals": "x"}) == 403


def test_invoices_are_readable_by_their_owner_and_billing_data_by_no_client(rest: str, db: Any,
                                                                           two_users: Any) -> None:
    ann, bob = two_users
    db.collection("invoices").document(f"{ann.uid}_2026-10").set({"userId": ann.uid, "total": 5})
    db.collection("billingLedger").document(ann.uid).set({"userId": ann.uid})
    db.collection("rateCards").document("c").set({"tokensPerMinute": 60})

    assert _get(rest, f"invoices/{ann.uid}_2026-10", ann.id_token) == 200
    assert _get(rest, f"invoices/{ann.uid}_2026-10", bob.id_token) == 403
    assert _write(rest, f"invoices/{ann.uid}_2026-10", ann.id_token, {"userId": ann.uid, "total": 0}) == 403
    assert _get(rest, f"billingLedger/{ann.uid}", ann.id_token) == 403
    assert _write(rest, "rateCards/mine", ann.id_token, {"tokensPerMinute": 1}) == 403
    assert _get(rest, "invoiceRuns/2026-10", ann.id_token) == 403
