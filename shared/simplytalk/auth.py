"""Firebase ID token verification: the caller's uid and claims."""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from simplytalk.config import settings
from simplytalk.errors import Unauthenticated
from simplytalk.ids import valid_document_id

if TYPE_CHECKING:
    import firebase_admin


@dataclass(frozen=True)
class Caller:
    uid: str
    email: str | None = None
    claims: dict[str, Any] = field(default_factory=dict)

    @property
    def is_admin(self) -> bool:
        return self.claims.get("admin") is True


@functools.cache
def _firebase_app() -> firebase_admin.App:
    import firebase_admin

    cfg = settings()
    cfg.export_emulator_hosts()
    options = {"projectId": cfg.project_id}
    if cfg.auth_emulator_host:
        # Emulator tokens are unsigned; no credential is ever used to check them.
        from google.auth.credentials import AnonymousCredentials

        class _Anonymous(firebase_admin.credentials.Base):
            def get_credential(self) -> AnonymousCredentials:
                return AnonymousCredentials()

        return firebase_admin.initialize_app(_Anonymous(), options, name="simplytalk")
    return firebase_admin.initialize_app(options=options, name="simplytalk")


def bearer_token(authorization: str | None) -> str:
    if not authorization:
        raise Unauthenticated("missing Authorization header")
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthenticated("Authorization header must be 'Bearer <Firebase ID token>'")
    return token


CLOCK_SKEW_SECONDS = 5


def _check_lifetime(claims: dict[str, Any]) -> None:
    """firebase-admin skips `exp`/`iat` for emulator tokens; check them so local matches production."""
    now = time.time()
    exp, iat = claims.get("exp"), claims.get("iat")
    if not isinstance(exp, int | float) or exp < now - CLOCK_SKEW_SECONDS:
        raise Unauthenticated("invalid or expired ID token")
    if not isinstance(iat, int | float) or iat > now + CLOCK_SKEW_SECONDS:
        raise Unauthenticated("invalid or expired ID token")


def verify_id_token(token: str, check_revoked: bool = False) -> Caller:
    """The caller named by a Firebase ID token; Unauthenticated if it is not valid.

    `check_revoked` also asks Firebase Auth whether the account is disabled or its tokens
    were revoked since this one was issued (one Auth lookup): for admin and payment routes.
    """
    from firebase_admin import auth

    try:
        claims = auth.verify_id_token(token, app=_firebase_app(), check_revoked=check_revoked,
                                      clock_skew_seconds=CLOCK_SKEW_SECONDS)
    except auth.UserDisabledError as exc:
        raise Unauthenticated("the account is disabled") from exc
    except auth.RevokedIdTokenError as exc:
        raise Unauthenticated("the ID token was revoked; sign in again") from exc
    except (ValueError, auth.InvalidIdTokenError, auth.ExpiredIdTokenError, auth.CertificateFetchError,
            auth.UserNotFoundError) as exc:
        raise Unauthenticated("invalid or expired ID token") from exc
    if settings().auth_emulator_host:
        _check_lifetime(claims)
    uid = claims.get("uid") or claims.get("sub")
    if not isinstance(uid, str) or not valid_document_id(uid):  # it names documents: users/{uid}, ...
        raise Unauthenticated("ID token has no usable subject")
    return Caller(uid=uid, email=claims.get("email"), claims=claims)
