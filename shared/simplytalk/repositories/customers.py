"""Stripe customers: a user's Stripe state and the customer -> user lookup.

Documents:
- `users/{uid}`: the user's Stripe fields, merged into the profile (the rest of it is not ours):
  `stripeCustomerId`, `setupIntentId` (the open SetupIntent handed out until it is used),
  `hasPaymentMethod` and `paymentMethodFrom` (the `created` time of the SetupIntent whose card is
  the default, so a late event about an older card never replaces a newer one), and the
  subscription: `stripeSubscriptionId`, `subscriptionStatus` (Stripe's), `isSubscribed`,
  `subscriptionAttempts` (the idempotency key of the next create).
- `stripeCustomers/{customerId}`: `{userId, createdAt}`, how a webhook finds the user. Written in
  ONE batch with `users/{uid}.stripeCustomerId`, so neither exists without the other.
- `openaiAssistants/{id}.isSubscribed`: a copy of the user's `isSubscribed` on each of their
  assistants (what a call checks), updated one by one: a deleted assistant is skipped, never
  recreated as a stub.

`FirestoreCustomers` is the production implementation, `InMemoryCustomers` the same contract in
memory for the unit tests.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from simplytalk import collections as col
from simplytalk.ids import valid_document_id

if TYPE_CHECKING:
    from google.cloud.firestore import Client


@dataclass(frozen=True)
class StripeProfile:
    """What `users/{uid}` says about the user's Stripe state (absent or unreadable fields: None/False)."""

    uid: str
    email: str | None = None
    customer_id: str | None = None
    setup_intent_id: str | None = None
    has_payment_method: bool = False
    payment_method_from: int | None = None  # `created` of the SetupIntent whose card is the default
    subscription_id: str | None = None
    subscription_status: str | None = None
    subscription_attempts: int = 0
    is_subscribed: bool = False
    assistant_ids: tuple[str, ...] = ()  # users/{uid}.openaiAssistants (they copy isSubscribed)


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def profile_of(uid: str, data: dict[str, Any]) -> StripeProfile:
    """The codec: a `users/{uid}` document's Stripe fields."""
    applied = data.get("paymentMethodFrom")
    assistants = data.get("openaiAssistants")
    return StripeProfile(
        uid=uid, email=data["email"] if isinstance(data.get("email"), str) else None,
        customer_id=_text(data.get("stripeCustomerId")), setup_intent_id=_text(data.get("setupIntentId")),
        has_payment_method=data.get("hasPaymentMethod") is True,
        payment_method_from=applied if isinstance(applied, int) else None,
        subscription_id=_text(data.get("stripeSubscriptionId")),
        subscription_status=_text(data.get("subscriptionStatus")),
        subscription_attempts=int(data.get("subscriptionAttempts") or 0),
        is_subscribed=data.get("isSubscribed") is True,
        assistant_ids=tuple(a for a in assistants if isinstance(a, str)) if isinstance(assistants, list) else ())


def _subscription_fields(subscription_id: str, status: str | None, subscribed: bool) -> dict[str, Any]:
    return {"stripeSubscriptionId": subscription_id, "subscriptionStatus": status, "isSubscribed": subscribed}


class Customers(Protocol):
    def profile(self, uid: str) -> StripeProfile:
        """The user's Stripe state (an empty one when the user has no profile)."""
        ...

    def link_customer(self, uid: str, customer_id: str, now: dt.datetime) -> None:
        """Record the user's Stripe customer and its lookup (`stripeCustomers`) atomically."""
        ...

    def user_of(self, customer_id: str | None) -> str | None:
        """The user a Stripe customer belongs to; None when unknown (or not a document id)."""
        ...

    def set_setup_intent(self, uid: str, intent_id: str) -> None: ...

    def set_payment_method(self, uid: str, created: int) -> None:
        """The user has a default card, from the SetupIntent created at `created`."""
        ...

    def set_subscription_attempts(self, uid: str, attempts: int) -> None: ...

    def set_subscription(self, profile: StripeProfile, subscription_id: str, status: str | None,
                         subscribed: bool) -> None:
        """The user's subscription state, and `isSubscribed` on each of the assistants `profile` lists."""
        ...


# -- Firestore --------------------------------------------------------------------------------------

