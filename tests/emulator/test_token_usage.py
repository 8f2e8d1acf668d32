from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
import requests

from devtools.emulator_auth import unsigned_token
from devtools.stack import Stack
from tests.emulator.conftest import wait_for


@pytest.fixture
def url(stack: Stack) -> str:
    return stack.function_url("token-usage")


def test_a_new_user_sees_zero_totals(url: str, db: Any, new_user: Any) -> None:
    user = new_user()
    db.collection("users").document(user.uid).set({"email": user.email})
    wait_for(lambda: db.collection("tokenUsage").document(user.uid).get().exists)

    response = requests.get(url, headers=user.headers, timeout=10)

    assert response.status_code == 200
    body = response.json()
    assert body["userId"] == user.uid
    assert body["totals"] == {"totalTokens": 0, "inputTokens": 0, "outputTokens": 0}
    assert body["period"]["totalMinutes"] == "0"
    assert body["period"]["estimatedCost"] == {"amount": 0, "currency": "usd"}
    assert body["byAssistant"] == [] and body["history"] == [] and body["nextPageToken"] is None


def _event(db: Any, event_id: str, uid: str, assistant: str, tokens: int = 0, seconds: float | None = None,
           when: dt.datetime | None = None) -> None:
    fields: dict[str, Any] = {"userId": uid, "assistantId": assistant,
                              "provider": "vapi" if seconds is not None else "openai",
                              "occurredAt": when or dt.datetime.now(dt.UTC)}
    if seconds is not None:
        fields["callSeconds"] = seconds
    else:
        fields["usage"] = {"totalTokens": tokens, "inputTokens": tokens - tokens // 3,
                           "outputTokens": tokens // 3}
    db.collection("usageEvents").document(event_id).set(fields)


def _settled(url: str, user: Any, total: int) -> dict[str, Any]:
    return wait_for(lambda: (b := requests.get(url, headers=user.headers, timeout=10).json())["totals"]
                    ["totalTokens"] == total and b, timeout=15)


def test_totals_are_the_callers_own(url: str, db: Any, new_user: Any) -> None:
    ann, bob = new_user(), new_user()
    _event(db, "r-ann", ann.uid, "a1", 90)
    _event(db, "r-bob", bob.uid, "b1", 7)

    assert _settled(url, ann, 90)["totals"] == {"totalTokens": 90, "inputTokens": 60, "outputTokens": 30}
    assert _settled(url, bob, 7)["totals"]["totalTokens"] == 7


def test_period_minutes_cost_breakdown_and_history(url: str, db: Any, new_user: Any) -> None:
    ann = new_user()
    db.collection("openaiAssistants").document("o1").set({"userId": ann.uid, "name": "o"})
    now = dt.datetime.now(dt.UTC)
    last_month = (now.replace(day=1) - dt.timedelta(days=1)).replace(hour=12)
    _event(db, "r1", ann.uid, "o1", 1830, when=now)  # 30.5 token minutes
    _event(db, "r2", ann.uid, "o1", 100, when=now)  # 1.666667
    _event(db, "c1", ann.uid, "v1", seconds=90, when=now)  # 1.5 vapi minutes
    _event(db, "r-old", ann.uid, "o1", 600, when=last_month)

    body = _settled(url, ann, 2530)

    period = body["period"]
    assert period["id"] == f"{now.year:04d}-{now.month:02d}"
    assert period["totalTokens"] == 1930
    assert period["tokenMinutes"] == "32.166667"
    assert period["vapiMinutes"] == "1.5"
    assert period["totalMinutes"] == "33.666667"
    assert period["estimatedCost"] == {"amount": 1515, "currency": "usd"}  # 33.666.. * 45 = 1515
    assert body["byAssistant"] == [
        {"assistantId": "o1", "provider": "openai", "totalTokens": 1930, "minutes": "32.166667"},
        {"assistantId": "v1", "provider": "vapi", "totalTokens": 0, "minutes": "1.5"}]
    assert [h["eventId"] for h in body["history"]][-1] == "r-old"
    assert len(body["history"]) == 4

    previous = requests.get(url, params={"period": f"{last_month.year:04d}-{last_month.month:02d}"},
                            headers=ann.headers, timeout=10).json()
    assert previous["period"]["totalTokens"] == 600
    assert previous["period"]["estimatedCost"]["amount"] == 450

    narrowed = requests.get(url, params={"assistantId": "v1"}, headers=ann.headers, timeout=10).json()
    assert narrowed["totals"]["totalTokens"] == 0
    assert narrowed["period"]["vapiMinutes"] == "1.5" and narrowed["period"]["tokenMinutes"] == "0"
    assert [h["eventId"] for h in narrowed["history"]] == ["c1"]

    page1 = requests.get(url, params={"pageSize": 3}, headers=ann.headers, timeout=10).json()
    page2 = requests.get(url, params={"pageSize": 3, "pageToken": page1["nextPageToken"]},
                         headers=ann.headers, timeout=10).json()
    assert [h["eventId"] for h in page1["history"] + page2["history"]] == \
        [h["eventId"] for h in body["history"]]
    assert page2["nextPageToken"] is None


def test_another_users_assistant_is_404(url: str, db: Any, new_user: Any) -> None:
    ann, bob = new_user(), new_user()
    db.collection("openaiAssistants").document("ann-asst").set({"userId": ann.uid, "name": "x"})

    response = requests.get(url, params={"assistantId": "ann-asst"}, headers=bob.headers, timeout=10)

    assert response.status_code == 404
    assert requests.get(url, params={"assistantId": "ann-asst"}, headers=ann.headers,
                        timeout=10).status_code == 200


@pytest.mark.parametrize("params", [{"period": "2026-13"}, {"period": "May"}, {"pageSize": "0"},
                                    {"pageToken": "nope!"}])
def test_bad_query_is_400(url: str, new_user: Any, params: dict[str, str]) -> None:
    assert requests.get(url, params=params, headers=new_user().headers, timeout=10).status_code == 400


def test_before_init_user_the_totals_are_zero(url: str, new_user: Any) -> None:
    user = new_user()

    response = requests.get(url, headers=user.headers, timeout=10)

    assert response.status_code == 200
    assert response.json()["totals"] == {"totalTokens": 0, "inputTokens": 0, "outputTokens": 0}


@pytest.mark.parametrize("authorization", [
    None,
    "",
    "Bearer",
    "Basic dXNlcjpwYXNz",
    "Bearer not-a-jwt",
    "Bearer eyJhbGciOiJub25lIn0.e30.",
])
def test_missing_or_malformed_token_is_401_in_the_error_shape(url: str, authorization: str | None) -> None:
    headers = {"Authorization": authorization} if authorization is not None else {}

    response = requests.get(url, headers=headers, timeout=10)

    assert response.status_code == 401
    assert response.headers["Content-Type"] == "application/json"
    error = response.json()["error"]
    assert error["code"] == 401
    assert error["status"] == "UNAUTHENTICATED"
    assert error["message"]


def test_token_for_another_project_is_401(url: str) -> None:
    token = unsigned_token("demo-some-other-project", "intruder")

    response = requests.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=10)

    assert response.status_code == 401


