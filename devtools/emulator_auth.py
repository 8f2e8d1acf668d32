"""Users and ID tokens from the Auth emulator (tests, `make run`, benchmarks)."""

from __future__ import annotations

import base64
import json
import time
import urllib.request
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class AuthUser:
    uid: str
    email: str
    id_token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.id_token}"}


def _post(url: str, body: dict[str, Any], headers: dict[str, str] | None = None) -> dict[str, Any]:
    req = urllib.request.Request(url, json.dumps(body).encode(),
                                 {"Content-Type": "application/json", **(headers or {})}, method="POST")
    with urllib.request.urlopen(req, timeout=10) as resp:
        result: dict[str, Any] = json.loads(resp.read() or b"{}")
        return result


def sign_up(auth_host: str, email: str, password: str = "correct-horse-1") -> AuthUser:
    """A new Auth emulator account and its ID token (the emulator accepts any API key)."""
    data = _post(f"http://{auth_host}/identitytoolkit.googleapis.com/v1/accounts:signUp?key=local",
                 {"email": email, "password": password, "returnSecureToken": True})
    return AuthUser(uid=data["localId"], email=email, id_token=data["idToken"])


def set_claims(auth_host: str, project: str, user: AuthUser, claims: dict[str, Any],
               password: str = "correct-horse-1") -> AuthUser:
    """Set custom claims (`Bearer owner` is the emulator's admin) and sign in again for a fresh token."""
    _post(f"http://{auth_host}/identitytoolkit.googleapis.com/v1/projects/{project}/accounts:update",
          {"localId": user.uid, "customAttributes": json.dumps(claims)}, {"Authorization": "Bearer owner"})
    data = _post(f"http://{auth_host}/identitytoolkit.googleapis.com/v1/accounts:signInWithPassword?key=local",
                 {"email": user.email, "password": password, "returnSecureToken": True})
    return AuthUser(uid=user.uid, email=user.email, id_token=data["idToken"])


def unsigned_token(project: str, uid: str, **claims: Any) -> str:
    """An emulator-style token (alg none), as the Firebase rules unit-testing library builds them."""
    now = int(time.time())
    payload = {"iss": f"https://securetoken.google.com/{project}", "aud": project, "sub": uid,
               "user_id": uid, "iat": now, "auth_time": now, "exp": now + 3600,
               "firebase": {"sign_in_provider": "custom", "identities": {}}, **claims}

    def enc(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    return f"{enc({'alg': 'none', 'typ': 'JWT'})}.{enc(payload)}."
