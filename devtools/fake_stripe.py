"""A local Stripe for tests and `make run` that speaks the API version the installed stripe-python pins.

Which Stripe: `stripe.api_version` of the installed SDK (stripe-python 16.1.0: `2026-10-28.endive`). The
SDK is read at start-up and is the reference, so the fake follows it when it is upgraded:

* Parameters. Every request's form parameters are checked against the SDK's own TypedDict for that
  endpoint (the `params` type of the SDK service method that calls that METHOD and path), found by
  typing introspection (`get_type_hints(include_extras=True)`, `NotRequired`/`Required`), recursively:
  nested hashes, arrays, metadata hashes, enum literals (the SDK's open `Literal | str` enums are
  checked against the literals, as Stripe does), integers, booleans, decimals. An unknown parameter is
  a 400 `parameter_unknown` ("Received unknown parameter: x", nested as `a[b]`), a missing required
  one a 400 `parameter_missing`, a malformed value a 400 naming it. A parameter the SDK accepts but
  this fake does not emulate is a 400 that says so (never silently ignored).
* Versions. `Stripe-Version` is read on every request (the SDK always sends one; none means the pinned
  version); a version not in KNOWN_VERSIONS (the pin and Stripe's releases before it) is a 400. From
  2026-09-30, `payment_method_types` on setup intents is a 400 `payment_method_types_no_longer_supported`
  (use `allowed_payment_method_types`, `automatic_payment_methods` or `payment_method_configuration`);
  older versions may still send it.
  Otherwise every version gets the pinned version's objects. Events carry the version of the request
  that caused them (the pinned one for the fake's own background work).
* Objects carry every field of the SDK's resource class (null where Stripe has nothing);
  `deleted: true` only on deleted objects; includable fields (customer `cash_balance`,
  `invoice_credit_balance`, `sources`, `subscriptions`, `tax`, `tax_ids`; invoice `confirmation_secret`,
  `payments`; price `currency_options`, `tiers`; plan `tiers`) only when `expand[]` asks, as Stripe
  does. `expand[]` also replaces ids of the fake's objects with the objects (up to 4 levels, `data.`
  for lists).
* Lists page as Stripe's: newest first (invoice lines in order), `limit` 1..100 (default 10, else 400),
  `starting_after` / `ending_before` (an unknown cursor is a 400), `has_more`, `url`.
* Invoices: `auto_advance` defaults to false; with it, a draft is finalized by the fake at
  `automatically_finalizes_at` (created + 1 hour unless given). At most 250 line items (invoice items
  with `invoice=`, `add_lines`, only on drafts). On finalization the customer's `balance` becomes the
  `starting_balance` (amount due = total + starting balance); an amount due of 0 is paid at once; an
  amount due above 0 and below the currency's minimum charge (50 usd cents) is not charged: the invoice
  is marked paid with `amount_paid` 0 and the amount is carried to the customer's balance. A finalized
  auto-advancing `charge_automatically` invoice is charged `--autopay-delay` seconds later when a
  payment method is found (the invoice's, the subscription's, the customer's default); a decline
  raises `attempt_count` and emits `invoice.payment_failed` (no automatic retries). Void only open
  invoices; pay finalizes drafts; delete only drafts.
* Subscriptions: any `price_...` id not otherwise known is 1000 usd cents a month (`price_data` makes
  its own). Creation makes and finalizes the first invoice and charges it: paid -> `active`; declined or
  no payment method -> `incomplete` with `latest_invoice` open (Stripe's default `allow_incomplete`),
  `incomplete_expired` (invoice voided) 23 hours later unless paid; `default_incomplete` does not
  charge; `error_if_incomplete` creates nothing and answers the decline (402). Paying the latest invoice
  makes it `active`. At the period end the fake renews it (a draft invoice finalized an hour later, then
  charged; a decline makes it `past_due`) or, with `cancel_at_period_end`, ends it. Cancel -> `canceled`.
* Setup intents: `automatic_payment_methods` (on by default), `allowed_payment_method_types`,
  `excluded_payment_method_types` or `payment_method_configuration` decide `payment_method_types`
  (the fake's account offers card). Confirm with a test card (below), cancel.
* Idempotency: the first response of a key, errors included, is replayed with `Idempotent-Replayed:
  true`; the key with other parameters or another endpoint is a 400 `idempotency_error`; while the first
  request is in flight, a 409 `idempotency_error` (the SDK raises APIError for it, and retries it).
  Requests refused before they run (authentication, version, parameters, injected faults) are not
  saved, so the SDK's retries work. Keys longer than 255 characters are refused.
* Errors have Stripe's body `{"error": {"type", "message", "code", "param", "doc_url", ...}}` and status
  (400/404 invalid_request_error, 401, 402 card_error, 409, 429 rate_limit, 500 api_error).
* Events are `stripe.Event`s, signed with the configured secret (`Stripe-Signature: t=...,v1=...`) and
  delivered to the configured URL one at a time in the order they happened; a failed delivery is retried
  (5 attempts, backing off) while later events go on.

Test cards (setup intent confirm `payment_method`): `pm_card_visa` and any `pm_card_<brand>` succeed;
names containing `chargeDeclined` are saved but decline when charged (`...InsufficientFunds`,
`...ExpiredCard`, `...IncorrectCvc`, `...ProcessingError`, `...Fraudulent`, `...LostCard`,
`...StolenCard` give that decline; else `generic_decline`).

Clock: the fake's time is real time plus an offset that `POST /_fake/clock` moves forward; every
`created`, period and due time uses it, and work that comes due (auto-finalization, collection,
expiry, renewal) runs in order as the clock passes it.

Test-only controls (JSON bodies): `POST /_fake/webhook` {url, secret}; `GET /_fake/stats` (counts per
"METHOD v1/resource/{id}/action" and "requests"); `DELETE /_fake/data` (everything but the webhook);
`DELETE /_fake/idempotency` (keys forgotten, as after 24 hours); `GET /_fake/events`; `GET /_fake/clock`
-> {now}; `POST /_fake/clock` {advance: seconds} -> {now, ran}; `POST /_fake/faults` {status?, delay?,
count?, method?, path?, saved?} (the next `count` matching requests answer that status, or run `delay`
seconds late while their idempotency key is in flight; `path` a prefix or a glob; with `saved` the error
is kept under the request's idempotency key and replayed, as Stripe does for a 500 once an endpoint
started); `DELETE /_fake/faults`.

localstripe (PyPI) was probed first: it lacks idempotency, invoice finalization, hosted invoice URLs
and invoices from pending items, which this backend relies on.

Hosted invoice pages (`hosted_invoice_url`, `GET /i/{id}`) are a plain summary.

Run: `python -m devtools.fake_stripe --port 12111 [--autopay-delay 0.2]`.
"""

from __future__ import annotations

import argparse
import calendar
import contextlib
import copy
import dataclasses
import datetime as dt
import decimal
import fnmatch
import functools
import hashlib
import heapq
import html
import inspect
import itertools
import json
import logging
import re
import secrets
import threading
import time
import types
import typing
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal, Union, get_args, get_origin

import stripe
import typing_extensions
from stripe._request_options import RequestOptions
from stripe._stripe_context import StripeContext
from stripe._stripe_object import StripeObject
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

Obj = dict[str, Any]
log = logging.getLogger("fake_stripe")

API_VERSION: str = stripe.api_version
KNOWN_VERSIONS = frozenset({
    API_VERSION, "2026-09-30.endive",
    "2025-12-15.clover", "2025-11-17.clover", "2025-10-29.clover", "2025-09-30.clover",
    "2025-08-27.basil", "2025-07-30.basil", "2025-06-30.basil", "2025-05-28.basil", "2025-04-30.basil",
    "2025-03-31.basil", "2025-02-24.acacia", "2025-01-27.acacia", "2024-12-18.acacia", "2024-11-20.acacia",
    "2024-10-28.acacia", "2024-09-30.acacia",
    "2024-06-20", "2024-04-10", "2023-10-16", "2023-08-16", "2022-11-15", "2022-08-01", "2020-08-27",
    "2020-03-02", "2019-12-03", "2019-11-05", "2019-10-17", "2019-10-08", "2019-09-09", "2019-08-14",
    "2019-05-16", "2019-03-14", "2019-02-19",
})


@dataclasses.dataclass(frozen=True)
class Removed:
    """A parameter a version removed: refused from `since`, still accepted (as `hint`) before."""

    since: str
    code: str
    message: str
    hint: Any


_PMT_GONE = Removed(
    "2026-09-30", "payment_method_types_no_longer_supported",
    "`payment_method_types` is no longer supported on SetupIntents in API versions 2026-09-30 and later. "
    "Use `allowed_payment_method_types`, `automatic_payment_methods` or `payment_method_configuration`.",
    list[str])
REMOVED_PARAMS: dict[tuple[str, str], dict[str, Removed]] = {
    ("POST", "/v1/setup_intents"): {"payment_method_types": _PMT_GONE},
    ("POST", "/v1/setup_intents/{intent}"): {"payment_method_types": _PMT_GONE},
}
# Fields Stripe leaves out unless `expand[]` names them ("includable").
INCLUDABLE: dict[str, tuple[str, ...]] = {
    "customer": ("cash_balance", "invoice_credit_balance", "sources", "subscriptions", "tax", "tax_ids"),
    "invoice": ("confirmation_secret", "payments"),
    "price": ("currency_options", "tiers"),
    "plan": ("tiers",),
}
MINIMUM_CHARGE = {"usd": 50, "aud": 50, "brl": 50, "cad": 50, "chf": 50, "dkk": 250, "eur": 50, "gbp": 30,
                  "hkd": 400, "inr": 50, "jpy": 50, "mxn": 1000, "nok": 300, "nzd": 50, "pln": 200, "sek": 300,
                  "sgd": 50}
MAX_INVOICE_LINES = 250
AUTO_FINALIZE_AFTER = 3600
INCOMPLETE_EXPIRES_AFTER = 23 * 3600
DEFAULT_PRICE = (1000, "usd", "month")
ACCOUNT_PAYMENT_METHOD_TYPES = ["card"]
DEFAULT_PAYMENT_METHOD_CONFIGURATION = "pmc_fake_default"
DECLINES = {  # test card name part -> (decline_code, code, message)
    "InsufficientFunds": ("insufficient_funds", "card_declined", "Your card has insufficient funds."),
    "ExpiredCard": ("expired_card", "expired_card", "Your card has expired."),
    "IncorrectCvc": ("incorrect_cvc", "incorrect_cvc", "Your card's security code is incorrect."),
    "ProcessingError": ("processing_error", "processing_error",
                        "An error occurred while processing your card. Try again in a little bit."),
    "Fraudulent": ("fraudulent", "card_declined", "Your card was declined."),
    "LostCard": ("lost_card", "card_declined", "Your card was declined."),
    "StolenCard": ("stolen_card", "card_declined", "Your card was declined."),
}
NO_PAYMENT_METHOD = ("This customer has no attached payment source or default payment method. Please consider "
                     "adding a default payment method.")


# -- errors ------------------------------------------------------------------------------------------
class StripeError(Exception):
    """An error answered in Stripe's shape. `saved`: whether an idempotency key keeps it (Stripe saves
    results only once the endpoint began executing)."""

    def __init__(self, status: int, message: str, *, kind: str = "invalid_request_error", code: str | None = None,
                 param: str | None = None, decline_code: str | None = None, saved: bool = True) -> None:
        super().__init__(message)
        self.status, self.message, self.kind, self.code, self.param = status, message, kind, code, param
        self.decline_code, self.saved = decline_code, saved

    def body(self, request_id: str | None = None) -> Obj:
        error: Obj = {"type": self.kind, "message": self.message}
        if self.code:
            error["code"] = self.code
            error["doc_url"] = f"https://stripe.com/docs/error-codes/{self.code.replace('_', '-')}"
        if self.decline_code:
            error["decline_code"] = self.decline_code
        if self.param:
            error["param"] = self.param
        if request_id:
            error["request_log_url"] = f"https://dashboard.stripe.com/test/logs/{request_id}"
        return {"error": error}


def _refused(param: str, message: str, code: str | None = None) -> StripeError:
    return StripeError(400, message, code=code, param=param, saved=False)


def unknown_param(name: str) -> StripeError:
    return _refused(name, f"Received unknown parameter: {name}", "parameter_unknown")


def missing_param(name: str) -> StripeError:
    return _refused(name, f"Missing required param: {name}.", "parameter_missing")


def not_emulated(name: str, endpoint: str) -> StripeError:
    return _refused(name, f"The fake Stripe does not emulate `{name}` on {endpoint} (Stripe accepts it; "
                          "add it to devtools/fake_stripe.py if you need it).")


# -- form decoding -----------------------------------------------------------------------------------
_KEY = re.compile(r"[^\[\]]+(\[[^\[\]]*\])*")