def test_expired_token_is_401(url: str, stack: Stack) -> None:
    token = unsigned_token(stack.project, "late", iat=1_600_000_000, auth_time=1_600_000_000,
                           exp=1_600_003_600)

    response = requests.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=10)

    assert response.status_code == 401


def test_wrong_method_is_405_with_allow(url: str, new_user: Any) -> None:
    response = requests.post(url, json={}, headers=new_user().headers, timeout=10)

    assert response.status_code == 405
    assert response.headers["Allow"] == "GET"
    assert response.json()["error"]["status"] == "METHOD_NOT_ALLOWED"


def test_unknown_path_is_404(url: str, new_user: Any) -> None:
    response = requests.get(url + "/nope", headers=new_user().headers, timeout=10)

    assert response.status_code == 404
    assert response.json()["error"]["status"] == "NOT_FOUND"


def test_unknown_function_is_404(stack: Stack) -> None:
    response = requests.get(stack.function_url("no-such-function"), timeout=10)

    assert response.status_code == 404
    assert response.json()["error"]["code"] == 404


def test_a_malformed_stored_event_does_not_break_the_history(url: str, db: Any, new_user: Any) -> None:
    user = new_user()
    _event(db, "good-1", user.uid, "a", 5)
    db.collection("usageEvents").document("bad-time").set({"userId": user.uid, "occurredAt": "yesterday"})
    _settled(url, user, 5)

    response = requests.get(url, params={"pageSize": 1}, headers=user.headers, timeout=10)

    assert response.status_code == 200
    assert [h["eventId"] for h in response.json()["history"]] == ["good-1"]