class FirestoreCustomers:
    def __init__(self, db: Client) -> None:
        self.db = db

    def _user(self, uid: str) -> Any:
        return self.db.collection(col.USERS).document(uid)

    def profile(self, uid: str) -> StripeProfile:
        return profile_of(uid, self._user(uid).get().to_dict() or {})

    def link_customer(self, uid: str, customer_id: str, now: dt.datetime) -> None:
        batch = self.db.batch()
        batch.set(self._user(uid), {"stripeCustomerId": customer_id}, merge=True)
        batch.set(self.db.collection(col.STRIPE_CUSTOMERS).document(customer_id), {"userId": uid, "createdAt": now})
        batch.commit()

    def user_of(self, customer_id: str | None) -> str | None:
        if not customer_id or not valid_document_id(customer_id):
            return None
        snap = self.db.collection(col.STRIPE_CUSTOMERS).document(customer_id).get()
        uid = (snap.to_dict() or {}).get("userId") if snap.exists else None
        return uid if isinstance(uid, str) else None

    def set_setup_intent(self, uid: str, intent_id: str) -> None:
        self._user(uid).set({"setupIntentId": intent_id}, merge=True)

    def set_payment_method(self, uid: str, created: int) -> None:
        self._user(uid).set({"hasPaymentMethod": True, "paymentMethodFrom": created}, merge=True)

    def set_subscription_attempts(self, uid: str, attempts: int) -> None:
        self._user(uid).set({"subscriptionAttempts": attempts}, merge=True)

    def set_subscription(self, profile: StripeProfile, subscription_id: str, status: str | None,
                         subscribed: bool) -> None:
        from google.api_core import exceptions as gexc

        self._user(profile.uid).set(_subscription_fields(subscription_id, status, subscribed), merge=True)
        for assistant_id in profile.assistant_ids:
            # one update each: a deleted assistant is skipped, never recreated as a stub
            with contextlib.suppress(gexc.NotFound, ValueError):
                self.db.collection(col.OPENAI_ASSISTANTS).document(assistant_id).update({"isSubscribed": subscribed})


# -- in memory ----------------------------------------------------------------------------------------

@dataclass
class InMemoryCustomers:
    """`users/{uid}` documents (only what they hold of ours, plus `email` and `openaiAssistants`),
    the customer lookup and the assistants' `isSubscribed`, in dicts."""

    users: dict[str, dict[str, Any]] = field(default_factory=dict)
    customers: dict[str, str] = field(default_factory=dict)  # customerId -> uid
    assistants: dict[str, bool] = field(default_factory=dict)  # openaiAssistants/{id}.isSubscribed
    lock: threading.RLock = field(default_factory=threading.RLock)

    def add_user(self, uid: str, **fields: Any) -> None:
        """A profile, as `init-user` and the assistants' service leave it (for tests)."""
        with self.lock:
            self.users.setdefault(uid, {}).update(fields)
            for assistant_id in fields.get("openaiAssistants") or []:
                self.assistants.setdefault(assistant_id, False)

    def _merge(self, uid: str, fields: dict[str, Any]) -> None:
        with self.lock:
            self.users.setdefault(uid, {}).update(fields)

    def profile(self, uid: str) -> StripeProfile:
        with self.lock:
            return profile_of(uid, dict(self.users.get(uid, {})))

    def link_customer(self, uid: str, customer_id: str, now: dt.datetime) -> None:
        with self.lock:
            self._merge(uid, {"stripeCustomerId": customer_id})
            self.customers[customer_id] = uid

    def user_of(self, customer_id: str | None) -> str | None:
        if not customer_id or not valid_document_id(customer_id):
            return None
        with self.lock:
            return self.customers.get(customer_id)

    def set_setup_intent(self, uid: str, intent_id: str) -> None:
        self._merge(uid, {"setupIntentId": intent_id})

    def set_payment_method(self, uid: str, created: int) -> None:
        self._merge(uid, {"hasPaymentMethod": True, "paymentMethodFrom": created})

    def set_subscription_attempts(self, uid: str, attempts: int) -> None:
        self._merge(uid, {"subscriptionAttempts": attempts})

    def set_subscription(self, profile: StripeProfile, subscription_id: str, status: str | None,
                         subscribed: bool) -> None:
        with self.lock:
            self._merge(profile.uid, _subscription_fields(subscription_id, status, subscribed))
            for assistant_id in profile.assistant_ids:
                if assistant_id in self.assistants:  # a deleted one is skipped
                    self.assistants[assistant_id] = subscribed