def decode_form(pairs: Iterable[tuple[str, str]]) -> Obj:
    """`a[b][0][c]=v` -> {"a": {"b": {"0": {"c": "v"}}}} (Stripe's encoding; `a[]` appends). Arrays stay
    hashes with index keys until the SDK's type for the parameter says they are arrays."""
    root: Obj = {}
    for key, value in pairs:
        if not _KEY.fullmatch(key):
            raise _refused(key, f"Invalid parameter name: {key}")
        head, _, rest = key.partition("[")
        parts = [head, *(rest[:-1].split("][") if rest else [])]
        node = root
        for i, part in enumerate(parts):
            name = part or str(len(node))
            if i == len(parts) - 1:
                if isinstance(node.get(name), dict):
                    raise _refused(head, f"Invalid hash: {key}")
                node[name] = value
            else:
                child = node.setdefault(name, {})
                if not isinstance(child, dict):
                    raise _refused(head, f"Invalid hash: {key}")
                node = child
    return root


# -- the SDK's parameter types -----------------------------------------------------------------------
_OPTION_KEYS = frozenset(RequestOptions.__annotations__)
_HINT_NAMES = {"StripeContext": StripeContext, "Mapping": typing.Mapping}
_NOT_REQUIRED = {typing.NotRequired, typing_extensions.NotRequired}
_REQUIRED = {typing.Required, typing_extensions.Required}
_NONE = type(None)


@functools.cache
def typed_fields(params: type) -> tuple[dict[str, Any], frozenset[str]]:
    """A parameter TypedDict's fields (unwrapped annotations) and which of them are required."""
    hints = typing_extensions.get_type_hints(params, include_extras=True, localns=_HINT_NAMES)
    options = RequestOptions in getattr(params, "__orig_bases__", ())
    total = getattr(params, "__total__", True)
    fields: dict[str, Any] = {}
    required: set[str] = set()
    for name, hint in hints.items():
        if options and name in _OPTION_KEYS:  # the SDK's request options, never sent as parameters
            continue
        origin = get_origin(hint)
        if origin in _NOT_REQUIRED:
            fields[name] = get_args(hint)[0]
        elif origin in _REQUIRED:
            fields[name] = get_args(hint)[0]
            required.add(name)
        else:
            fields[name] = hint
            if total:
                required.add(name)
    return fields, frozenset(required)


