"""Per-user rate limits that hold across instances, and admin and payment routes that notice a
disabled account or a revoked token at once."""

from __future__ import annotations

import datetime as dt
import json
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import requests
from simplytalk.errors import LimitReached
from simplytalk.rate_limits import FirestoreRateLimiter, Limit

from devtools.emulator_auth import AuthUser, set_claims
from devtools.stack import Stack


def test_a_limit_holds_across_instances(db: Any, new_user: Any) -> None:
    uid = new_user().uid
    now = dt.datetime.now(dt.UTC).replace(second=1)  # well inside one window
    instances = [FirestoreRateLimiter(db, {"scrape": Limit(7, 60)}, lambda: now) for _ in range(6)]

    def take(i: int) -> bool:
        try:
            instances[i % len(instances)].take(uid, "scrape")
            return True
        except LimitReached as exc:
            assert exc.retry_after is not None and 1 <= exc.retry_after <= 60
            return False

    with ThreadPoolExecutor(12) as pool:
        admitted = sum(pool.map(take, range(30)))

    assert admitted == 7


def test_card_setup_over_its_limit_is_429_with_retry_after(stack: Stack, db: Any, new_user: Any) -> None:
    user = new_user()
    db.collection("users").document(user.uid).set({"email": user.email})
    url = stack.function_url("billing") + "/setup-intent"
    now = dt.datetime.now(dt.UTC)
    if now.minute == 59 and now.second > 30:  # the burst must fall in one (hourly) window
        time.sleep(61 - now.second)
    statuses = [requests.post(url, headers=user.headers, timeout=10).status_code for _ in range(12)]

    refused = requests.post(url, headers=user.headers, timeout=10)

    assert statuses == [201] * 12  # the test stack allows 12 an hour
    assert refused.status_code == 429, refused.text
    assert refused.json()["error"]["status"] == "RESOURCE_EXHAUSTED"
    assert 1 <= int(refused.headers["Retry-After"]) <= 3600


def _update_account(stack: Stack, uid: str, **fields: Any) -> None:
    req = urllib.request.Request(
        f"http://{stack.auth_host}/identitytoolkit.googleapis.com/v1/projects/{stack.project}/accounts:update",
        json.dumps({"localId": uid, **fields}).encode(),
        {"Content-Type": "application/json", "Authorization": "Bearer owner"}, method="POST")
    urllib.request.urlopen(req, timeout=10).close()


def test_a_revoked_token_loses_payment_and_admin_powers_at_once(stack: Stack, db: Any, new_user: Any) -> None:
    admin: AuthUser = set_claims(stack.auth_host, stack.project, new_user(), {"admin": True})
    db.collection("users").document(admin.uid).set({"email": admin.email})
    billing = stack.function_url("billing")
    card = {"tokensPerMinute": 60, "centsPerMinute": "45"}
    assert requests.get(billing + "/subscription", headers=admin.headers, timeout=10).status_code == 200
    time.sleep(1.1)  # tokens issued before this second are revoked below

    _update_account(stack, admin.uid, validSince=str(int(time.time())))

    for method, path, body in [("POST", "/setup-intent", None), ("POST", "/subscription", None),
                               ("DELETE", "/subscription", None), ("POST", "/rate-cards", card)]:
        response = requests.request(method, billing + path, json=body, headers=admin.headers, timeout=10)
        assert response.status_code == 401, (path, response.text)
        assert "revoked" in response.json()["error"]["message"]
    # reading stays possible until the token expires (no Auth lookup on every read)
    assert requests.get(billing + "/subscription", headers=admin.headers, timeout=10).status_code == 200


def test_a_disabled_account_cannot_set_up_payment(stack: Stack, db: Any, new_user: Any) -> None:
    user = new_user()
    db.collection("users").document(user.uid).set({"email": user.email})

    _update_account(stack, user.uid, disableUser=True)

    response = requests.post(stack.function_url("billing") + "/setup-intent", headers=user.headers, timeout=10)
    assert response.status_code == 401 and "disabled" in response.json()["error"]["message"]
