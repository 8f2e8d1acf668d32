from __future__ import annotations

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
    assert response.json() == {"userId": user.uid,
                               "totals": {"totalTokens": 0, "inputTokens": 0, "outputTokens": 0}}


def test_totals_are_the_callers_own(url: str, db: Any, new_user: Any) -> None:
    ann, bob = new_user(), new_user()
    db.collection("tokenUsage").document(ann.uid).set(
        {"userId": ann.uid, "totalTokens": 90, "inputTokens": 60, "outputTokens": 30})
    db.collection("tokenUsage").document(bob.uid).set(
        {"userId": bob.uid, "totalTokens": 7, "inputTokens": 3, "outputTokens": 4})

    assert requests.get(url + "/", headers=ann.headers, timeout=10).json()["totals"] == {
        "totalTokens": 90, "inputTokens": 60, "outputTokens": 30}
    assert requests.get(url, headers=bob.headers, timeout=10).json()["totals"]["totalTokens"] == 7


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