def _show(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _one_of(values: Iterable[Any]) -> str:
    shown = [str(v).lower() if isinstance(v, bool) else str(v) for v in values]
    return shown[0] if len(shown) == 1 else ", ".join(shown[:-1]) + f", or {shown[-1]}"


def _try_order(hint: Any) -> int:
    origin = get_origin(hint)
    if origin is Literal:
        return 0
    if hint in (int, bool, float, decimal.Decimal):
        return 1
    return 3 if hint is str else 2


def coerce(value: Any, hint: Any, path: str) -> Any:
    """`value` (decoded form) as the SDK type `hint` says, or the 400 Stripe answers."""
    origin, args = get_origin(hint), get_args(hint)
    if hint is Any:
        return value
    if origin in _NOT_REQUIRED or origin in _REQUIRED or origin is typing.Annotated:
        return coerce(value, args[0], path)
    if origin is Union or origin is types.UnionType:
        return _coerce_union(value, args, path)
    if origin is Literal:
        for option in args:
            text = ("true" if option else "false") if isinstance(option, bool) else str(option)
            if value == text:
                return option
        raise _refused(path, f"Invalid {path}: must be one of {_one_of(args)}")
    if origin is list:
        if not isinstance(value, dict) or not all(k.isdigit() for k in value):
            raise _refused(path, f"Invalid array: {path}")
        return [coerce(value[k], args[0] if args else Any, f"{path}[{k}]") for k in sorted(value, key=int)]
    if typing_extensions.is_typeddict(hint):
        if not isinstance(value, dict):
            raise _refused(path, f"Invalid hash: {path}")
        return _coerce_object(value, hint, path)
    if (isinstance(origin, type) and issubclass(origin, Mapping | StripeObject)) or hint is dict:
        if not isinstance(value, dict):
            raise _refused(path, f"Invalid hash: {path}")
        if path.rsplit("[", 1)[-1].rstrip("]") == "metadata":
            _check_metadata(value, path)
        return {k: coerce(v, args[-1] if args else Any, f"{path}[{k}]") for k, v in value.items()}
    if hint is str:
        if not isinstance(value, str):
            raise _refused(path, f"Invalid string: {_show(value)}")
        return value
    if hint is bool:
        if value in ("true", "false"):
            return value == "true"
        raise _refused(path, f"Invalid boolean: {_show(value)}")
    if hint is int:
        if isinstance(value, str) and re.fullmatch(r"-?\d+", value):
            return int(value)
        raise _refused(path, f"Invalid integer: {_show(value)}", "parameter_invalid_integer")
    if hint in (float, decimal.Decimal):
        if isinstance(value, str) and re.fullmatch(r"-?\d+(\.\d+)?", value):
            return hint(value)
        raise _refused(path, f"Invalid decimal: {_show(value)}")
    return value


def _coerce_union(value: Any, args: tuple[Any, ...], path: str) -> Any:
    options = [a for a in args if a is not _NONE]
    enum = [v for a in options if get_origin(a) is Literal for v in get_args(a) if v != ""]
    if enum:  # the SDK's enums are `Literal[...] | str` (open for newer values); Stripe checks the values
        options = [a for a in options if a is not str]
    errors: list[StripeError] = []
    for option in sorted(options, key=_try_order):
        try:
            return coerce(value, option, path)
        except StripeError as exc:
            errors.append(exc)
    if enum and isinstance(value, str):
        raise _refused(path, f"Invalid {path}: must be one of {_one_of(enum)}")
    raise errors[-1] if errors else _refused(path, f"Invalid {path}")


def _coerce_object(value: Obj, params: type, path: str) -> Obj:
    fields, required = typed_fields(params)
    out: Obj = {}
    for key, raw in value.items():
        name = f"{path}[{key}]"
        if key not in fields:
            raise unknown_param(name)
        out[key] = coerce(raw, fields[key], name)
    for key in sorted(required - value.keys()):
        raise missing_param(f"{path}[{key}]")
    return out


def _check_metadata(value: Obj, path: str) -> None:
    if len(value) > 50:
        raise _refused(path, "Invalid metadata: metadata can have up to 50 keys.")
    for key, item in value.items():
        if len(key) > 40:
            raise _refused(f"{path}[{key}]", "Metadata keys can have up to 40 characters.")
        if isinstance(item, str) and len(item) > 500:
            raise _refused(f"{path}[{key}]", "Metadata values can have up to 500 characters.")


@dataclasses.dataclass(frozen=True)
class Endpoint:
    """One SDK service method: its METHOD, path template and parameter TypedDict."""

    method: str
    template: str
    params: type
    sdk: str

    @property
    def segments(self) -> list[str]:
        return self.template.strip("/").split("/")

    def validate(self, raw: Obj, version: str) -> Obj:
        """The request's parameters as the SDK types them (see `coerce`)."""
        fields, required = typed_fields(self.params)
        removed = REMOVED_PARAMS.get((self.method, self.template), {})
        out: Obj = {}
        for key, value in raw.items():
            if key in removed and key not in fields:
                rule = removed[key]
                if version[:10] >= rule.since:
                    raise _refused(key, rule.message, rule.code)
                out[key] = coerce(value, rule.hint, key)
                continue
            if key not in fields:
                raise unknown_param(key)
            out[key] = coerce(value, fields[key], key)
        for key in sorted(required - raw.keys()):
            raise missing_param(key)
        return out


SERVICES = (stripe.CustomerService, stripe.SetupIntentService, stripe.SubscriptionService, stripe.InvoiceService,
            stripe.InvoiceItemService, stripe.InvoiceLineItemService, stripe.EventService)
_SDK_CALL = re.compile(r'self\._request\(\s*"(get|post|delete)",\s*"(/v1/[^"]*)"')
_SDK_PARAMS = re.compile(r'params:\s*(?:Optional\[)?"(\w+Params)"')


@functools.cache
def sdk_endpoints() -> dict[tuple[str, str], Endpoint]:
    """(METHOD, path template) -> Endpoint, read from the SDK's service methods."""
    found: dict[tuple[str, str], Endpoint] = {}
    for service in SERVICES:
        for name, function in inspect.getmembers(service, inspect.isfunction):
            if name.startswith("_") or name.endswith("_async"):
                continue
            source = inspect.getsource(function)
            call, params = _SDK_CALL.search(source), _SDK_PARAMS.search(source)
            if call and params:
                method = call[1].upper()
                found[(method, call[2])] = Endpoint(method, call[2], getattr(stripe.params, params[1]),
                                                    f"{service.__name__}.{name}")
    return found


# -- routes ------------------------------------------------------------------------------------------
Handler = Callable[..., Any]
_ROUTES: dict[tuple[str, str], tuple[str, frozenset[str]]] = {}


def route(method: str, template: str, honors: str = "") -> Callable[[Handler], Handler]:
    """Serve an SDK endpoint; `honors`: the parameters the fake emulates (others the SDK allows are a 400)."""
    def mark(function: Handler) -> Handler:
        _ROUTES[(method, template)] = (function.__name__, frozenset(honors.split()) | {"expand"})
        return function
    return mark


@dataclasses.dataclass
class Ctx:
    """Who asked: the request's version, id and idempotency key (none for the fake's own work)."""

    version: str = API_VERSION
    request_id: str | None = None
    key: str | None = None


@dataclasses.dataclass
class Card:
    customer: str | None
    brand: str
    last4: str
    decline: tuple[str, str, str] | None


@dataclasses.dataclass
class Fault:
    status: int | None
    delay: float
    count: int
    method: str | None
    path: str | None
    saved: bool = False  # kept under the request's idempotency key, as Stripe keeps a 500 it answered

    def matches(self, method: str, path: str) -> bool:
        """`path` is a prefix, or a glob when it has a `*` (`/v1/invoices/*/add_lines`)."""
        if self.path is not None and not (fnmatch.fnmatchcase(path, self.path) if "*" in self.path
                                          else path.startswith(self.path)):
            return False
        return self.method is None or self.method == method

    def error(self) -> StripeError:
        if self.status == 429:
            return StripeError(429, "Request rate limit exceeded. Learn more about rate limits here "
                                    "https://stripe.com/docs/rate-limits.", code="rate_limit", saved=False)
        if self.status == 401:
            return StripeError(401, "Invalid API Key provided.", saved=False)
        if self.status and self.status < 500:
            return StripeError(self.status, f"Injected fault ({self.status}).", saved=self.saved)
        return StripeError(self.status or 500, "An unknown error occurred. Please try again later.",
                           kind="api_error", saved=self.saved)


@dataclasses.dataclass
class Entry:
    """An idempotency key: what it was first used for, and its response once there is one."""

    endpoint: str
    fingerprint: str
    request_id: str
    response: tuple[int, Any] | None = None


@dataclasses.dataclass(order=True)
class Task:
    due: float
    seq: int
    kind: str = dataclasses.field(compare=False)
    oid: str = dataclasses.field(compare=False)


def _add_interval(ts: int, interval: str, count: int) -> int:
    if interval in ("day", "week"):
        return ts + count * 86400 * (7 if interval == "week" else 1)
    when = dt.datetime.fromtimestamp(ts, dt.UTC)
    months = when.month - 1 + count * (12 if interval == "year" else 1)
    year, month = when.year + months // 12, months % 12 + 1
    return int(when.replace(year=year, month=month, day=min(when.day, calendar.monthrange(year, month)[1]))
               .timestamp())


def _metadata(current: Obj, given: Any) -> Obj:
    """Stripe's metadata update: "" clears all, a "" value removes that key."""
    if given == "":
        return {}
    merged = {**current, **given}
    return {k: v for k, v in merged.items() if v != ""}


class FakeStripe:
    def __init__(self, public_url: str = "http://127.0.0.1", autopay_delay: float = 0.2) -> None:
        self.public_url = public_url
        self.autopay_delay = autopay_delay
        self.lock = threading.RLock()
        self.webhook_url: str | None = None
        self.webhook_secret: str | None = None
        self.endpoints = sdk_endpoints()
        self.routes: dict[tuple[str, str], tuple[Handler, frozenset[str]]] = {}
        for (method, template), (name, honors) in _ROUTES.items():
            endpoint = self.endpoints.get((method, template))
            if endpoint is None:
                raise RuntimeError(f"{method} {template} is not an endpoint of the installed stripe SDK")
            fields, _ = typed_fields(endpoint.params)
            stray = honors - set(fields) - set(REMOVED_PARAMS.get((method, template), {})) - {"expand"}
            if stray:
                raise RuntimeError(f"{method} {template}: the SDK has no parameter {sorted(stray)}")
            self.routes[(method, template)] = (getattr(self, name), honors)
        self._stop = threading.Event()
        self._outbox: list[tuple[float, int, int, Obj]] = []  # (not before, order, attempt, event)
        self._outbox_ready = threading.Condition()
        self._delivering = 0  # webhooks being posted right now
        self.reset()
        threading.Thread(target=self._tick, name="fake-stripe-clock", daemon=True).start()
        threading.Thread(target=self._deliveries, name="fake-stripe-webhooks", daemon=True).start()

    def reset(self) -> None:
        with self.lock:
            self.objects: dict[str, Obj] = {}
            self.order: dict[str, int] = {}
            self.lines: dict[str, list[Obj]] = {}
            self.payments: dict[str, list[Obj]] = {}
            self.cards: dict[str, Card] = {}
            self.idempotency: dict[str, Entry] = {}
            self.stats: Counter[str] = Counter()
            self.events: list[Obj] = []
            self.tasks: list[Task] = []
            self.faults: list[Fault] = []
            self.offset = 0.0
            self._seq = itertools.count()
        with self._outbox_ready:
            self._outbox.clear()

    def close(self) -> None:
        self._stop.set()
        with self._outbox_ready:
            self._outbox_ready.notify_all()

    # -- clock -----------------------------------------------------------------------------------
    def now_f(self) -> float:
        return time.time() + self.offset

    def now(self) -> int:
        return int(self.now_f())

    def _schedule(self, due: float, kind: str, oid: str) -> None:
        heapq.heappush(self.tasks, Task(due, next(self._seq), kind, oid))

    def _run(self, task: Task) -> None:
        try:
            getattr(self, f"_task_{task.kind}")(task.oid)
        except Exception:  # one task's failure must not stop the clock
            log.exception("fake stripe: task %s %s failed", task.kind, task.oid)

    def _tick(self) -> None:
        while not self._stop.wait(0.05):
            with self.lock:
                while self.tasks and self.tasks[0].due <= self.now_f():
                    self._run(heapq.heappop(self.tasks))

    def advance(self, seconds: float) -> int:
        """Move the clock forward, running what comes due in order, each at its due time."""
        ran = 0
        with self.lock:
            target = self.now_f() + seconds
            while self.tasks and self.tasks[0].due <= target:
                task = heapq.heappop(self.tasks)
                self.offset = max(self.offset, task.due - time.time())
                self._run(task)
                ran += 1
            self.offset = target - time.time()
        return ran

    # -- plumbing --------------------------------------------------------------------------------
    def _id(self, prefix: str) -> str:
        return f"{prefix}_{secrets.token_hex(12)}"

    def _store(self, obj: Obj) -> Obj:
        self.objects[obj["id"]] = obj
        self.order.setdefault(obj["id"], next(self._seq))
        return obj

    _LABELS: typing.ClassVar[dict[str, str]] = {"setup_intent": "setupintent", "payment_method": "PaymentMethod"}

    def _get(self, kind: str, oid: Any, param: str | None = None, *, deleted: bool = False) -> Obj:
        """The stored object, or Stripe's "No such ...": 404 for an id in the path, 400 in a parameter."""
        obj = self.objects.get(oid) if isinstance(oid, str) else None
        if not obj or obj["object"] != kind or (obj.get("deleted") and not deleted):
            raise StripeError(400 if param else 404, f"No such {self._LABELS.get(kind, kind)}: '{oid}'",
                              code="resource_missing", param=param or "id")
        return obj

    def _view(self, obj: Obj) -> Obj:
        view = copy.deepcopy(obj)
        if obj["object"] == "invoice" and not obj.get("deleted"):
            lines = self.lines.get(obj["id"], [])
            view["lines"] = {"object": "list", "data": copy.deepcopy(lines[:10]), "has_more": len(lines) > 10,
                             "url": f"/v1/invoices/{obj['id']}/lines"}
        return view

    def _emit(self, kind: str, obj: Obj, ctx: Ctx, previous: Obj | None = None) -> None:
        data: Obj = {"object": self._view(obj)}
        if kind.endswith(".updated"):
            data["previous_attributes"] = copy.deepcopy(previous or {})
        delivering = bool(self.webhook_url and self.webhook_secret)
        event = {"id": self._id("evt"), "object": "event", "api_version": ctx.version, "created": self.now(),
                 "data": data, "livemode": False, "pending_webhooks": 1 if delivering else 0,
                 "request": {"id": ctx.request_id, "idempotency_key": ctx.key}, "type": kind}
        self.events.append(event)
        self._store(event)
        if delivering:
            with self._outbox_ready:
                heapq.heappush(self._outbox, (time.monotonic(), next(self._seq), 0, copy.deepcopy(event)))
                self._outbox_ready.notify()

    def _deliveries(self) -> None:
        """Deliver events one at a time in the order they happened; a failed delivery is retried
        later (5 attempts, backing off) without holding up the events after it."""
        while True:
            with self._outbox_ready:
                while not self._stop.is_set() and (not self._outbox or self._outbox[0][0] > time.monotonic()):
                    self._outbox_ready.wait(self._outbox[0][0] - time.monotonic() if self._outbox else None)
                if self._stop.is_set():
                    return
                _, order, attempt, event = heapq.heappop(self._outbox)
                self._delivering += 1
            try:
                delivered = self._deliver(event)
            finally:
                with self._outbox_ready:
                    self._delivering -= 1
            if not delivered and attempt < 4:
                with self._outbox_ready:
                    heapq.heappush(self._outbox, (time.monotonic() + 0.2 * 2**attempt, order, attempt + 1, event))

    def _deliver(self, event: Obj) -> bool:
        url, secret = self.webhook_url, self.webhook_secret
        if not url or not secret:
            return True  # the endpoint was removed
        payload = json.dumps(event)
        header = stripe.WebhookSignature.generate_signature_header(payload, secret)
        try:
            req = urllib.request.Request(url, payload.encode(), {
                "Content-Type": "application/json", "Stripe-Signature": header}, method="POST")
            with urllib.request.urlopen(req, timeout=30) as resp:
                return bool(resp.status < 300)
        except OSError:
            return False

    @staticmethod
    def _changes(before: Obj, after: Obj) -> Obj:
        return {k: v for k, v in before.items() if after.get(k) != v}

    # -- requests --------------------------------------------------------------------------------
    def handle(self, method: str, path: str, pairs: list[tuple[str, str]],
               headers: Mapping[str, str] | Any) -> tuple[int, Any, dict[str, str]]:
        ctx = Ctx(request_id=f"req_{secrets.token_hex(7)}")
        out: dict[str, str] = {"Request-Id": ctx.request_id or ""}
        try:
            auth = headers.get("Authorization", "")
            if not auth.startswith("Bearer "):
                raise StripeError(401, "You did not provide an API key. You need to provide your API key in the "
                                       "Authorization header, using Bearer auth.", saved=False)
            if not re.fullmatch(r"Bearer (sk|rk)_test_\w+", auth):
                raise StripeError(401, f"Invalid API Key provided: {auth[7:15]}****", saved=False)
            version = headers.get("Stripe-Version") or API_VERSION
            if version not in KNOWN_VERSIONS:
                raise StripeError(400, f"Invalid Stripe API version: {version}", code="api_version_invalid",
                                  saved=False)
            ctx.version = version
            out["Stripe-Version"] = version
            with self.lock:
                self.stats["requests"] += 1
                self.stats[f"{method} {self._route_name(path)}"] += 1
                fault = next((f for f in self.faults if f.count > 0 and f.matches(method, path)), None)
                if fault:
                    fault.count -= 1
            if fault and fault.status and not fault.saved:
                raise fault.error()
            endpoint, ids = self._match(method, path)
            handler, honors = self.routes.get((method, endpoint.template), (None, frozenset()))
            if handler is None:
                raise StripeError(404, f"The fake Stripe does not emulate {method} {endpoint.template} "
                                       f"({endpoint.sdk} in the SDK).", saved=False)
            raw = decode_form(pairs)
            params = endpoint.validate(raw, version)
            for name in params:
                if name not in honors:
                    raise not_emulated(name, f"{method} {endpoint.template}")
            key = headers.get("Idempotency-Key") if method == "POST" else None
            if key and len(key) > 255:
                raise StripeError(400, "Idempotency keys can be at most 255 characters long; this one has "
                                       f"{len(key)}.", kind="idempotency_error", saved=False)
            if key:
                ctx.key = out["Idempotency-Key"] = key
                replay = self._claim(key, f"{method} {path}", raw, ctx.request_id or "")
                if replay is not None:
                    status, body, original = replay
                    return status, body, {**out, "Idempotent-Replayed": "true", "Original-Request": original}
            try:
                if fault and fault.delay:
                    time.sleep(fault.delay)
                if fault and fault.status and fault.saved:  # the endpoint started, then failed
                    raise fault.error()
                with self.lock:
                    body = self._expand(handler(ctx, ids, params), params.get("expand") or [])
                result: tuple[int, Any] = (200, body)
            except StripeError as exc:
                if not exc.saved:
                    self._release(key)
                    raise
                result = (exc.status, exc.body(ctx.request_id))
            except Exception as exc:
                log.exception("fake stripe: %s %s failed", method, path)
                self._release(key)
                raise StripeError(500, f"The fake Stripe failed: {exc!r}", kind="api_error") from exc
            if key:
                with self.lock:
                    entry = self.idempotency.get(key)
                    if entry is not None:  # (unless the keys were forgotten meanwhile)
                        entry.response = result
            return result[0], result[1], out
        except StripeError as exc:
            return exc.status, exc.body(ctx.request_id), out

    def _claim(self, key: str, endpoint: str, raw: Obj, request_id: str) -> tuple[int, Any, str] | None:
        """None: the key is this request's now; else the first response to replay (or the refusal)."""
        fingerprint = hashlib.sha256(json.dumps(raw, sort_keys=True).encode()).hexdigest()
        with self.lock:
            entry = self.idempotency.get(key)
            if entry is None:
                self.idempotency[key] = Entry(endpoint, fingerprint, request_id)
                return None
            if entry.endpoint != endpoint:
                raise StripeError(400, "Keys for idempotent requests can only be used for the same endpoint they "
                                       f"were first used for ('{entry.endpoint}' vs '{endpoint}'). Try using a key "
                                       f"other than '{key}' if you meant to execute a different request.",
                                  kind="idempotency_error", saved=False)
            if entry.fingerprint != fingerprint:
                raise StripeError(400, "Keys for idempotent requests can only be used with the same parameters "
                                       f"they were first used with. Try using a key other than '{key}' if you "
                                       "meant to execute a different request.", kind="idempotency_error",
                                  saved=False)
            if entry.response is None:
                raise StripeError(409, "There is currently another in-progress request using this Idempotent Key "
                                       "(that probably means you submitted twice, and the other request is still "
                                       f"going through): {key}. Please try again later.", kind="idempotency_error",
                                  saved=False)
            return entry.response[0], copy.deepcopy(entry.response[1]), entry.request_id

    def _release(self, key: str | None) -> None:
        if key:
            with self.lock:
                entry = self.idempotency.get(key)
                if entry is not None and entry.response is None:
                    del self.idempotency[key]

    @staticmethod
    def _route_name(path: str) -> str:
        parts = path.strip("/").split("/")
        return "/".join(p if i != 2 else "{id}" for i, p in enumerate(parts))

    def _match(self, method: str, path: str) -> tuple[Endpoint, list[str]]:
        parts = path.strip("/").split("/")
        best: tuple[int, Endpoint, list[str]] | None = None
        for (m, _), endpoint in self.endpoints.items():
            segments = endpoint.segments
            if m != method or len(segments) != len(parts):
                continue
            if all(s.startswith("{") or s == p for s, p in zip(segments, parts, strict=True)):
                score = sum(not s.startswith("{") for s in segments)
                if best is None or score > best[0]:
                    ids = [p for s, p in zip(segments, parts, strict=True) if s.startswith("{")]
                    best = (score, endpoint, ids)
        if best is None:
            raise StripeError(404, f"Unrecognized request URL ({method}: {path}). Please see https://stripe.com/docs "
                                   "or we can help at https://support.stripe.com/.", saved=False)
        return best[1], best[2]

    # -- test-only controls ----------------------------------------------------------------------
    def control(self, method: str, path: str, body: Obj) -> tuple[int, Any]:
        if path == "/_fake/webhook" and method == "POST":
            self.webhook_url, self.webhook_secret = body.get("url"), body.get("secret")
            return 200, {"ok": True}
        if path == "/_fake/outbox" and method == "GET":  # webhooks not yet delivered (tests wait for 0)
            with self._outbox_ready:
                return 200, {"pending": len(self._outbox) + self._delivering}
        if path == "/_fake/stats" and method == "GET":
            with self.lock:
                return 200, dict(self.stats)
        if path == "/_fake/data" and method == "DELETE":
            self.reset()
            return 200, {"ok": True}
        if path == "/_fake/idempotency" and method == "DELETE":  # Stripe forgets keys after 24 hours
            with self.lock:
                self.idempotency.clear()
            return 200, {"ok": True}
        if path == "/_fake/events" and method == "GET":
            with self.lock:
                return 200, {"data": copy.deepcopy(self.events)}
        if path == "/_fake/clock" and method == "GET":
            return 200, {"now": self.now()}
        if path == "/_fake/clock" and method == "POST":
            seconds = body.get("advance")
            if not isinstance(seconds, int | float) or isinstance(seconds, bool) or seconds < 0:
                return 400, {"error": {"type": "invalid_request_error",
                                       "message": "advance: a number of seconds >= 0 is required"}}
            ran = self.advance(float(seconds))
            return 200, {"now": self.now(), "ran": ran}
        if path == "/_fake/faults" and method == "POST":
            with self.lock:
                self.faults.append(Fault(body.get("status"), float(body.get("delay") or 0), int(body.get("count", 1)),
                                         body.get("method"), body.get("path"), bool(body.get("saved"))))
            return 200, {"ok": True}
        if path == "/_fake/faults" and method == "DELETE":
            with self.lock:
                self.faults.clear()
            return 200, {"ok": True}
        return 404, StripeError(404, f"Unrecognized control ({method}: {path})").body()

    # -- lists and expansion ---------------------------------------------------------------------
    def _newest_first(self, kind: str, keep: Callable[[Obj], bool]) -> list[Obj]:
        found = [o for o in self.objects.values() if o["object"] == kind and not o.get("deleted") and keep(o)]
        found.sort(key=lambda o: (self._when(o), self.order[o["id"]]), reverse=True)
        return [self._view(o) for o in found]

    @staticmethod
    def _when(obj: Obj) -> int:
        when: int = obj["date"] if obj["object"] == "invoiceitem" else obj["created"]
        return when

    def _created(self, p: Obj) -> Callable[[Obj], bool]:
        bound = p.get("created")
        if bound is None:
            return lambda o: True
        if isinstance(bound, int):
            return lambda o: self._when(o) == bound
        tests = {"gt": lambda a, b: a > b, "gte": lambda a, b: a >= b, "lt": lambda a, b: a < b,
                 "lte": lambda a, b: a <= b}
        return lambda o: all(tests[k](self._when(o), v) for k, v in bound.items() if k in tests)

    def _page(self, items: list[Obj], p: Obj, url: str, label: str) -> Obj:
        limit = p.get("limit", 10)
        if limit < 1:
            raise _refused("limit", f"This value must be greater than or equal to 1 (it currently is '{limit}').")
        if limit > 100:
            raise _refused("limit", f"This value must be less than or equal to 100 (it currently is '{limit}').")
        after, before = p.get("starting_after"), p.get("ending_before")
        if after and before:
            raise _refused("starting_after", "You may only specify one of these parameters: ending_before, "
                                             "starting_after.", "parameters_exclusive")
        ids = [o["id"] for o in items]
        cursor = after or before
        if cursor and cursor not in ids:
            raise StripeError(400, f"No such {label}: '{cursor}'", code="resource_missing",
                              param="starting_after" if after else "ending_before")
        if after:
            start = ids.index(after) + 1
            page, more = items[start:start + limit], start + limit < len(items)
        elif before:
            end = ids.index(before)
            page, more = items[max(0, end - limit):end], end - limit > 0
        else:
            page, more = items[:limit], len(items) > limit
        return {"object": "list", "data": page, "has_more": more, "url": url}

    def _expand(self, body: Any, paths: list[str]) -> Any:
        for path in paths:
            parts = path.split(".")
            if len(parts) > 4:
                raise _refused("expand", f"You cannot expand more than 4 levels of a property. Property: {path}")
            self._expand_at(body, parts, path)
        return body

    def _expand_at(self, node: Obj, parts: list[str], path: str) -> None:
        if node.get("object") == "list" and isinstance(node.get("data"), list):
            if parts[0] != "data" or len(parts) == 1:
                raise _refused("expand", f"This property cannot be expanded ({path}). You may want to try "
                                         f"expanding 'data.{path}' instead.")
            for item in node["data"]:
                self._expand_at(item, parts[1:], path)
            return
        key, rest = parts[0], parts[1:]
        value = node.get(key)
        if key in INCLUDABLE.get(node.get("object", ""), ()):
            if key not in node:
                node[key] = self._includable(node, key)
        elif isinstance(value, str) and value in self.objects and not self.objects[value].get("deleted"):
            node[key] = self._view(self.objects[value])
        elif isinstance(value, str) and value.startswith(("pm_", "pi_", "prod_", "setatt_")):
            raise _refused("expand", f"The fake Stripe cannot expand {path} (it keeps no {value.split('_')[0]} "
                                     "objects).")
        elif not (value is None and key in node) and not (isinstance(value, dict) and rest):
            raise _refused("expand", f"This property cannot be expanded ({path}).")
        if rest and isinstance(node.get(key), dict):
            self._expand_at(node[key], rest, path)

    def _includable(self, obj: Obj, key: str) -> Any:
        oid, kind = obj["id"], obj["object"]
        if kind == "customer":
            if key == "cash_balance":
                return {"object": "cash_balance", "available": None, "customer": oid, "customer_account": None,
                        "livemode": False, "settings": {"reconciliation_mode": "automatic",
                                                        "using_merchant_default": True}}
            if key == "invoice_credit_balance":
                return {}
            if key == "tax":
                return {"automatic_tax": "unrecognized_location", "ip_address": None, "location": None,
                        "provider": "stripe"}
            if key == "subscriptions":
                subs = self._newest_first("subscription", lambda s: bool(s["customer"] == oid
                                                                         and s["status"] != "canceled"))
                return {"object": "list", "data": subs, "has_more": False, "url": f"/v1/customers/{oid}/subscriptions"}
            return {"object": "list", "data": [], "has_more": False, "url": f"/v1/customers/{oid}/{key}"}
        if kind == "invoice":
            if key == "payments":
                return {"object": "list", "data": copy.deepcopy(self.payments.get(oid, [])), "has_more": False,
                        "url": f"/v1/invoices/{oid}/payments"}
            pending = [p for p in self.payments.get(oid, []) if p["status"] == "open"]
            if not pending:
                return None
            intent = pending[0]["payment"]["payment_intent"]
            return {"client_secret": f"{intent}_secret_{hashlib.sha256(intent.encode()).hexdigest()[:24]}",
                    "type": "payment_intent"}
        return None  # price currency_options and tiers, plan tiers: one currency, per unit

    # -- customers -------------------------------------------------------------------------------
    _CUSTOMER_FIELDS = ("address balance business_name description email individual_name invoice_prefix "
                        "invoice_settings metadata name next_invoice_sequence phone preferred_locales shipping "
                        "tax_exempt")

    def _customer(self, oid: Any, param: str | None = None) -> Obj:
        return self._get("customer", oid, param)

    def _apply_customer(self, customer: Obj, p: Obj) -> None:
        for field in ("business_name", "description", "email", "individual_name", "name", "phone"):
            if field in p:
                customer[field] = p[field] or None
        for field in ("balance", "invoice_prefix", "next_invoice_sequence", "preferred_locales"):
            if field in p:
                customer[field] = p[field]
        if "tax_exempt" in p:
            customer["tax_exempt"] = p["tax_exempt"] or "none"
        if "metadata" in p:
            customer["metadata"] = _metadata(customer["metadata"], p["metadata"])
        if "address" in p:
            customer["address"] = self._address(p["address"])
        if "shipping" in p:
            shipping = p["shipping"]
            customer["shipping"] = None if shipping == "" else {
                "address": self._address(shipping.get("address") or {}), "carrier": None,
                "name": shipping.get("name"), "phone": shipping.get("phone"), "tracking_number": None}
        settings = p.get("invoice_settings")
        if settings:
            for field in ("custom_fields", "footer", "rendering_options"):
                if field in settings:
                    raise not_emulated(f"invoice_settings[{field}]", "customers")
            if "default_payment_method" in settings:
                pm = settings["default_payment_method"] or None
                if pm is not None:
                    self._attached(pm, customer["id"], "invoice_settings[default_payment_method]")
                customer["invoice_settings"]["default_payment_method"] = pm

    @staticmethod
    def _address(given: Any) -> Obj | None:
        if not given:
            return None
        return {k: given.get(k) for k in ("city", "country", "line1", "line2", "postal_code", "state")}

    def _attached(self, pm: str, customer: str, param: str) -> Card:
        card = self.cards.get(pm)
        if card is None:
            raise StripeError(400, f"No such PaymentMethod: '{pm}'", code="resource_missing", param=param)
        if card.customer != customer:
            raise StripeError(400, f"The customer does not have a payment method with the ID {pm}. The payment "
                                   "method must be attached to the customer.", code="resource_missing", param=param)
        return card

    @route("POST", "/v1/customers", _CUSTOMER_FIELDS)
    def create_customer(self, ctx: Ctx, ids: list[str], p: Obj) -> Obj:
        customer = self._store({
            "id": self._id("cus"), "object": "customer", "address": None, "balance": 0, "business_name": None,
            "created": self.now(), "currency": None, "customer_account": None, "default_source": None,
            "delinquent": False, "description": None, "discount": None, "email": None, "individual_name": None,
            "invoice_prefix": secrets.token_hex(4).upper(),
            "invoice_settings": {"custom_fields": None, "default_payment_method": None, "footer": None,
                                 "rendering_options": None},
            "livemode": False, "metadata": {}, "name": None, "next_invoice_sequence": 1, "phone": None,
            "preferred_locales": [], "shipping": None, "tax_exempt": "none", "test_clock": None})
        self._apply_customer(customer, p)
        self._emit("customer.created", customer, ctx)
        return self._view(customer)

    @route("GET", "/v1/customers", "created email ending_before limit starting_after")
    def list_customers(self, ctx: Ctx, ids: list[str], p: Obj) -> Obj:
        created = self._created(p)
        found = self._newest_first("customer", lambda c: created(c) and ("email" not in p or c["email"] == p["email"]))
        return self._page(found, p, "/v1/customers", "customer")

    @route("GET", "/v1/customers/{customer}")
    def retrieve_customer(self, ctx: Ctx, ids: list[str], p: Obj) -> Obj:
        return self._view(self._get("customer", ids[0], deleted=True))

    @route("POST", "/v1/customers/{customer}", _CUSTOMER_FIELDS)
    def update_customer(self, ctx: Ctx, ids: list[str], p: Obj) -> Obj:
        customer = self._customer(ids[0])
        before = copy.deepcopy(customer)
        self._apply_customer(customer, p)
        self._emit("customer.updated", customer, ctx, self._changes(before, customer))
        return self._view(customer)

    @route("DELETE", "/v1/customers/{customer}")
    def delete_customer(self, ctx: Ctx, ids: list[str], p: Obj) -> Obj:
        customer = self._customer(ids[0])
        for sub in list(self.objects.values()):
            if sub["object"] == "subscription" and sub["customer"] == customer["id"] and sub["status"] not in (
                    "canceled", "incomplete_expired"):
                self._end_subscription(sub, ctx, "cancellation_requested")
        self._emit("customer.deleted", customer, ctx)
        stub = {"id": customer["id"], "object": "customer", "deleted": True}
        self.objects[customer["id"]] = stub
        return dict(stub)

    # -- setup intents ---------------------------------------------------------------------------
    @route("POST", "/v1/setup_intents", "allowed_payment_method_types automatic_payment_methods confirm customer "
                                        "description excluded_payment_method_types metadata payment_method "
                                        "payment_method_configuration payment_method_types usage")
    def create_setup_intent(self, ctx: Ctx, ids: list[str], p: Obj) -> Obj:
        customer = self._customer(p["customer"], "customer")["id"] if p.get("customer") else None
        legacy, allowed = p.get("payment_method_types"), p.get("allowed_payment_method_types")
        automatic = p.get("automatic_payment_methods") or {}
        configuration = p.get("payment_method_configuration")
        if legacy and automatic.get("enabled"):
            raise _refused("automatic_payment_methods", "You may only specify one of these parameters: "
                                                        "automatic_payment_methods, payment_method_types.",
                           "parameters_exclusive")
        if configuration and not configuration.startswith("pmc_"):
            raise StripeError(400, f"No such payment method configuration: '{configuration}'",
                              code="resource_missing", param="payment_method_configuration")
        if legacy:
            methods, automatic_out, details = list(legacy), None, None
        else:
            enabled = automatic.get("enabled", True)
            if enabled:
                automatic_out = {"allow_redirects": automatic.get("allow_redirects", "always"), "enabled": True}
            else:
                automatic_out = {"allow_redirects": None, "enabled": False}
            offered = ACCOUNT_PAYMENT_METHOD_TYPES
            methods = [m for m in allowed if m in offered or not enabled] if allowed else list(offered)
            details = ({"id": configuration or DEFAULT_PAYMENT_METHOD_CONFIGURATION, "parent": None}
                       if enabled or configuration else None)
        excluded = p.get("excluded_payment_method_types")
        methods = [m for m in methods if m not in (excluded or [])]
        if not methods:
            raise _refused("allowed_payment_method_types" if allowed else "excluded_payment_method_types",
                           "No valid payment method types for this SetupIntent. Please ensure that you have "
                           "activated payment methods compatible with your chosen parameters.")
        sid = self._id("seti")
        intent = self._store({
            "id": sid, "object": "setup_intent", "allowed_payment_method_types": list(allowed) if allowed else None,
            "application": None, "attach_to_self": False, "automatic_payment_methods": automatic_out,
            "cancellation_reason": None, "client_secret": f"{sid}_secret_{secrets.token_hex(12)}",
            "created": self.now(), "customer": customer, "customer_account": None,
            "description": p.get("description"), "excluded_payment_method_types": excluded,
            "flow_directions": None, "last_setup_error": None, "latest_attempt": None, "livemode": False,
            "managed_payments": None, "mandate": None, "metadata": _metadata({}, p.get("metadata") or {}),
            "next_action": None, "on_behalf_of": None, "payment_method": None,
            "payment_method_configuration_details": details,
            "payment_method_options": ({"card": {"mandate_options": None, "network": None,
                                                 "request_three_d_secure": "automatic",
                                                 "setup_credential_usage": None}}
                                       if "card" in methods else None),
            "payment_method_types": methods, "single_use_mandate": None, "status": "requires_payment_method",
            "usage": p.get("usage", "off_session")})
        self._emit("setup_intent.created", intent, ctx)
        if p.get("payment_method"):
            intent["status"] = "requires_confirmation"
            intent["payment_method"] = self._card(p["payment_method"], customer, "payment_method")
        if p.get("confirm"):
            self._confirm(intent, {}, ctx)
        return self._view(intent)

    @route("GET", "/v1/setup_intents", "created customer ending_before limit payment_method starting_after")
    def list_setup_intents(self, ctx: Ctx, ids: list[str], p: Obj) -> Obj:
        created = self._created(p)
        found = self._newest_first("setup_intent", lambda s: created(s) and all(
            k not in p or s[k] == p[k] for k in ("customer", "payment_method")))
        return self._page(found, p, "/v1/setup_intents", "setupintent")

    @route("GET", "/v1/setup_intents/{intent}", "client_secret")
    def retrieve_setup_intent(self, ctx: Ctx, ids: list[str], p: Obj) -> Obj:
        return self._view(self._get("setup_intent", ids[0]))

    @route("POST", "/v1/setup_intents/{intent}", "description metadata")
    def update_setup_intent(self, ctx: Ctx, ids: list[str], p: Obj) -> Obj:
        intent = self._get("setup_intent", ids[0])
        if "description" in p:
            intent["description"] = p["description"] or None
        if "metadata" in p:
            intent["metadata"] = _metadata(intent["metadata"], p["metadata"])
        return self._view(intent)

    def _card(self, given: str, customer: str | None, param: str) -> str:
        """A payment method id: a saved one, or a new one from a test card name (`pm_card_visa`)."""
        if given in self.cards:
            return given
        if not given.startswith("pm_card_"):
            raise StripeError(400, f"No such PaymentMethod: '{given}'", code="resource_missing", param=param)
        name = given.removeprefix("pm_card_")
        decline = None
        if "chargeDeclined" in name:
            reason = name.split("chargeDeclined", 1)[1]
            decline = DECLINES.get(reason, ("generic_decline", "card_declined", "Your card was declined."))
        brand = name.split("_", 1)[0] if not name.startswith("chargeDeclined") else "visa"
        pm = self._id("pm")
        self.cards[pm] = Card(customer=None, brand=brand, last4="0002" if decline else "4242", decline=decline)
        return pm

    def _confirm(self, intent: Obj, p: Obj, ctx: Ctx) -> None:
        if intent["status"] not in ("requires_payment_method", "requires_confirmation", "requires_action"):
            raise StripeError(400, "You cannot confirm this SetupIntent because it has a status of "
                                   f"{intent['status']}.", code="setup_intent_unexpected_state")
        if p.get("payment_method"):
            intent["payment_method"] = self._card(p["payment_method"], intent["customer"], "payment_method")
        pm = intent["payment_method"]
        if not pm:
            raise StripeError(400, "You cannot confirm this SetupIntent because it's missing a payment method. "
                                   "Update the SetupIntent with a payment method and then confirm it again.",
                              code="setup_intent_unexpected_state", param="payment_method")
        if "card" not in intent["payment_method_types"]:
            raise _refused("payment_method", "The provided PaymentMethod type card is not allowed for this "
                                             f"SetupIntent (payment_method_types: {intent['payment_method_types']}).")
        card = self.cards[pm]
        if intent["customer"]:
            if card.customer not in (None, intent["customer"]):
                raise _refused("payment_method", f"The payment method {pm} belongs to another customer.")
            card.customer = intent["customer"]
        intent.update({"status": "succeeded", "latest_attempt": self._id("setatt")})
        self._emit("setup_intent.succeeded", intent, ctx)

    @route("POST", "/v1/setup_intents/{intent}/confirm", "payment_method")
    def confirm_setup_intent(self, ctx: Ctx, ids: list[str], p: Obj) -> Obj:
        """What Stripe.js does in the browser."""
        intent = self._get("setup_intent", ids[0])
        self._confirm(intent, p, ctx)
        return self._view(intent)

    @route("POST", "/v1/setup_intents/{intent}/cancel", "cancellation_reason")
    def cancel_setup_intent(self, ctx: Ctx, ids: list[str], p: Obj) -> Obj:
        intent = self._get("setup_intent", ids[0])
        if intent["status"] not in ("requires_payment_method", "requires_confirmation", "requires_action"):
            raise StripeError(400, "You cannot cancel this SetupIntent because it has a status of "
                                   f"{intent['status']}.", code="setup_intent_unexpected_state")
        intent.update({"status": "canceled", "cancellation_reason": p.get("cancellation_reason")})
        self._emit("setup_intent.canceled", intent, ctx)
        return self._view(intent)

    # -- prices ----------------------------------------------------------------------------------
    def _price(self, price_id: str, param: str) -> Obj:
        existing = self.objects.get(price_id)
        if existing and existing["object"] == "price":
            return existing
        if not price_id.startswith("price_"):
            raise StripeError(400, f"No such price: '{price_id}'", code="resource_missing", param=param)
        amount, currency, interval = DEFAULT_PRICE
        return self._new_price(price_id, amount, currency, {"interval": interval, "interval_count": 1},
                               f"prod_{hashlib.sha256(price_id.encode()).hexdigest()[:14]}")

    def _new_price(self, price_id: str, amount: int, currency: str, recurring: Obj | None, product: str) -> Obj:
        return self._store({
            "id": price_id, "object": "price", "active": True, "billing_scheme": "per_unit", "created": self.now(),
            "currency": currency, "custom_unit_amount": None, "livemode": False, "lookup_key": None, "metadata": {},
            "nickname": None, "product": product,
            "recurring": None if recurring is None else {
                "interval": recurring["interval"], "interval_count": recurring.get("interval_count", 1),
                "meter": None, "trial_period_days": None, "usage_type": "licensed"},
            "tax_behavior": "unspecified", "tiers_mode": None, "transform_quantity": None,
            "type": "one_time" if recurring is None else "recurring", "unit_amount": amount,
            "unit_amount_decimal": str(amount)})

    @staticmethod
    def _plan(price: Obj) -> Obj:
        recurring = price["recurring"] or {"interval": "month", "interval_count": 1}
        return {"id": price["id"], "object": "plan", "active": True, "amount": price["unit_amount"],
                "amount_decimal": price["unit_amount_decimal"], "billing_scheme": "per_unit",
                "created": price["created"], "currency": price["currency"], "interval": recurring["interval"],
                "interval_count": recurring["interval_count"], "livemode": False, "metadata": {}, "meter": None,
                "nickname": None, "product": price["product"], "tiers_mode": None, "transform_usage": None,
                "trial_period_days": None, "usage_type": "licensed"}

    def _priced(self, p: Obj, param: str, currency: str | None,
                store: bool = True) -> tuple[int, str | None, Obj | None]:
        """(amount, currency, pricing) of an invoice item or line from amount / pricing[price] / price_data /
        unit_amount_decimal, with quantity (`store`: keep the price `price_data` makes)."""
        quantity = p.get("quantity", 1)
        if "amount" in p:
            return p["amount"], currency, None
        if (p.get("pricing") or {}).get("price"):
            price = self._price(p["pricing"]["price"], f"{param}pricing[price]")
            return (price["unit_amount"] * quantity, price["currency"],
                    {"price_details": {"price": price["id"], "product": price["product"]}, "type": "price_details",
                     "unit_amount_decimal": price["unit_amount_decimal"]})
        data = p.get("price_data")
        if data:
            unit = data.get("unit_amount")
            if unit is None and data.get("unit_amount_decimal") is not None:
                unit = int(data["unit_amount_decimal"])
            if unit is None:
                raise missing_param(f"{param}price_data[unit_amount]")
            price = (self._new_price(self._id("price"), unit, data["currency"], None, data["product"]) if store
                     else {"id": None, "product": data["product"], "unit_amount_decimal": str(unit)})
            return (unit * quantity, data["currency"],
                    {"price_details": {"price": price["id"], "product": price["product"]}, "type": "price_details",
                     "unit_amount_decimal": price["unit_amount_decimal"]})
        if p.get("unit_amount_decimal") is not None:
            return int((p["unit_amount_decimal"] * quantity).to_integral_value(decimal.ROUND_HALF_UP)), currency, None
        raise missing_param(f"{param}amount")

    # -- invoice items ---------------------------------------------------------------------------
    def _new_item(self, customer: Obj, p: Obj, invoice: Obj | None, param: str, ctx: Ctx) -> Obj:
        default_currency = invoice["currency"] if invoice else customer["currency"]
        amount, currency, pricing = self._priced(p, param, p.get("currency") or default_currency)
        if p.get("currency") and currency != p["currency"]:
            raise _refused(f"{param}currency", f"The price's currency ({currency}) differs from {p['currency']}.")
        if currency is None:
            raise missing_param(f"{param}currency")
        if invoice is not None and currency != invoice["currency"]:
            raise _refused(f"{param}currency", f"The currency of this invoice item ({currency}) must match the "
                                               f"currency of the invoice ({invoice['currency']}).")
        now = self.now()
        period = p.get("period") or {"start": now, "end": now}
        quantity = p.get("quantity", 1)
        item = self._store({
            "id": self._id("ii"), "object": "invoiceitem", "amount": amount, "currency": currency,
            "customer": customer["id"], "customer_account": None, "date": now, "description": p.get("description"),
            "discountable": p.get("discountable", True), "discounts": [], "frozen_fields": None,
            "invoice": invoice["id"] if invoice else None, "invoicing_rules": None, "livemode": False,
            "metadata": _metadata({}, p.get("metadata") or {}), "net_amount": amount, "parent": None,
            "period": {"end": period["end"], "start": period["start"]}, "pricing": pricing, "proration": False,
            "proration_details": {"credited_items": None, "discount_amounts": []}, "quantity": quantity,
            "quantity_decimal": str(quantity), "tax_rates": [], "test_clock": None})
        if invoice is not None:
            self.lines[invoice["id"]].append(self._line_of_item(item))
            self._totals(invoice)
        self._emit("invoiceitem.created", item, ctx)
        return item

    def _line_of_item(self, item: Obj, line_id: str | None = None) -> Obj:
        return {"id": line_id or self._id("il"), "object": "line_item", "amount": item["amount"],
                "currency": item["currency"], "description": item["description"], "discount_amounts": [],
                "discountable": item["discountable"], "discounts": [], "invoice": item["invoice"], "livemode": False,
                "metadata": copy.deepcopy(item["metadata"]),
                "parent": {"invoice_item_details": {"invoice_item": item["id"], "proration": False,
                                                    "proration_details": {"credited_items": None},
                                                    "subscription": None},
                           "subscription_item_details": None, "type": "invoice_item_details"},
                "period": copy.deepcopy(item["period"]), "pretax_credit_amounts": [],
                "pricing": copy.deepcopy(item["pricing"]), "quantity": item["quantity"],
                "quantity_decimal": item["quantity_decimal"], "subscription": None, "subtotal": item["amount"],
                "taxes": []}

    def _room(self, invoice: Obj, adding: int, param: str) -> None:
        if len(self.lines[invoice["id"]]) + adding > MAX_INVOICE_LINES:
            raise _refused(param, f"An invoice can have at most {MAX_INVOICE_LINES} line items; invoice "
                                  f"{invoice['id']} has {len(self.lines[invoice['id']])}.")

    def _draft(self, invoice: Obj, param: str | None, action: str) -> None:
        if invoice["status"] != "draft":
            raise StripeError(400, f"You can only {action} draft invoices; this invoice is {invoice['status']}.",
                              code="invoice_not_editable", param=param)

    @route("POST", "/v1/invoiceitems", "amount currency customer description discountable invoice metadata period "
                                       "price_data pricing quantity unit_amount_decimal")
    def create_invoice_item(self, ctx: Ctx, ids: list[str], p: Obj) -> Obj:
        if not p.get("customer"):
            raise missing_param("customer")
        customer = self._customer(p["customer"], "customer")
        invoice = None
        if p.get("invoice"):
            invoice = self._get("invoice", p["invoice"], "invoice")
            self._draft(invoice, "invoice", "add invoice items to")
            if invoice["customer"] != customer["id"]:
                raise _refused("invoice", "The invoice belongs to another customer than this invoice item.")
            self._room(invoice, 1, "invoice")
        return self._view(self._new_item(customer, p, invoice, "", ctx))

    @route("GET", "/v1/invoiceitems", "created customer ending_before invoice limit pending starting_after")
    def list_invoice_items(self, ctx: Ctx, ids: list[str], p: Obj) -> Obj:
        created = self._created(p)
        found = self._newest_first("invoiceitem", lambda i: created(i) and all(
            k not in p or i[k] == p[k] for k in ("customer", "invoice"))
            and ("pending" not in p or (i["invoice"] is None) == p["pending"]))
        return self._page(found, p, "/v1/invoiceitems", "invoiceitem")

    @route("GET", "/v1/invoiceitems/{invoiceitem}")
    def retrieve_invoice_item(self, ctx: Ctx, ids: list[str], p: Obj) -> Obj:
        return self._view(self._get("invoiceitem", ids[0]))

    def _item_editable(self, item: Obj) -> Obj | None:
        invoice = self.objects.get(item["invoice"] or "")
        if invoice is not None:
            self._draft(invoice, None, "change the invoice items of")
        return invoice

    @route("POST", "/v1/invoiceitems/{invoiceitem}", "amount description discountable metadata period")
    def update_invoice_item(self, ctx: Ctx, ids: list[str], p: Obj) -> Obj:
        item = self._get("invoiceitem", ids[0])
        invoice = self._item_editable(item)
        for field in ("amount", "description", "discountable", "period"):
            if field in p:
                item[field] = p[field]
        item["net_amount"] = item["amount"]
        if "metadata" in p:
            item["metadata"] = _metadata(item["metadata"], p["metadata"])
        if invoice is not None:
            lines = self.lines[invoice["id"]]
            for i, line in enumerate(lines):
                if (line["parent"]["invoice_item_details"] or {}).get("invoice_item") == item["id"]:
                    lines[i] = self._line_of_item(item, line["id"])
            self._totals(invoice)
        return self._view(item)

    @route("DELETE", "/v1/invoiceitems/{invoiceitem}")
    def delete_invoice_item(self, ctx: Ctx, ids: list[str], p: Obj) -> Obj:
        item = self._get("invoiceitem", ids[0])
        invoice = self._item_editable(item)
        if invoice is not None:
            self.lines[invoice["id"]] = [line for line in self.lines[invoice["id"]] if (
                line["parent"]["invoice_item_details"] or {}).get("invoice_item") != item["id"]]
            self._totals(invoice)
        self._emit("invoiceitem.deleted", item, ctx)
        del self.objects[item["id"]]
        return {"id": item["id"], "object": "invoiceitem", "deleted": True}

    # -- invoices --------------------------------------------------------------------------------
    def _new_invoice(self, customer: Obj, *, currency: str, collection_method: str, auto_advance: bool,
                     billing_reason: str, ctx: Ctx, subscription: Obj | None = None,
                     period: tuple[int, int] | None = None) -> Obj:
        now = self.now()
        invoice = self._store({
            "id": self._id("in"), "object": "invoice", "account_country": "US", "account_name": "SimplyTalk (fake)",
            "account_tax_ids": None, "amount_due": 0, "amount_overpaid": 0, "amount_paid": 0,
            "amount_paid_off_stripe": 0, "amount_remaining": 0, "amount_shipping": 0, "application": None,
            "attempt_count": 0, "attempted": False, "auto_advance": auto_advance,
            "automatic_tax": {"disabled_reason": None, "enabled": False, "liability": None, "provider": None,
                              "status": None},
            "automatically_finalizes_at": None, "billing_reason": billing_reason,
            "collection_method": collection_method, "created": now, "currency": currency, "custom_fields": None,
            "customer": customer["id"], "customer_account": None, "customer_address": customer["address"],
            "customer_email": customer["email"], "customer_name": customer["name"],
            "customer_phone": customer["phone"], "customer_shipping": customer["shipping"],
            "customer_tax_exempt": customer["tax_exempt"], "customer_tax_ids": [], "default_payment_method": None,
            "default_source": None, "default_tax_rates": [], "description": None, "discounts": [], "due_date": None,
            "effective_at": None, "ending_balance": None, "footer": None, "from_invoice": None,
            "hosted_invoice_url": None, "invoice_pdf": None, "issuer": {"account": None, "type": "self"},
            "last_finalization_error": None, "latest_revision": None, "livemode": False, "metadata": {},
            "next_payment_attempt": None, "number": None, "on_behalf_of": None,
            "parent": None if subscription is None else {
                "quote_details": None, "type": "subscription_details",
                "subscription_details": {"metadata": copy.deepcopy(subscription["metadata"]),
                                         "subscription": subscription["id"], "subscription_proration_date": None}},
            "payment_settings": {"default_mandate": None, "payment_method_options": None,
                                 "payment_method_types": None},
            "period_end": period[1] if period else now, "period_start": period[0] if period else now,
            "post_payment_credit_notes_amount": 0, "pre_payment_credit_notes_amount": 0, "receipt_number": None,
            "rendering": None, "shipping_cost": None, "shipping_details": None, "starting_balance": 0,
            "statement_descriptor": None, "status": "draft", "status_details": None,
            "status_transitions": {"finalized_at": None, "marked_uncollectible_at": None, "paid_at": None,
                                   "voided_at": None},
            "subtotal": 0, "subtotal_excluding_tax": 0, "test_clock": None, "threshold_reason": None, "total": 0,
            "total_discount_amounts": [], "total_excluding_tax": 0, "total_pretax_credit_amounts": [],
            "total_taxes": [], "webhooks_delivered_at": now})
        self.lines[invoice["id"]] = []
        if customer["currency"] is None:
            customer["currency"] = currency
        return invoice

    def _totals(self, invoice: Obj) -> None:
        total = sum(line["amount"] for line in self.lines[invoice["id"]])
        invoice.update({"subtotal": total, "subtotal_excluding_tax": total, "total": total,
                        "total_excluding_tax": total, "amount_due": total, "amount_remaining": total})

    def _auto_finalize_at(self, invoice: Obj, when: int | None) -> None:
        invoice["automatically_finalizes_at"] = when
        if when is not None:
            self._schedule(when, "finalize", invoice["id"])

    @route("POST", "/v1/invoices", "auto_advance automatically_finalizes_at collection_method currency customer "
                                   "days_until_due default_payment_method description discounts due_date footer "
                                   "metadata pending_invoice_items_behavior")
    def create_invoice(self, ctx: Ctx, ids: list[str], p: Obj) -> Obj:
        if not p.get("customer"):
            raise missing_param("customer")
        if p.get("discounts") not in (None, "", []):  # "" keeps the customer's discounts off the invoice
            raise not_emulated("discounts", "POST /v1/invoices")
        customer = self._customer(p["customer"], "customer")
        collection = p.get("collection_method", "charge_automatically")
        self._check_collection(collection, p)
        invoice = self._new_invoice(customer, currency=p.get("currency") or customer["currency"] or "usd",
                                    collection_method=collection, auto_advance=p.get("auto_advance", False),
                                    billing_reason="manual", ctx=ctx)
        self._apply_invoice(invoice, p)
        if p.get("pending_invoice_items_behavior", "exclude") == "include":
            for item in sorted((o for o in self.objects.values() if o["object"] == "invoiceitem"
                                and o["customer"] == customer["id"] and o["invoice"] is None
                                and o["currency"] == invoice["currency"]), key=lambda o: self.order[o["id"]]):
                item["invoice"] = invoice["id"]
                self.lines[invoice["id"]].append(self._line_of_item(item))
            self._totals(invoice)
        when = p.get("automatically_finalizes_at")
        if when is not None and when <= invoice["created"]:
            raise _refused("automatically_finalizes_at", "automatically_finalizes_at must be in the future.")
        if when is None and invoice["auto_advance"]:
            when = invoice["created"] + AUTO_FINALIZE_AFTER
        self._auto_finalize_at(invoice, when)
        self._emit("invoice.created", invoice, ctx)
        return self._view(invoice)

    @staticmethod
    def _check_collection(collection: str, p: Obj) -> None:
        if collection == "send_invoice" and "days_until_due" not in p and "due_date" not in p:
            raise missing_param("days_until_due")
        if collection == "charge_automatically":
            for field in ("days_until_due", "due_date"):
                if field in p:
                    raise _refused(field, f"You can only set {field} when collection_method is send_invoice.")

    def _apply_invoice(self, invoice: Obj, p: Obj) -> None:
        for field in ("description", "footer"):
            if field in p:
                invoice[field] = p[field] or None
        if "metadata" in p:
            invoice["metadata"] = _metadata(invoice["metadata"], p["metadata"])
        if "days_until_due" in p:
            invoice["due_date"] = invoice["created"] + p["days_until_due"] * 86400
        if "due_date" in p:
            invoice["due_date"] = p["due_date"]
        if p.get("default_payment_method"):
            self._attached(p["default_payment_method"], invoice["customer"], "default_payment_method")
            invoice["default_payment_method"] = p["default_payment_method"]

    @route("GET", "/v1/invoices", "collection_method created customer ending_before limit starting_after status "
                                  "subscription")
    def list_invoices(self, ctx: Ctx, ids: list[str], p: Obj) -> Obj:
        created = self._created(p)

        def keep(i: Obj) -> bool:
            subscription = ((i["parent"] or {}).get("subscription_details") or {}).get("subscription")
            return created(i) and all(k not in p or i[k] == p[k] for k in ("customer", "status", "collection_method")) \
                and ("subscription" not in p or subscription == p["subscription"])

        return self._page(self._newest_first("invoice", keep), p, "/v1/invoices", "invoice")

    @route("GET", "/v1/invoices/{invoice}")
    def retrieve_invoice(self, ctx: Ctx, ids: list[str], p: Obj) -> Obj:
        return self._view(self._get("invoice", ids[0]))

    @route("POST", "/v1/invoices/{invoice}", "auto_advance automatically_finalizes_at collection_method "
                                             "days_until_due default_payment_method description due_date footer "
                                             "metadata")
    def update_invoice(self, ctx: Ctx, ids: list[str], p: Obj) -> Obj:
        invoice = self._get("invoice", ids[0])
        before = self._view(invoice)
        for field in ("automatically_finalizes_at", "collection_method", "days_until_due", "due_date",
                      "default_payment_method"):
            if field in p:
                self._draft(invoice, field, f"set {field} on")
        if invoice["status"] in ("paid", "void") and set(p) - {"metadata", "expand", "description", "footer"}:
            raise StripeError(400, f"This invoice is {invoice['status']}; only its metadata, description and footer "
                                   "can change.", code="invoice_not_editable")
        if {"collection_method", "days_until_due", "due_date"} & set(p):
            collection: str = p.get("collection_method") or invoice["collection_method"]
            due = {k: v for k, v in p.items() if k in ("days_until_due", "due_date")}
            self._check_collection(collection, due or ({"due_date": invoice["due_date"]}
                                                       if invoice["due_date"] is not None else {}))
            invoice["collection_method"] = collection
            if collection == "charge_automatically":
                invoice["due_date"] = None
        self._apply_invoice(invoice, p)
        if "auto_advance" in p:
            invoice["auto_advance"] = p["auto_advance"]
            if invoice["status"] == "draft" and "automatically_finalizes_at" not in p:
                self._auto_finalize_at(invoice, self.now() + AUTO_FINALIZE_AFTER if p["auto_advance"] else None)
            elif invoice["status"] == "open" and p["auto_advance"]:
                self._collect_later(invoice)
        if "automatically_finalizes_at" in p:
            self._auto_finalize_at(invoice, p["automatically_finalizes_at"])
        self._emit("invoice.updated", invoice, ctx, self._changes(before, self._view(invoice)))
        return self._view(invoice)

    @route("DELETE", "/v1/invoices/{invoice}")
    def delete_invoice(self, ctx: Ctx, ids: list[str], p: Obj) -> Obj:
        invoice = self._get("invoice", ids[0])
        self._draft(invoice, None, "delete")
        for item in [o for o in self.objects.values() if o["object"] == "invoiceitem"
                     and o["invoice"] == invoice["id"]]:
            del self.objects[item["id"]]
        self._emit("invoice.deleted", invoice, ctx)
        del self.objects[invoice["id"]]
        self.lines.pop(invoice["id"], None)
        return {"id": invoice["id"], "object": "invoice", "deleted": True}

    @route("POST", "/v1/invoices/{invoice}/add_lines", "invoice_metadata lines")
    def add_lines(self, ctx: Ctx, ids: list[str], p: Obj) -> Obj:
        invoice = self._get("invoice", ids[0])
        self._draft(invoice, None, "add lines to")
        lines = p["lines"]
        self._room(invoice, len(lines), "lines")
        customer = self._customer(invoice["customer"])
        for i, line in enumerate(lines):  # all checked before any is added: the call is all or nothing
            for field in ("discounts", "tax_amounts", "tax_rates", "quantity_decimal"):
                if field in line:
                    raise not_emulated(f"lines[{i}][{field}]", "POST /v1/invoices/{invoice}/add_lines")
            if line.get("invoice_item"):
                item = self._get("invoiceitem", line["invoice_item"], f"lines[{i}][invoice_item]")
                if item["invoice"] is not None or item["customer"] != invoice["customer"]:
                    raise _refused(f"lines[{i}][invoice_item]", "The invoice item is not a pending item of this "
                                                                "invoice's customer.")
            else:
                _, currency, _ = self._priced(line, f"lines[{i}]", invoice["currency"], store=False)
                if currency != invoice["currency"]:
                    raise _refused(f"lines[{i}]", f"The currency of this line ({currency}) must match the "
                                                  f"currency of the invoice ({invoice['currency']}).")
        before = self._view(invoice)
        for i, line in enumerate(lines):
            if line.get("invoice_item"):
                item = self.objects[line["invoice_item"]]
                item["invoice"] = invoice["id"]
                self.lines[invoice["id"]].append(self._line_of_item(item))
            else:
                self._new_item(customer, line, invoice, f"lines[{i}]", ctx)
        if "invoice_metadata" in p:
            invoice["metadata"] = _metadata(invoice["metadata"], p["invoice_metadata"])
        self._totals(invoice)
        self._emit("invoice.updated", invoice, ctx, self._changes(before, self._view(invoice)))
        return self._view(invoice)

    @route("GET", "/v1/invoices/{invoice}/lines", "ending_before limit starting_after")
    def list_lines(self, ctx: Ctx, ids: list[str], p: Obj) -> Obj:
        invoice = self._get("invoice", ids[0])
        return self._page(copy.deepcopy(self.lines[invoice["id"]]), p, f"/v1/invoices/{invoice['id']}/lines",
                          "line_item")

    @route("POST", "/v1/invoices/{invoice}/finalize", "auto_advance")
    def finalize_invoice(self, ctx: Ctx, ids: list[str], p: Obj) -> Obj:
        invoice = self._get("invoice", ids[0])
        if invoice["status"] != "draft":
            raise StripeError(400, "This invoice is already finalized, you can't re-finalize a non-draft invoice.",
                              code="invoice_not_editable")
        if "auto_advance" in p:
            invoice["auto_advance"] = p["auto_advance"]
        self._finalize(invoice, ctx)
        return self._view(invoice)

    def _finalize(self, invoice: Obj, ctx: Ctx, collect: bool = True) -> None:
        """Draft -> open: the customer's balance applied, a number, URLs; then paid at once (nothing due, or
        below the minimum charge) or, when auto-advancing and charged automatically, collected later."""
        customer = self._customer(invoice["customer"])
        self._totals(invoice)
        now = self.now()
        starting = customer["balance"]
        due = invoice["total"] + starting
        invoice.update({  # the customer's details as they are now
            "customer_address": copy.deepcopy(customer["address"]), "customer_email": customer["email"],
            "customer_name": customer["name"], "customer_phone": customer["phone"],
            "customer_shipping": copy.deepcopy(customer["shipping"]), "customer_tax_exempt": customer["tax_exempt"]})
        invoice.update({
            "status": "open", "starting_balance": starting, "amount_due": max(due, 0), "amount_remaining": max(due, 0),
            "ending_balance": min(due, 0), "automatically_finalizes_at": None, "effective_at": now,
            "number": f"{customer['invoice_prefix']}-{customer['next_invoice_sequence']:04d}",
            "hosted_invoice_url": f"{self.public_url}/i/{invoice['id']}",
            "invoice_pdf": f"{self.public_url}/i/{invoice['id']}/pdf"})
        invoice["status_transitions"]["finalized_at"] = now
        customer["next_invoice_sequence"] += 1
        self._set_balance(customer, min(due, 0), ctx)
        automatic = invoice["collection_method"] == "charge_automatically"
        below_minimum = automatic and 0 < due < MINIMUM_CHARGE.get(invoice["currency"], 50)
        if due > 0 and not below_minimum:
            self.payments[invoice["id"]] = [{
                "id": self._id("inpay"), "object": "invoice_payment", "amount_paid": None, "amount_requested": due,
                "created": now, "currency": invoice["currency"], "invoice": invoice["id"], "is_default": True,
                "livemode": False, "payment": {"charge": None, "payment_intent": self._id("pi"),
                                               "payment_record": None, "type": "payment_intent"},
                "status": "open", "status_transitions": {"canceled_at": None, "paid_at": None}}]
        self._emit("invoice.finalized", invoice, ctx)
        if due <= 0:
            self._mark_paid(invoice, 0, ctx)
        elif below_minimum:
            # Stripe does not charge less than the minimum: paid, the amount carried to the customer's balance
            invoice.update({"amount_remaining": 0, "ending_balance": due})
            self._set_balance(customer, due, ctx)
            self._mark_paid(invoice, 0, ctx)
        elif automatic and invoice["auto_advance"] and collect:
            self._collect_later(invoice)

    def _set_balance(self, customer: Obj, balance: int, ctx: Ctx) -> None:
        if customer["balance"] != balance:
            before = {"balance": customer["balance"]}
            customer["balance"] = balance
            self._emit("customer.updated", customer, ctx, before)

    def _collect_later(self, invoice: Obj) -> None:
        due = self.now() + self.autopay_delay
        invoice["next_payment_attempt"] = int(due) + (due % 1 > 0)
        self._schedule(due, "collect", invoice["id"])

    def _payment_method_for(self, invoice: Obj) -> str | None:
        subscription_id = ((invoice["parent"] or {}).get("subscription_details") or {}).get("subscription")
        subscription = self.objects.get(subscription_id or "") or {}
        customer = self.objects.get(invoice["customer"]) or {}
        return (invoice["default_payment_method"] or subscription.get("default_payment_method")
                or (customer.get("invoice_settings") or {}).get("default_payment_method"))

    def _attempt(self, invoice: Obj, ctx: Ctx, pm: str | None = None) -> StripeError | None:
        """Charge the invoice's amount due; the decline (402) when the card declines, else None."""
        pm = pm or self._payment_method_for(invoice)
        if pm is None:
            return StripeError(400, NO_PAYMENT_METHOD)
        invoice.update({"attempt_count": invoice["attempt_count"] + 1, "attempted": True,
                        "next_payment_attempt": None})
        decline = self.cards[pm].decline
        if decline:
            decline_code, code, message = decline
            self._emit("invoice.payment_failed", invoice, ctx)
            subscription = self._subscription_of(invoice)
            renewal = invoice["billing_reason"] != "subscription_create"
            if subscription and subscription["status"] == "active" and renewal:
                self._set_status(subscription, "past_due", ctx)
            return StripeError(402, message, kind="card_error", code=code, decline_code=decline_code)
        self._mark_paid(invoice, invoice["amount_due"], ctx)
        return None

    def _subscription_of(self, invoice: Obj) -> Obj | None:
        subscription_id = ((invoice["parent"] or {}).get("subscription_details") or {}).get("subscription")
        return self.objects.get(subscription_id or "")

    def _mark_paid(self, invoice: Obj, amount: int, ctx: Ctx, out_of_band: bool = False) -> None:
        now = self.now()
        invoice.update({"status": "paid", "amount_paid": amount, "amount_remaining": 0, "attempted": True,
                        "next_payment_attempt": None,
                        "amount_paid_off_stripe": amount if out_of_band else invoice["amount_paid_off_stripe"]})
        invoice["status_transitions"]["paid_at"] = now
        for payment in self.payments.get(invoice["id"], []):
            payment.update({"status": "paid", "amount_paid": amount})
            payment["status_transitions"]["paid_at"] = now
        self._emit("invoice.paid", invoice, ctx)
        self._emit("invoice.payment_succeeded", invoice, ctx)
        subscription = self._subscription_of(invoice)
        if subscription and subscription["status"] in ("incomplete", "past_due", "unpaid") \
                and subscription["latest_invoice"] == invoice["id"]:
            self._set_status(subscription, "active", ctx)

    @route("POST", "/v1/invoices/{invoice}/pay", "forgive off_session paid_out_of_band payment_method")
    def pay_invoice(self, ctx: Ctx, ids: list[str], p: Obj) -> Obj:
        invoice = self._get("invoice", ids[0])
        if invoice["status"] in ("paid", "void"):
            raise StripeError(400, f"Invoice is already {invoice['status']}.", code="invoice_not_editable"
                              if invoice["status"] == "void" else None)
        if invoice["status"] == "draft":
            self._finalize(invoice, ctx, collect=False)
            if invoice["status"] == "paid":
                return self._view(invoice)
        if p.get("paid_out_of_band"):
            self._mark_paid(invoice, invoice["amount_remaining"], ctx, out_of_band=True)
            return self._view(invoice)
        pm = None
        if p.get("payment_method"):
            pm = p["payment_method"]
            self._attached(pm, invoice["customer"], "payment_method")
        error = self._attempt(invoice, ctx, pm)
        if error is not None:
            raise error
        return self._view(invoice)

    @route("POST", "/v1/invoices/{invoice}/void")
    def void_invoice(self, ctx: Ctx, ids: list[str], p: Obj) -> Obj:
        invoice = self._get("invoice", ids[0])
        if invoice["status"] not in ("open", "uncollectible"):
            raise StripeError(400, f"You can only void open invoices; this invoice is {invoice['status']}.",
                              code="invoice_not_editable" if invoice["status"] == "draft" else None)
        self._void(invoice, ctx)
        return self._view(invoice)

    def _void(self, invoice: Obj, ctx: Ctx) -> None:
        now = self.now()
        invoice.update({"status": "void", "amount_remaining": 0, "auto_advance": False, "next_payment_attempt": None})
        invoice["status_transitions"]["voided_at"] = now
        for payment in self.payments.get(invoice["id"], []):
            if payment["status"] == "open":
                payment["status"] = "canceled"
                payment["status_transitions"]["canceled_at"] = now
        self._emit("invoice.voided", invoice, ctx)

    @route("POST", "/v1/invoices/{invoice}/mark_uncollectible")
    def mark_uncollectible(self, ctx: Ctx, ids: list[str], p: Obj) -> Obj:
        invoice = self._get("invoice", ids[0])
        if invoice["status"] != "open":
            raise StripeError(400, f"You can only mark open invoices uncollectible; this invoice is "
                                   f"{invoice['status']}.")
        invoice.update({"status": "uncollectible", "auto_advance": False, "next_payment_attempt": None})
        invoice["status_transitions"]["marked_uncollectible_at"] = self.now()
        self._emit("invoice.marked_uncollectible", invoice, ctx)
        return self._view(invoice)

    # -- the fake's own work, as the clock passes ----------------------------------------------------
    def _task_finalize(self, invoice_id: str) -> None:
        invoice = self.objects.get(invoice_id)
        if invoice and invoice["status"] == "draft" and invoice["automatically_finalizes_at"] is not None \
                and invoice["automatically_finalizes_at"] <= self.now_f():
            self._finalize(invoice, Ctx())

    def _task_collect(self, invoice_id: str) -> None:
        invoice = self.objects.get(invoice_id)
        if not invoice or invoice["status"] != "open" or not invoice["auto_advance"]:
            return
        if self._payment_method_for(invoice) is None:
            invoice["next_payment_attempt"] = None  # nothing to charge: the invoice waits, as in Stripe
            return
        self._attempt(invoice, Ctx())

    def _task_expire(self, subscription_id: str) -> None:
        subscription = self.objects.get(subscription_id)
        if subscription and subscription["status"] == "incomplete":
            invoice = self.objects.get(subscription["latest_invoice"] or "")
            if invoice and invoice["status"] == "open":
                self._void(invoice, Ctx())
            subscription["ended_at"] = self.now()
            self._set_status(subscription, "incomplete_expired", Ctx())

    def _task_renew(self, subscription_id: str) -> None:
        subscription = self.objects.get(subscription_id)
        if not subscription or subscription["status"] not in ("active", "past_due", "trialing"):
            return
        ctx = Ctx()
        if subscription["cancel_at_period_end"]:
            self._end_subscription(subscription, ctx, "cancellation_requested")
            return
        before = copy.deepcopy(subscription)
        end = 0
        for item in subscription["items"]["data"]:
            recurring = item["price"]["recurring"]
            item["current_period_start"] = item["current_period_end"]
            item["current_period_end"] = end = _add_interval(item["current_period_start"], recurring["interval"],
                                                            recurring["interval_count"])
        self._subscription_invoice(subscription, "subscription_cycle", ctx)
        self._emit("customer.subscription.updated", subscription, ctx, self._changes(before, subscription))
        self._schedule(end, "renew", subscription["id"])

    # -- subscriptions ---------------------------------------------------------------------------
    def _set_status(self, subscription: Obj, status: str, ctx: Ctx) -> None:
        before = {"status": subscription["status"]}
        subscription["status"] = status
        self._emit("customer.subscription.updated", subscription, ctx, before)

    def _end_subscription(self, subscription: Obj, ctx: Ctx, reason: str, details: Obj | None = None) -> None:
        now = self.now()
        subscription.update({"status": "canceled", "canceled_at": now, "ended_at": now})
        subscription["cancellation_details"] = {
            "comment": (details or {}).get("comment"), "feedback": (details or {}).get("feedback"),
            "feedback_option": None, "reason": reason}
        self._emit("customer.subscription.deleted", subscription, ctx)

    def _subscription_invoice(self, subscription: Obj, reason: str, ctx: Ctx) -> Obj:
        customer = self._customer(subscription["customer"])
        items = subscription["items"]["data"]
        period = (items[0]["current_period_start"], items[0]["current_period_end"])
        invoice = self._new_invoice(customer, currency=subscription["currency"],
                                    collection_method=subscription["collection_method"], auto_advance=True,
                                    billing_reason=reason, ctx=ctx, subscription=subscription, period=period)
        if subscription["days_until_due"] is not None:
            invoice["due_date"] = invoice["created"] + subscription["days_until_due"] * 86400
        for item in items:
            price, quantity = item["price"], item["quantity"]
            amount = price["unit_amount"] * quantity
            recurring = price["recurring"]
            self.lines[invoice["id"]].append({
                "id": self._id("il"), "object": "line_item", "amount": amount, "currency": price["currency"],
                "description": f"{quantity} x {price['product']} (at {price['unit_amount']} {price['currency']} / "
                               f"{recurring['interval']})",
                "discount_amounts": [], "discountable": True, "discounts": [], "invoice": invoice["id"],
                "livemode": False, "metadata": {},
                "parent": {"invoice_item_details": None, "type": "subscription_item_details",
                           "subscription_item_details": {"invoice_item": None, "proration": False,
                                                         "proration_details": {"credited_items": None},
                                                         "subscription": subscription["id"],
                                                         "subscription_item": item["id"]}},
                "period": {"end": item["current_period_end"], "start": item["current_period_start"]},
                "pretax_credit_amounts": [],
                "pricing": {"price_details": {"price": price["id"], "product": price["product"]},
                            "type": "price_details", "unit_amount_decimal": price["unit_amount_decimal"]},
                "quantity": quantity, "quantity_decimal": str(quantity), "subscription": subscription["id"],
                "subtotal": amount, "taxes": []})
        self._totals(invoice)
        subscription["latest_invoice"] = invoice["id"]
        self._emit("invoice.created", invoice, ctx)
        if reason == "subscription_create":
            self._finalize(invoice, ctx, collect=False)
        else:
            self._auto_finalize_at(invoice, invoice["created"] + AUTO_FINALIZE_AFTER)
        return invoice

    @route("POST", "/v1/subscriptions", "cancel_at_period_end collection_method currency customer days_until_due "
                                        "default_payment_method description items metadata off_session "
                                        "payment_behavior")
    def create_subscription(self, ctx: Ctx, ids: list[str], p: Obj) -> Obj:
        if not p.get("customer"):
            raise missing_param("customer")
        customer = self._customer(p["customer"], "customer")
        if not p.get("items"):
            raise missing_param("items")
        behavior = p.get("payment_behavior", "allow_incomplete")
        if behavior == "pending_if_incomplete":
            raise _refused("payment_behavior", "pending_if_incomplete is only used with updates and cannot be "
                                               "passed when creating a subscription.")
        collection = p.get("collection_method", "charge_automatically")
        self._check_collection(collection, p)
        prices = []
        for i, item in enumerate(p["items"]):
            for field in ("billing_thresholds", "current_trial", "discounts", "plan", "tax_rates"):
                if field in item:
                    raise not_emulated(f"items[{i}][{field}]", "POST /v1/subscriptions")
            if item.get("price"):
                price = self._price(item["price"], f"items[{i}][price]")
            elif item.get("price_data"):
                data = item["price_data"]
                unit = data.get("unit_amount", int(data.get("unit_amount_decimal") or 0))
                price = self._new_price(self._id("price"), unit, data["currency"], data["recurring"], data["product"])
            else:
                raise missing_param(f"items[{i}][price]")
            if price["recurring"] is None:
                raise _refused(f"items[{i}][price]", f"The price specified ({price['id']}) is a one-time price; "
                                                     "subscription items need recurring prices.")
            prices.append((price, item))
        currency = prices[0][0]["currency"]
        if (p.get("currency") and p["currency"] != currency) or any(pr["currency"] != currency for pr, _ in prices):
            raise _refused("items", "All prices on a subscription must have the same currency.")
        pm = p.get("default_payment_method")
        if pm:
            self._attached(pm, customer["id"], "default_payment_method")
        charge = pm or customer["invoice_settings"]["default_payment_method"]
        if behavior == "error_if_incomplete" and collection == "charge_automatically":
            if charge is None:
                raise StripeError(400, NO_PAYMENT_METHOD)
            decline = self.cards[charge].decline
            if decline:  # nothing is created
                decline_code, code, message = decline
                raise StripeError(402, message, kind="card_error", code=code, decline_code=decline_code)
        now = self.now()
        sid = self._id("sub")
        items = []
        for price, item in prices:
            recurring = price["recurring"]
            items.append({
                "id": self._id("si"), "object": "subscription_item", "billed_until": None, "billing_thresholds": None,
                "created": now, "current_period_end": _add_interval(now, recurring["interval"],
                                                                    recurring["interval_count"]),
                "current_period_start": now, "current_trial": None, "discounts": [],
                "metadata": _metadata({}, item.get("metadata") or {}), "plan": self._plan(price),
                "price": copy.deepcopy(price), "quantity": item.get("quantity", 1), "subscription": sid,
                "tax_rates": []})
        subscription = self._store({
            "id": sid, "object": "subscription", "application": None, "application_fee_percent": None,
            "automatic_tax": {"disabled_reason": None, "enabled": False, "liability": None},
            "billing_cycle_anchor": now, "billing_cycle_anchor_config": None,
            "billing_mode": {"flexible": {"proration_discounts": "included"}, "type": "flexible", "updated_at": None},
            "billing_schedules": [], "billing_thresholds": None, "cancel_at": None,
            "cancel_at_period_end": p.get("cancel_at_period_end", False), "canceled_at": None,
            "cancellation_details": {"comment": None, "feedback": None, "feedback_option": None, "reason": None},
            "collection_method": collection, "created": now, "currency": currency, "customer": customer["id"],
            "customer_account": None, "days_until_due": p.get("days_until_due"), "default_payment_method": pm,
            "default_source": None, "default_tax_rates": [], "description": p.get("description"), "discounts": [],
            "ended_at": None,
            "invoice_settings": {"account_tax_ids": None, "custom_fields": None, "description": None, "footer": None,
                                 "issuer": {"account": None, "type": "self"}},
            "items": {"object": "list", "data": items, "has_more": False,
                      "url": f"/v1/subscription_items?subscription={sid}"},
            "latest_invoice": None, "livemode": False, "managed_payments": None,
            "metadata": _metadata({}, p.get("metadata") or {}), "next_pending_invoice_item_invoice": None,
            "on_behalf_of": None, "pause_collection": None,
            "payment_settings": {"payment_method_options": None, "payment_method_types": None,
                                 "save_default_payment_method": "off"},
            "pending_invoice_item_interval": None, "pending_setup_intent": None, "pending_update": None,
            "presentment_details": None, "schedule": None, "start_date": now, "status": "incomplete",
            "status_details": None, "test_clock": None, "transfer_data": None, "trial_end": None,
            "trial_settings": {"end_behavior": {"billing_cycle_anchor": None,
                                                "missing_payment_method": "create_invoice"}},
            "trial_start": None})
        self._emit("customer.subscription.created", subscription, ctx)
        invoice = self._subscription_invoice(subscription, "subscription_create", ctx)
        if invoice["status"] == "open":
            if collection == "send_invoice":
                self._set_status(subscription, "active", ctx)
            elif behavior != "default_incomplete" and charge is not None:
                self._attempt(invoice, ctx, charge)
        if subscription["status"] == "incomplete":
            self._schedule(now + INCOMPLETE_EXPIRES_AFTER, "expire", sid)
        self._schedule(items[0]["current_period_end"], "renew", sid)
        return self._view(subscription)

    @route("GET", "/v1/subscriptions", "collection_method created customer ending_before limit price "
                                       "starting_after status")
    def list_subscriptions(self, ctx: Ctx, ids: list[str], p: Obj) -> Obj:
        created = self._created(p)
        status = p.get("status")

        def keep(s: Obj) -> bool:
            if status is None:
                wanted = s["status"] != "canceled"
            elif status == "all":
                wanted = True
            elif status == "ended":
                wanted = s["status"] in ("canceled", "incomplete_expired")
            else:
                wanted = s["status"] == status
            same = all(k not in p or s[k] == p[k] for k in ("customer", "collection_method"))
            return wanted and same and created(s) \
                and ("price" not in p or any(i["price"]["id"] == p["price"] for i in s["items"]["data"]))

        return self._page(self._newest_first("subscription", keep), p, "/v1/subscriptions", "subscription")

    @route("GET", "/v1/subscriptions/{subscription_exposed_id}")
    def retrieve_subscription(self, ctx: Ctx, ids: list[str], p: Obj) -> Obj:
        return self._view(self._get("subscription", ids[0]))

    @route("POST", "/v1/subscriptions/{subscription_exposed_id}", "cancel_at_period_end cancellation_details "
                                                                  "default_payment_method description metadata")
    def update_subscription(self, ctx: Ctx, ids: list[str], p: Obj) -> Obj:
        subscription = self._get("subscription", ids[0])
        if subscription["status"] in ("canceled", "incomplete_expired") and set(p) - {"metadata", "expand",
                                                                                     "cancellation_details"}:
            raise _refused(next(iter(set(p) - {"metadata", "expand", "cancellation_details"})),
                           "A canceled subscription can only update its cancellation_details and metadata.")
        before = copy.deepcopy(subscription)
        if "cancel_at_period_end" in p:
            subscription["cancel_at_period_end"] = p["cancel_at_period_end"]
        if "description" in p:
            subscription["description"] = p["description"] or None
        if "metadata" in p:
            subscription["metadata"] = _metadata(subscription["metadata"], p["metadata"])
        if "default_payment_method" in p:
            self._attached(p["default_payment_method"], subscription["customer"], "default_payment_method")
            subscription["default_payment_method"] = p["default_payment_method"]
        if "cancellation_details" in p:
            subscription["cancellation_details"].update(p["cancellation_details"])
        self._emit("customer.subscription.updated", subscription, ctx, self._changes(before, subscription))
        return self._view(subscription)

    @route("DELETE", "/v1/subscriptions/{subscription_exposed_id}", "cancellation_details")
    def cancel_subscription(self, ctx: Ctx, ids: list[str], p: Obj) -> Obj:
        subscription = self._get("subscription", ids[0])
        if subscription["status"] in ("canceled", "incomplete_expired"):
            raise StripeError(400, f"This subscription is already {subscription['status']}.")
        self._end_subscription(subscription, ctx, "cancellation_requested", p.get("cancellation_details"))
        return self._view(subscription)

    # -- events ----------------------------------------------------------------------------------
    @route("GET", "/v1/events", "created ending_before limit starting_after type types")
    def list_events(self, ctx: Ctx, ids: list[str], p: Obj) -> Obj:
        created = self._created(p)
        patterns = [p["type"]] if "type" in p else p.get("types") or []

        def kind(event: Obj) -> bool:
            return not patterns or any(event["type"] == t or (t.endswith(".*") and event["type"].startswith(t[:-1]))
                                       for t in patterns)

        return self._page(self._newest_first("event", lambda e: created(e) and kind(e)), p, "/v1/events", "event")

    @route("GET", "/v1/events/{id}")
    def retrieve_event(self, ctx: Ctx, ids: list[str], p: Obj) -> Obj:
        return self._view(self._get("event", ids[0]))

    # -- WSGI ------------------------------------------------------------------------------------
    def wsgi(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        headers: dict[str, str] = {}
        if request.path.startswith("/i/") and request.method == "GET":
            return self._hosted(request.path)(environ, start_response)
        if request.path.startswith("/_fake/"):
            body = request.get_json(silent=True) if request.is_json else None
            status, payload = self.control(request.method, request.path, body if isinstance(body, dict) else {})
        else:
            pairs = urllib.parse.parse_qsl(request.query_string.decode(), keep_blank_values=True)
            pairs += urllib.parse.parse_qsl(request.get_data(as_text=True), keep_blank_values=True)
            status, payload, headers = self.handle(request.method, request.path, pairs, request.headers)
        response = Response(json.dumps(payload), status, content_type="application/json", headers=headers)
        return response(environ, start_response)

    def _hosted(self, path: str) -> Response:
        """The hosted invoice page (a plain summary)."""
        with self.lock:
            invoice = self.objects.get(path.split("/")[2])
            if not invoice or invoice["object"] != "invoice" or invoice["status"] == "draft":
                return Response("No such invoice", 404)
            rows = "".join(f"<tr><td>{html.escape(line['description'] or '')}</td><td>{line['amount']}</td></tr>"
                           for line in self.lines[invoice["id"]])
            page = (f"<h1>Invoice {html.escape(invoice['number'] or '')}</h1><p>Status: {invoice['status']}</p>"
                    f"<table>{rows}</table><p>Amount due: {invoice['amount_due']} {invoice['currency']}</p>")
        return Response(page, 200, content_type="text/html")


def serve(port: int, host: str = "127.0.0.1", autopay_delay: float = 0.2) -> tuple[FakeStripe, Any]:
    """The fake and its (not yet serving) WSGI server on host:port (0: a free port)."""
    fake = FakeStripe(autopay_delay=autopay_delay)
    server = make_server(host, port, fake.wsgi, threaded=True)
    fake.public_url = f"http://{host}:{server.server_port}"
    return fake, server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=12111)
    parser.add_argument("--autopay-delay", type=float, default=0.2,
                        help="seconds (of the fake's clock) between finalizing an auto-advancing invoice and "
                             "charging it")
    args = parser.parse_args()
    _, server = serve(args.port, autopay_delay=args.autopay_delay)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()


if __name__ == "__main__":
    main()