@pytest.mark.parametrize("bad", ["a/b", "..", "__x__"])
def test_an_assistant_id_no_document_can_have_is_400(url: str, new_user: Any, bad: str) -> None:
    response = requests.get(url, params={"assistantId": bad}, headers=new_user().headers, timeout=10)

    assert response.status_code == 400


def test_the_estimate_uses_the_card_in_effect_for_the_month(url: str, db: Any, new_user: Any) -> None:
    user = new_user()
    month = dt.datetime.now(dt.UTC).replace(day=1).date()
    db.collection("rateCards").document("card-now").set({
        "effectiveFrom": month.isoformat(), "tokensPerMinute": 100, "centsPerMinute": "10", "currency": "usd",
        "openaiBasis": "tokens"})
    _event(db, "r-card", user.uid, "a", 1000)

    body = _settled(url, user, 1000)

    assert body["period"]["rateCardId"] == "card-now"
    assert body["period"]["tokenMinutes"] == "10"
    assert body["period"]["estimatedCost"]["amount"] == 100


def test_history_reads_as_words_and_groups_per_call(url: str, db: Any, new_user: Any) -> None:
    ann = new_user()
    db.collection("openaiAssistants").document("o-sup").set({"userId": ann.uid, "name": "Support"})
    db.collection("assistants").document("v-sales").set({"userId": ann.uid, "name": "Sales"})
    db.collection("realtimeCalls").document("rtc_1").set({
        "userId": ann.uid, "assistantId": "o-sup", "responses": 2, "status": "ended",
        "usage": {"totalTokens": 120, "inputTokens": 80, "outputTokens": 40}})
    start = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(minutes=10)
    for n, tokens in enumerate((50, 70)):
        db.collection("usageEvents").document(f"resp_{n}").set({
            "userId": ann.uid, "assistantId": "o-sup", "provider": "openai", "kind": "response",
            "callId": "rtc_1", "occurredAt": start + dt.timedelta(seconds=n + 1),
            "usage": {"totalTokens": tokens, "inputTokens": tokens - 20, "outputTokens": 20}})
    db.collection("usageEvents").document("rtc_1").set({
        "userId": ann.uid, "assistantId": "o-sup", "provider": "openai", "kind": "call", "callId": "rtc_1",
        "occurredAt": start + dt.timedelta(seconds=125), "callSeconds": 125.2})
    _event(db, "vcall_1", ann.uid, "v-sales", seconds=90, when=start + dt.timedelta(minutes=5))

    body = _settled(url, ann, 120)
    described = {h["eventId"]: (h["description"], h["minutes"], h["cost"]["amount"]) for h in body["history"]}
    assert described == {
        "vcall_1": ("vapi call with Sales, 1 min 30 s", "1.5", 68),
        "rtc_1": ("Call with Support: 2 responses, 2 min 05 s", "0", 0),
        "resp_1": ("Response from Support: 70 tokens (50 in, 20 out)", "1.166667", 53),
        "resp_0": ("Response from Support: 50 tokens (30 in, 20 out)", "0.833333", 38),
    }
    assert [h["eventId"] for h in body["history"]] == ["vcall_1", "rtc_1", "resp_1", "resp_0"]

    calls = requests.get(url, params={"groupBy": "call"}, headers=ann.headers, timeout=10).json()
    assert [(h["callId"], h["description"], h["totalTokens"], h["cost"]["amount"]) for h in calls["history"]] == [
        ("vcall_1", "vapi call with Sales, 1 min 30 s", 0, 68),
        ("rtc_1", "Call with Support: 2 responses, 120 tokens, 2 min 05 s", 120, 90),
    ]
    paged = requests.get(url, params={"groupBy": "call", "pageSize": "1"}, headers=ann.headers, timeout=10).json()
    rest = requests.get(url, params={"groupBy": "call", "pageSize": "1", "pageToken": paged["nextPageToken"]},
                        headers=ann.headers, timeout=10).json()
    assert [h["callId"] for h in paged["history"] + rest["history"]] == ["vcall_1", "rtc_1"]

    db.collection("openaiAssistants").document("o-sup").delete()
    after = requests.get(url, params={"groupBy": "call"}, headers=ann.headers, timeout=10).json()
    assert after["history"][1]["description"].startswith("Call with a deleted assistant:")
    bad = requests.get(url, params={"groupBy": "minute"}, headers=ann.headers, timeout=10)
    assert bad.status_code == 400 and bad.json()["error"]["details"][0]["field"] == "groupBy"
