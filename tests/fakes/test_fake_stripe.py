"""The local Stripe (devtools/fake_stripe.py), driven only through the official SDK; `/_fake` controls are plain HTTP.

Every response the SDK receives in these tests is checked against the SDK's resource classes for the pinned API
version (`check_shapes`): each object carries every field its class annotates (bar the few Stripe sends only
on request or on deleted objects, listed in CONDITIONAL), no field the class lacks, null only where the class
says Optional, literals among the class's values. Adding a field to the SDK breaks these tests until the fake
sends it.
"""

from __future__ import annotations

import decimal
import functools
import http.server
import importlib
import inspect
import json
import logging
import threading
import time
import typing
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ForwardRef, Literal, Union, get_args, get_origin

import pytest
import requests
import stripe
from stripe._list_object import ListObject
from stripe._object_classes import OBJECT_CLASSES
from stripe._stripe_object import StripeObject

from devtools import fake_stripe
from devtools.fake_stripe import FakeStripe, sdk_endpoints, serve, typed_fields

KEY = "sk_test_fake"
PINNED = stripe.api_version
AUTOPAY = 30.0  # seconds of the fake's clock; tests move the clock instead of waiting

# Fields the SDK declares that Stripe sends only in some responses (so they may be absent):
CONDITIONAL: dict[str, set[str]] = {
    # includable: "This field is not included by default. To include it in the response, expand ..."
    "Customer": {"cash_balance", "invoice_credit_balance", "sources", "subscriptions", "tax", "tax_ids"},
    "Invoice": {"confirmation_secret", "payments"},
    "Price": {"currency_options", "tiers"},
    "Plan": {"tiers"},
    # only on events of Connect accounts / with a context
    "Event": {"account", "context"},
    # only in events of type *.updated
    "Event.Data": {"previous_attributes"},
    # one hash per payment method type the intent can use (the fake's account offers card)
    "SetupIntent.PaymentMethodOptions": set(stripe.SetupIntent.PaymentMethodOptions.__annotations__) - {"card"},
}


# -- shape checks against the SDK's classes ----------------------------------------------------------
def sdk_fields(cls: type) -> dict[str, Any]:
    """The fields a StripeObject class annotates (its own and its resource bases'), without private ones."""
    fields: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        if klass in (StripeObject, object) or not klass.__module__.startswith("stripe"):
            continue
        for name, hint in inspect.get_annotations(klass).items():
            if not name.startswith("_") and name != "OBJECT_NAME" and get_origin(hint) is not typing.ClassVar:
                fields[name] = hint
    return fields


def resolve(hint: Any, owner: type) -> Any:
    """A forward reference ('Price', ForwardRef('Invoice')) as the class it names."""
    name = hint.__forward_arg__ if isinstance(hint, ForwardRef) else hint
    if isinstance(name, str):
        found = getattr(stripe, name, None) or getattr(importlib.import_module(owner.__module__), name, None)
        return found if found is not None else Any
    return hint


def type_problems(value: Any, hint: Any, owner: type, path: str) -> list[str]:
    hint = resolve(hint, owner)
    origin, args = get_origin(hint), get_args(hint)
    if hint is Any:
        return []
    if origin is Union:
        if value is None:
            return [] if type(None) in args else [f"{path}: null, but not Optional in the SDK"]
        options = [a for a in args if a is not type(None)]
        if any(get_origin(a) is Literal for a in options):  # the SDK's open enums: the fake sends known values
            options = [a for a in options if a is not str]
        attempts = [type_problems(value, a, owner, path) for a in options]
        return [] if any(not a for a in attempts) else min(attempts, key=len)
    if value is None:
        return [f"{path}: null, but not Optional in the SDK"]
    if origin is Literal:
        return [] if value in args else [f"{path}: {value!r} not one of {args}"]
    if origin is list:
        if not isinstance(value, list):
            return [f"{path}: {value!r} is not a list"]
        return [p for i, v in enumerate(value) for p in type_problems(v, args[0], owner, f"{path}[{i}]")]
    if isinstance(origin, type) and issubclass(origin, ListObject):
        if not isinstance(value, dict) or value.get("object") != "list":
            return [f"{path}: not a list object"]
        problems = [f"{path}: list keys {sorted(value)}"] if set(value) != {"object", "data", "has_more", "url"} \
            else []
        return problems + [p for i, v in enumerate(value["data"])
                           for p in type_problems(v, args[0], owner, f"{path}.data[{i}]")]
    if isinstance(origin, type) and issubclass(origin, StripeObject):  # UntypedStripeObject[X]: a hash
        if not isinstance(value, dict):
            return [f"{path}: {value!r} is not a hash"]
        return [p for k, v in value.items() for p in type_problems(v, args[0] if args else Any, owner,
                                                                    f"{path}[{k}]")]
    if isinstance(hint, type) and issubclass(hint, StripeObject):
        if not isinstance(value, dict):
            return [f"{path}: {value!r} is not a {hint.__name__}"]
        return shape_problems(value, hint, path)
    if hint is bool:
        return [] if isinstance(value, bool) else [f"{path}: {value!r} is not a boolean"]
    if hint is int:
        return [] if isinstance(value, int) and not isinstance(value, bool) else [f"{path}: {value!r} not an int"]
    if hint is float:
        return [] if isinstance(value, int | float) and not isinstance(value, bool) else [f"{path}: not a number"]
    if hint is str:
        return [] if isinstance(value, str) else [f"{path}: {value!r} is not a string"]
    if hint is decimal.Decimal:
        try:
            decimal.Decimal(value)
        except (decimal.InvalidOperation, TypeError):
            return [f"{path}: {value!r} is not a decimal string"]
        return [] if isinstance(value, str | decimal.Decimal) else [f"{path}: decimals are sent as strings"]
    return []


def shape_problems(value: dict[str, Any], cls: type, path: str) -> list[str]:
    """Where `value` differs from what the SDK's class `cls` declares (see the module docstring)."""
    object_name = getattr(cls, "OBJECT_NAME", None)
    if object_name and value.get("object") != object_name:
        return [f"{path}: object {value.get('object')!r}, the SDK's {cls.__name__} is {object_name!r}"]
    if value.get("deleted") is True:
        return [] if set(value) == {"id", "object", "deleted"} else [f"{path}: deleted object keys {sorted(value)}"]
    fields = sdk_fields(cls)
    qualified = cls.__qualname__
    conditional = CONDITIONAL.get(qualified, set()) | {"deleted"}
    problems = [f"{path}.{k}: missing (the SDK's {qualified} has it)" for k in fields
                if k not in value and k not in conditional]
    problems += [f"{path}.{k}: not a field of the SDK's {qualified}" for k in value if k not in fields]
    for key, hint in fields.items():
        if key in value:
            problems += type_problems(value[key], hint, cls, f"{path}.{key}")
    return problems


def resource_class(object_name: str) -> type | None:
    entry = OBJECT_CLASSES.get(object_name)
    if entry is None or object_name == "list":
        return None
    cls: type = getattr(importlib.import_module(entry[0]), entry[1])
    return cls


def check_shapes(body: Any, path: str = "$") -> list[str]:
    """Every Stripe object anywhere in a response body, checked against its SDK class."""
    return list(dict.fromkeys(_walk(body, path)))


def _walk(body: Any, path: str) -> list[str]:
    problems: list[str] = []
    if isinstance(body, dict):
        cls = resource_class(body["object"]) if isinstance(body.get("object"), str) else None
        if cls is not None:
            problems += shape_problems(body, cls, path)
        for key, value in body.items():
            problems += _walk(value, f"{path}.{key}")
    elif isinstance(body, list):
        for i, value in enumerate(body):
            problems += _walk(value, f"{path}[{i}]")
    return problems


ERROR_KEYS = {"type", "message", "code", "param", "doc_url", "decline_code", "request_log_url"}


def error_problems(body: dict[str, Any]) -> list[str]:
    error = body.get("error")
    if set(body) != {"error"} or not isinstance(error, dict):
        return [f"error body {body}"]
    problems = [f"error key {k}" for k in error if k not in ERROR_KEYS]
    return problems + [f"error lacks {k}" for k in ("type", "message") if k not in error]


# -- fixtures ------------------------------------------------------------------------------------------
class Recorder(stripe.RequestsClient):
    """The SDK's own HTTP client, keeping every response body it receives."""

    def __init__(self, bodies: list[tuple[int, Any]]) -> None:
        super().__init__()
        self.bodies = bodies

    def request(self, method: str, url: str, headers: Mapping[str, str] | None,  # type: ignore[override]
                post_data: Any = None) -> tuple[bytes, int, Mapping[str, str]]:  # (as RequestsClient's own)
        content, status, response_headers = super().request(method, url, headers, post_data)
        self.bodies.append((status, json.loads(content)))
        return content, status, response_headers


@pytest.fixture(scope="module")
def running() -> Iterator[tuple[FakeStripe, str]]:
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    fake, server = serve(0, autopay_delay=AUTOPAY)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield fake, fake.public_url
    server.shutdown()
    fake.close()


@pytest.fixture
def url(running: tuple[FakeStripe, str]) -> Iterator[str]:
    base = running[1]
    requests.delete(f"{base}/_fake/data", timeout=5).raise_for_status()
    yield base
    requests.delete(f"{base}/_fake/faults", timeout=5)


@pytest.fixture
def bodies(url: str) -> Iterator[list[tuple[int, Any]]]:
    """Every body the SDK received in the test; after it, all of them must match the SDK's shapes."""
    seen: list[tuple[int, Any]] = []
    yield seen
    problems = [p for status, body in seen
                for p in (check_shapes(body) if status == 200 else error_problems(body))]
    events = requests.get(f"{url}/_fake/events", timeout=5).json()["data"]
    problems += [p for event in events for p in check_shapes(event, f"event {event['type']}")]
    assert not problems, "\n".join(problems[:40])


Client = Callable[..., stripe.StripeClient]


@pytest.fixture
def client(url: str, bodies: list[tuple[int, Any]]) -> Client:
    def make(*, retries: int = 0, version: str | None = None, key: str = KEY) -> stripe.StripeClient:
        return stripe.StripeClient(key, base_addresses={"api": url}, max_network_retries=retries,
                                   stripe_version=version, http_client=Recorder(bodies))
    return make


@pytest.fixture
def sc(client: Client) -> stripe.StripeClient:
    return client()


def p(**params: Any) -> Any:
    """Parameters as the caller sends them (unchecked by mypy, so the fake can be shown refusing them)."""
    return params


def ctl(url: str, method: str, path: str, body: Any = None) -> Any:
    response = requests.request(method, f"{url}/_fake{path}", json=body, timeout=15)
    response.raise_for_status()
    return response.json()


def advance(url: str, seconds: float) -> Any:
    return ctl(url, "POST", "/clock", {"advance": seconds})


def card(sc: stripe.StripeClient, customer: str, test_card: str = "pm_card_visa", default: bool = True) -> str:
    """Save a card as the frontend does (a setup intent confirmed by Stripe.js) and make it the default."""
    intent = sc.v1.setup_intents.create(params={"customer": customer, "automatic_payment_methods": {"enabled": True}})
    confirmed = sc.v1.setup_intents.confirm(intent.id, params={"payment_method": test_card})
    assert confirmed.status == "succeeded" and isinstance(confirmed.payment_method, str)
    if default:
        sc.v1.customers.update(customer, params={"invoice_settings": {"default_payment_method":
                                                                      confirmed.payment_method}})
    return confirmed.payment_method


def customer(sc: stripe.StripeClient, test_card: str | None = None, **params: Any) -> str:
    created = sc.v1.customers.create(params=p(email="ann@example.com", **params))
    if test_card:
        card(sc, created.id, test_card)
    return created.id


def draft(sc: stripe.StripeClient, cus: str, amounts: list[int], **params: Any) -> stripe.Invoice:
    invoice = sc.v1.invoices.create(params=p(customer=cus, currency="usd", **params))
    if amounts:
        invoice = sc.v1.invoices.add_lines(invoice.id, params={"lines": [{"amount": a} for a in amounts]})
    return invoice


def events(url: str, kind: str | None = None) -> list[dict[str, Any]]:
    found = ctl(url, "GET", "/events")["data"]
    return [e for e in found if kind is None or e["type"] == kind]


def replayed(obj: stripe.StripeObject) -> str | None:
    assert obj.last_response is not None
    header: str | None = obj.last_response.headers.get("Idempotent-Replayed")
    return header


def refusal(call: Callable[[], Any], cls: type[stripe.StripeError] = stripe.InvalidRequestError) -> Any:
    with pytest.raises(cls) as caught:
        call()
    return caught.value


# -- versions and parameters ---------------------------------------------------------------------------
def test_the_fake_follows_the_installed_sdk_pin() -> None:
    assert fake_stripe.API_VERSION == stripe.api_version == "2026-10-28.endive"


def test_an_unknown_stripe_version_is_a_400(client: Client) -> None:
    for version in ("garbage", "2026-10-29.endive", "2031-01-01"):
        error = refusal(client(version=version).v1.customers.create)
        assert error.http_status == 400 and "Invalid Stripe API version" in str(error.user_message)


def test_setup_intents_refuse_payment_method_types_from_2026_09_30(client: Client) -> None:
    sc = client()
    cus = customer(sc)
    for version in (PINNED, "2026-09-30.endive"):
        error = refusal(functools.partial(client(version=version).v1.setup_intents.create,
                                          params=p(customer=cus, payment_method_types=["card"])))
        assert (error.http_status, error.code, error.param) == (400, "payment_method_types_no_longer_supported",
                                                               "payment_method_types")
        assert error.error.type == "invalid_request_error"
    older = client(version="2025-10-29.clover").v1.setup_intents.create(
        params=p(customer=cus, payment_method_types=["card"]))
    assert older.payment_method_types == ["card"] and older.automatic_payment_methods is None


def test_unknown_parameters_are_refused_at_any_depth(sc: stripe.StripeClient) -> None:
    cus = customer(sc)
    cases = [
        (lambda: sc.v1.customers.create(params=p(emial="x@example.com")), "emial"),
        (lambda: sc.v1.setup_intents.create(params=p(customer=cus, automatic_payment_methods={"enabled": True,
                                                                                             "foo": "1"})),
         "automatic_payment_methods[foo]"),
        (lambda: sc.v1.subscriptions.create(params=p(customer=cus, items=[{"price": "price_a", "prise": "x"}])),
         "items[0][prise]"),
        (lambda: sc.v1.invoices.list(params=p(customer=cus, stauts="open")), "stauts"),
        (lambda: sc.v1.customers.create(params=p(api_key="sk_test_x2")), "api_key"),  # an option, not a param
    ]
    for call, param in cases:
        error = refusal(call)
        assert (error.http_status, error.code, error.param) == (400, "parameter_unknown", param)
        assert error.user_message == f"Received unknown parameter: {param}"


def test_missing_and_malformed_parameters_are_refused(sc: stripe.StripeClient) -> None:
    cus = customer(sc)
    invoice = draft(sc, cus, [])
    missing = refusal(lambda: sc.v1.invoices.add_lines(invoice.id, params=p()))
    assert (missing.code, missing.param) == ("parameter_missing", "lines")
    nested = refusal(lambda: sc.v1.invoices.add_lines(invoice.id, params=p(lines=[{"amount": 5,
                                                                                    "period": {"start": 1}}])))
    assert (nested.code, nested.param) == ("parameter_missing", "lines[0][period][end]")
    cases = [
        (lambda: sc.v1.invoices.create(params=p(customer=cus, auto_advance="yes")), "auto_advance", None),
        (lambda: sc.v1.invoice_items.create(params=p(customer=cus, amount="12.5", currency="usd")), "amount",
         "parameter_invalid_integer"),
        (lambda: sc.v1.invoices.create(params=p(customer=cus, collection_method="by_post")), "collection_method",
         None),
        (lambda: sc.v1.setup_intents.create(params=p(customer=cus, allowed_payment_method_types=["carrier_pigeon"])),
         "allowed_payment_method_types[0]", None),
        (lambda: sc.v1.customers.create(params=p(metadata="plain")), "metadata", None),
        (lambda: sc.v1.customers.create(params=p(email={"a": "b"})), "email", None),
    ]
    for call, param, code in cases:
        error = refusal(call)
        assert (error.http_status, error.param, error.code) == (400, param, code), error.user_message


def test_no_customer_is_a_missing_param_and_an_unknown_one_a_400(sc: stripe.StripeClient) -> None:
    assert refusal(lambda: sc.v1.invoices.create()).code == "parameter_missing"
    error = refusal(lambda: sc.v1.invoices.create(params={"customer": "cus_nope"}))
    assert (error.http_status, error.code, error.param) == (400, "resource_missing", "customer")
    error = refusal(lambda: sc.v1.customers.retrieve("cus_nope"))
    assert (error.http_status, error.code) == (404, "resource_missing")


def test_parameters_the_fake_does_not_emulate_are_refused_not_ignored(sc: stripe.StripeClient) -> None:
    cus = customer(sc)
    error = refusal(lambda: sc.v1.invoices.create(params=p(customer=cus, statement_descriptor="X")))
    assert error.param == "statement_descriptor" and "does not emulate" in str(error.user_message)
    error = refusal(lambda: sc.v1.invoices.send_invoice("in_x"))
    assert error.http_status == 404 and "does not emulate" in str(error.user_message)


def test_accepted_parameters_are_exactly_the_sdk_typeddicts() -> None:
    """What the fake checks against is derived from the SDK, not written down."""
    endpoints = sdk_endpoints()
    create = endpoints[("POST", "/v1/setup_intents")]
    assert create.params is stripe.params.SetupIntentCreateParams
    fields, required = typed_fields(stripe.params.SetupIntentCreateParams)
    assert {"allowed_payment_method_types", "automatic_payment_methods", "expand"} <= set(fields)
    assert "payment_method_types" not in fields and "idempotency_key" not in fields and not required
    assert typed_fields(stripe.params.InvoiceAddLinesParams)[1] == {"lines"}
    for (method, template) in fake_stripe._ROUTES:
        assert (method, template) in endpoints, f"{method} {template} is not an SDK endpoint"


# -- shapes ---------------------------------------------------------------------------------------------
def test_every_resource_carries_every_field_of_its_sdk_class(url: str, sc: stripe.StripeClient) -> None:
    cus = customer(sc, "pm_card_visa")
    sub = sc.v1.subscriptions.create(params={"customer": cus, "items": [{"price": "price_monthly"}]})
    invoice = draft(sc, cus, [700, 800])
    item = sc.v1.invoice_items.create(params={"customer": cus, "amount": 5, "currency": "usd"})
    line = sc.v1.invoices.line_items.list(invoice.id).data[0]
    intent = sc.v1.setup_intents.list(params={"customer": cus}).data[0]
    event = sc.v1.events.list(params={"limit": 1}).data[0]
    for obj, cls in [(sc.v1.customers.retrieve(cus), stripe.Customer), (invoice, stripe.Invoice),
                     (item, stripe.InvoiceItem), (line, stripe.InvoiceLineItem), (sub, stripe.Subscription),
                     (sub["items"].data[0], stripe.SubscriptionItem), (intent, stripe.SetupIntent),
                     (event, stripe.Event)]:
        raw = obj.to_dict()
        assert raw["object"] == cls.OBJECT_NAME  # type: ignore[attr-defined]
        missing = set(sdk_fields(cls)) - set(raw) - CONDITIONAL.get(cls.__name__, set()) - {"deleted"}
        assert not missing, f"{cls.__name__} lacks {missing}"
        assert not shape_problems(raw, cls, cls.__name__)
    balance = sc.v1.customers.retrieve(cus).balance
    assert balance == 0


def test_includable_fields_come_only_when_expanded(sc: stripe.StripeClient) -> None:
    cus = customer(sc, "pm_card_visa")
    sc.v1.subscriptions.create(params={"customer": cus, "items": [{"price": "price_monthly"}]})
    plain = sc.v1.customers.retrieve(cus).to_dict()
    assert not CONDITIONAL["Customer"] & set(plain)
    full = sc.v1.customers.retrieve(cus, params={"expand": sorted(CONDITIONAL["Customer"])}).to_dict()
    assert CONDITIONAL["Customer"] <= set(full) and len(full["subscriptions"]["data"]) == 1
    invoice = sc.v1.invoices.finalize_invoice(draft(sc, cus, [900]).id,
                                              params={"expand": ["payments", "confirmation_secret", "customer"]})
    raw = invoice.to_dict()
    assert raw["payments"]["data"][0]["status"] == "open" and raw["confirmation_secret"]["type"] == "payment_intent"
    assert raw["customer"]["id"] == cus
    listed = sc.v1.subscriptions.list(params={"customer": cus, "expand": ["data.latest_invoice"]}).data[0]
    assert listed.to_dict()["latest_invoice"]["object"] == "invoice"
    error = refusal(lambda: sc.v1.invoices.retrieve(invoice.id, params={"expand": ["total"]}))
    assert error.param == "expand"


def test_deleted_objects_say_so_and_nothing_else(sc: stripe.StripeClient) -> None:
    cus = customer(sc)
    item = sc.v1.invoice_items.create(params={"customer": cus, "amount": 5, "currency": "usd"})
    assert sc.v1.invoice_items.delete(item.id).to_dict() == {"id": item.id, "object": "invoiceitem", "deleted": True}
    invoice = draft(sc, cus, [5])
    assert sc.v1.invoices.delete(invoice.id).deleted is True
    assert refusal(lambda: sc.v1.invoices.retrieve(invoice.id)).http_status == 404
    assert sc.v1.customers.delete(cus).to_dict() == {"id": cus, "object": "customer", "deleted": True}
    assert sc.v1.customers.retrieve(cus).to_dict() == {"id": cus, "object": "customer", "deleted": True}


# -- lists ----------------------------------------------------------------------------------------------
def test_lists_page_like_stripe(sc: stripe.StripeClient) -> None:
    made = [sc.v1.customers.create(params={"email": f"c{i}@example.com"}).id for i in range(25)]
    first = sc.v1.customers.list()
    assert [c.id for c in first.data] == made[::-1][:10] and first.has_more and first.url == "/v1/customers"
    second = sc.v1.customers.list(params={"limit": 10, "starting_after": first.data[-1].id})
    assert [c.id for c in second.data] == made[::-1][10:20] and second.has_more
    back = sc.v1.customers.list(params={"limit": 5, "ending_before": second.data[0].id})
    assert [c.id for c in back.data] == made[::-1][5:10] and back.has_more
    assert [c.id for c in sc.v1.customers.list(params={"limit": 7}).auto_paging_iter()] == made[::-1]
    assert [c.id for c in sc.v1.customers.list(params={"limit": 3, "ending_before": made[0]})
            .auto_paging_iter()] == made[1:]
    for limit in (0, 101):
        assert refusal(functools.partial(sc.v1.customers.list, params={"limit": limit})).param == "limit"
    assert refusal(lambda: sc.v1.customers.list(params={"starting_after": "cus_nope"})).code == "resource_missing"
    assert [c.id for c in sc.v1.customers.list(params={"email": "c3@example.com"}).data] == [made[3]]


def test_every_list_filters_and_pages(sc: stripe.StripeClient) -> None:
    ann, bob = customer(sc, "pm_card_visa"), customer(sc)
    invoice = draft(sc, ann, list(range(100, 130)))
    lines = sc.v1.invoices.line_items.list(invoice.id, params={"limit": 7})
    assert len(lines.data) == 7 and lines.has_more and lines.url == f"/v1/invoices/{invoice.id}/lines"
    walked = [line.amount for line in lines.auto_paging_iter()]
    assert walked == list(range(100, 130))  # lines keep their order
    assert len(invoice.lines.data) == 10 and invoice.lines.has_more
    sc.v1.invoice_items.create(params={"customer": bob, "amount": 5, "currency": "usd"})
    items = sc.v1.invoice_items.list(params={"invoice": invoice.id, "limit": 100})
    assert len(items.data) == 30 and all(i.invoice == invoice.id for i in items.data)
    assert len(sc.v1.invoice_items.list(params={"pending": True}).data) == 1
    card(sc, bob, "pm_card_visa", default=False)
    assert len(sc.v1.setup_intents.list(params={"customer": bob}).data) == 1
    assert len(list(sc.v1.setup_intents.list(params={"limit": 1}).auto_paging_iter())) == 2
    sc.v1.invoices.finalize_invoice(invoice.id)
    draft(sc, ann, [50])
    assert len(sc.v1.invoices.list(params={"customer": ann}).data) == 2
    assert [i.id for i in sc.v1.invoices.list(params={"customer": ann, "status": "open"}).data] == [invoice.id]
    sub = sc.v1.subscriptions.create(params={"customer": ann, "items": [{"price": "price_monthly"}]})
    assert [s.id for s in sc.v1.subscriptions.list(params={"customer": ann, "status": "active"}).data] == [sub.id]
    assert sc.v1.subscriptions.list(params={"customer": bob}).data == []
    sc.v1.subscriptions.cancel(sub.id)
    assert sc.v1.subscriptions.list(params={"customer": ann}).data == []  # canceled ones only on request
    assert len(sc.v1.subscriptions.list(params={"customer": ann, "status": "canceled"}).data) == 1
    assert len(sc.v1.subscriptions.list(params={"status": "all"}).data) == 1


# -- invoices --------------------------------------------------------------------------------------------
def test_auto_advance_is_off_by_default_and_on_finalizes_a_draft_an_hour_later(url: str,
                                                                               sc: stripe.StripeClient) -> None:
    cus = customer(sc)
    manual = draft(sc, cus, [100])
    assert manual.auto_advance is False and manual.automatically_finalizes_at is None
    auto = draft(sc, cus, [100], auto_advance=True)
    assert auto.automatically_finalizes_at == auto.created + 3600
    assert ctl(url, "GET", "/clock")["now"] >= auto.created
    advance(url, auto.automatically_finalizes_at - ctl(url, "GET", "/clock")["now"] - 2)
    assert sc.v1.invoices.retrieve(auto.id).status == "draft"
    advance(url, 3)
    finalized = sc.v1.invoices.retrieve(auto.id)
    assert finalized.status == "open" and finalized.status_transitions.finalized_at == auto.created + 3600
    assert finalized.automatically_finalizes_at is None and finalized.number
    assert sc.v1.invoices.retrieve(manual.id).status == "draft"
    assert [e["data"]["object"]["id"] for e in events(url, "invoice.finalized")] == [auto.id]


def test_finalize_with_auto_advance_charges_after_the_autopay_delay(url: str, sc: stripe.StripeClient) -> None:
    cus = customer(sc, "pm_card_visa")
    invoice = sc.v1.invoices.finalize_invoice(draft(sc, cus, [1373]).id, params={"auto_advance": True})
    assert invoice.status == "open" and invoice.auto_advance is True
    finalized_at = invoice.status_transitions.finalized_at
    assert finalized_at and invoice.next_payment_attempt == finalized_at + AUTOPAY
    advance(url, AUTOPAY)
    paid = sc.v1.invoices.retrieve(invoice.id)
    assert (paid.status, paid.amount_paid, paid.amount_remaining, paid.attempt_count) == ("paid", 1373, 0, 1)
    not_auto = sc.v1.invoices.finalize_invoice(draft(sc, cus, [1373]).id)
    advance(url, AUTOPAY)
    assert sc.v1.invoices.retrieve(not_auto.id).status == "open"


def test_a_declined_automatic_charge_counts_an_attempt_and_emits_payment_failed(url: str,
                                                                               sc: stripe.StripeClient) -> None:
    cus = customer(sc, "pm_card_chargeDeclined")
    invoice = sc.v1.invoices.finalize_invoice(draft(sc, cus, [2000], auto_advance=True).id)
    advance(url, AUTOPAY)
    failed = sc.v1.invoices.retrieve(invoice.id)
    assert (failed.status, failed.attempt_count, failed.attempted) == ("open", 1, True)
    assert [e["data"]["object"]["id"] for e in events(url, "invoice.payment_failed")] == [invoice.id]
    error = refusal(lambda: sc.v1.invoices.pay(invoice.id), stripe.CardError)
    assert (error.http_status, error.code, error.error.decline_code) == (402, "card_declined", "generic_decline")
    assert sc.v1.invoices.retrieve(invoice.id).attempt_count == 2
    poor = customer(sc, "pm_card_chargeDeclinedInsufficientFunds")
    error = refusal(lambda: sc.v1.invoices.pay(draft(sc, poor, [2000]).id), stripe.CardError)
    assert error.error.decline_code == "insufficient_funds"


def test_no_card_means_no_automatic_charge(url: str, sc: stripe.StripeClient) -> None:
    cus = customer(sc)
    invoice = sc.v1.invoices.finalize_invoice(draft(sc, cus, [2000], auto_advance=True).id)
    advance(url, AUTOPAY)
    waiting = sc.v1.invoices.retrieve(invoice.id)
    assert (waiting.status, waiting.attempt_count) == ("open", 0)
    assert refusal(lambda: sc.v1.invoices.pay(invoice.id)).http_status == 400


def test_lines_only_on_drafts_and_at_most_250(sc: stripe.StripeClient) -> None:
    cus = customer(sc)
    invoice = draft(sc, cus, [1] * 200)
    sc.v1.invoices.add_lines(invoice.id, params={"lines": [{"amount": 1, "description": f"l{i}",
                                                            "metadata": {"i": str(i)}} for i in range(49)]})
    item = sc.v1.invoice_items.create(params={"customer": cus, "invoice": invoice.id, "amount": 1, "currency": "usd"})
    assert item.invoice == invoice.id
    full = sc.v1.invoices.retrieve(invoice.id)
    assert full.total == 250
    over = refusal(lambda: sc.v1.invoice_items.create(params={"customer": cus, "invoice": invoice.id, "amount": 1,
                                                              "currency": "usd"}))
    assert over.http_status == 400 and "250" in str(over.user_message)
    over = refusal(lambda: sc.v1.invoices.add_lines(invoice.id, params={"lines": [{"amount": 1}]}))
    assert over.param == "lines" and "250" in str(over.user_message)
    small = draft(sc, cus, [1] * 249)
    error = refusal(lambda: sc.v1.invoices.add_lines(small.id, params={"lines": [{"amount": 1}, {"amount": 1}]}))
    assert "250" in str(error.user_message)
    assert sc.v1.invoices.retrieve(small.id).total == 249  # all or nothing
    sc.v1.invoices.finalize_invoice(small.id)
    closed = refusal(lambda: sc.v1.invoices.add_lines(small.id, params={"lines": [{"amount": 1}]}))
    assert closed.code == "invoice_not_editable"
    closed = refusal(lambda: sc.v1.invoice_items.create(params={"customer": cus, "invoice": small.id, "amount": 1,
                                                                "currency": "usd"}))
    assert closed.code == "invoice_not_editable"


def test_void_only_open_invoices(sc: stripe.StripeClient) -> None:
    cus = customer(sc, "pm_card_visa")
    open_invoice = sc.v1.invoices.finalize_invoice(draft(sc, cus, [1000]).id)
    voided = sc.v1.invoices.void_invoice(open_invoice.id)
    assert voided.status == "void" and voided.status_transitions.voided_at
    paid = sc.v1.invoices.pay(sc.v1.invoices.finalize_invoice(draft(sc, cus, [1000]).id).id)
    assert paid.status == "paid"
    assert refusal(lambda: sc.v1.invoices.void_invoice(paid.id)).http_status == 400
    assert refusal(lambda: sc.v1.invoices.void_invoice(draft(sc, cus, [1]).id)).code == "invoice_not_editable"
    assert refusal(lambda: sc.v1.invoices.finalize_invoice(paid.id)).code == "invoice_not_editable"


def test_metadata_updates_merge_and_unset(sc: stripe.StripeClient) -> None:
    invoice = draft(sc, customer(sc), [10], metadata={"a": "1", "b": "2"})
    updated = sc.v1.invoices.update(invoice.id, params={"metadata": {"b": "", "c": "3"}})
    assert updated.to_dict()["metadata"] == {"a": "1", "c": "3"}
    assert sc.v1.invoices.update(invoice.id, params=p(metadata="")).to_dict()["metadata"] == {}


def test_amounts_below_the_minimum_charge_move_to_the_customer_balance(url: str, sc: stripe.StripeClient) -> None:
    cus = customer(sc, "pm_card_visa")
    small = sc.v1.invoices.finalize_invoice(draft(sc, cus, [30], auto_advance=True).id)
    assert (small.status, small.amount_due, small.amount_paid, small.amount_remaining) == ("paid", 30, 0, 0)
    assert small.ending_balance == 30 and sc.v1.customers.retrieve(cus).balance == 30
    later = sc.v1.invoices.finalize_invoice(draft(sc, cus, [1000], auto_advance=True).id)
    assert (later.starting_balance, later.total, later.amount_due, later.ending_balance) == (30, 1000, 1030, 0)
    assert sc.v1.customers.retrieve(cus).balance == 0
    advance(url, AUTOPAY)
    assert sc.v1.invoices.retrieve(later.id).amount_paid == 1030
    credit = customer(sc, balance=-500)
    covered = sc.v1.invoices.finalize_invoice(draft(sc, credit, [300]).id)
    assert (covered.status, covered.amount_due, covered.ending_balance) == ("paid", 0, -200)
    assert sc.v1.customers.retrieve(credit).balance == -200


def test_a_finalized_invoice_keeps_the_customer_details_of_that_moment(sc: stripe.StripeClient) -> None:
    cus = customer(sc, name="Ann")
    invoice = draft(sc, cus, [100])
    sc.v1.customers.update(cus, params={"name": "Ann B", "email": "annb@example.com"})
    finalized = sc.v1.invoices.finalize_invoice(invoice.id)
    assert (finalized.customer_name, finalized.customer_email) == ("Ann B", "annb@example.com")
    sc.v1.customers.update(cus, params={"name": "Ann C"})
    assert sc.v1.invoices.retrieve(invoice.id).customer_name == "Ann B"


def test_invoice_items_from_prices_and_pending_items(sc: stripe.StripeClient) -> None:
    cus = customer(sc)
    sc.v1.invoice_items.create(params={"customer": cus, "pricing": {"price": "price_x"}, "quantity": 2})
    sc.v1.invoice_items.create(params={"customer": cus, "amount": 5, "currency": "usd"})
    invoice = sc.v1.invoices.create(params={"customer": cus, "pending_invoice_items_behavior": "include"})
    assert invoice.total == 2005 and len(invoice.lines.data) == 2
    assert sc.v1.invoice_items.list(params={"pending": True}).data == []
    empty = sc.v1.invoices.create(params={"customer": cus})
    assert empty.total == 0  # exclude is the default
    mixed: Any = [{"amount": 5}, {"price_data": {"currency": "eur", "product": "prod_x", "unit_amount": 7}}]
    assert refusal(lambda: sc.v1.invoices.add_lines(empty.id, params={"lines": mixed})).param == "lines[1]"
    assert sc.v1.invoices.retrieve(empty.id).total == 0  # all or nothing
    priced = sc.v1.invoices.add_lines(empty.id, params={"lines": [{"price_data": {
        "currency": "usd", "product": "prod_x", "unit_amount": 7}, "quantity": 3}]})
    assert priced.total == 21 and priced.lines.data[0].pricing and priced.lines.data[0].pricing.price_details


# -- the clock -------------------------------------------------------------------------------------------
def test_the_clock_moves_only_forward_and_dates_new_objects(url: str, sc: stripe.StripeClient) -> None:
    before = ctl(url, "GET", "/clock")["now"]
    moved = advance(url, 86400 * 3)
    assert moved["now"] >= before + 86400 * 3
    assert sc.v1.customers.create().created >= before + 86400 * 3
    assert requests.post(f"{url}/_fake/clock", json={"advance": -5}, timeout=5).status_code == 400


# -- subscriptions ---------------------------------------------------------------------------------------
def test_a_subscription_with_a_card_is_active_with_its_first_invoice_paid(url: str, sc: stripe.StripeClient) -> None:
    cus = customer(sc, "pm_card_visa")
    sub = sc.v1.subscriptions.create(params={"customer": cus, "items": [{"price": "price_monthly"}],
                                             "metadata": {"uid": "u1"}})
    assert sub.status == "active"
    invoice = sc.v1.invoices.retrieve(str(sub.latest_invoice))
    assert (invoice.status, invoice.amount_paid, invoice.billing_reason) == ("paid", 1000, "subscription_create")
    assert invoice.parent and invoice.parent.subscription_details
    assert invoice.parent.subscription_details.subscription == sub.id
    item = sub["items"].data[0]
    assert item.price.unit_amount == 1000 and item.price.recurring and item.price.recurring.interval == "month"
    assert [e["data"]["object"]["status"] for e in events(url) if e["type"].startswith("customer.subscription")] \
        == ["incomplete", "active"]


def test_without_a_working_card_a_subscription_is_incomplete_until_paid(url: str, sc: stripe.StripeClient) -> None:
    for test_card in (None, "pm_card_chargeDeclined"):
        cus = customer(sc, test_card)
        sub = sc.v1.subscriptions.create(params={"customer": cus, "items": [{"price": "price_monthly"}]})
        assert sub.status == "incomplete"
        invoice = sc.v1.invoices.retrieve(str(sub.latest_invoice))
        assert invoice.status == "open" and invoice.attempt_count == (1 if test_card else 0)
        card(sc, cus, "pm_card_visa")
        assert sc.v1.invoices.pay(invoice.id).status == "paid"
        assert sc.v1.subscriptions.retrieve(sub.id).status == "active"


def test_an_unpaid_incomplete_subscription_expires_after_23_hours(url: str, sc: stripe.StripeClient) -> None:
    sub = sc.v1.subscriptions.create(params={"customer": customer(sc), "items": [{"price": "price_monthly"}]})
    advance(url, 23 * 3600 - 60)
    assert sc.v1.subscriptions.retrieve(sub.id).status == "incomplete"
    advance(url, 120)
    expired = sc.v1.subscriptions.retrieve(sub.id)
    assert expired.status == "incomplete_expired"
    assert sc.v1.invoices.retrieve(str(expired.latest_invoice)).status == "void"


def test_error_if_incomplete_creates_nothing(url: str, sc: stripe.StripeClient) -> None:
    cus = customer(sc, "pm_card_chargeDeclined")
    error = refusal(lambda: sc.v1.subscriptions.create(params={
        "customer": cus, "items": [{"price": "price_monthly"}], "payment_behavior": "error_if_incomplete"}),
        stripe.CardError)
    assert (error.http_status, error.code) == (402, "card_declined")
    assert sc.v1.subscriptions.list(params={"customer": cus, "status": "all"}).data == []
    assert sc.v1.invoices.list(params={"customer": cus}).data == []
    assert refusal(lambda: sc.v1.subscriptions.create(params={
        "customer": customer(sc), "items": [{"price": "price_monthly"}],
        "payment_behavior": "error_if_incomplete"})).http_status == 400


def test_cancel_and_the_subscription_events(url: str, sc: stripe.StripeClient) -> None:
    sub = sc.v1.subscriptions.create(params={"customer": customer(sc, "pm_card_visa"),
                                             "items": [{"price": "price_monthly"}]})
    canceled = sc.v1.subscriptions.cancel(sub.id)
    assert canceled.status == "canceled" and canceled.canceled_at and canceled.ended_at
    assert canceled.cancellation_details and canceled.cancellation_details.reason == "cancellation_requested"
    kinds = [e["type"] for e in events(url) if e["type"].startswith("customer.subscription")]
    assert kinds == ["customer.subscription.created", "customer.subscription.updated",
                     "customer.subscription.deleted"]
    updated = events(url, "customer.subscription.updated")[0]
    assert updated["data"]["previous_attributes"] == {"status": "incomplete"}
    assert refusal(lambda: sc.v1.subscriptions.cancel(sub.id)).http_status == 400


def test_a_subscription_renews_at_the_period_end(url: str, sc: stripe.StripeClient) -> None:
    cus = customer(sc, "pm_card_visa")
    sub = sc.v1.subscriptions.create(params={"customer": cus, "items": [{"price": "price_monthly"}]})
    end = sub["items"].data[0].current_period_end
    advance(url, end - ctl(url, "GET", "/clock")["now"] + 1)
    renewal = sc.v1.invoices.list(params={"customer": cus, "limit": 1}).data[0]
    assert renewal.billing_reason == "subscription_cycle" and renewal.status == "draft"
    advance(url, 3600 + AUTOPAY)
    assert sc.v1.invoices.retrieve(renewal.id).status == "paid"
    renewed = sc.v1.subscriptions.retrieve(sub.id)
    assert renewed.status == "active" and renewed["items"].data[0].current_period_start == end


# -- setup intents ----------------------------------------------------------------------------------------
def test_setup_intents_say_which_payment_method_types_apply(sc: stripe.StripeClient) -> None:
    cus = customer(sc)
    automatic = sc.v1.setup_intents.create(params={"customer": cus, "usage": "off_session",
                                                   "automatic_payment_methods": {"enabled": True,
                                                                                 "allow_redirects": "never"}})
    assert automatic.payment_method_types == ["card"] and automatic.automatic_payment_methods
    assert automatic.automatic_payment_methods.allow_redirects == "never"
    assert automatic.client_secret and automatic.client_secret.startswith(automatic.id + "_secret_")
    assert automatic.status == "requires_payment_method"
    allowed = sc.v1.setup_intents.create(params={"customer": cus, "allowed_payment_method_types": ["card"]})
    assert allowed.payment_method_types == ["card"] and allowed.allowed_payment_method_types == ["card"]
    configured = sc.v1.setup_intents.create(params={"customer": cus, "payment_method_configuration": "pmc_123"})
    assert configured.payment_method_configuration_details
    assert configured.payment_method_configuration_details.id == "pmc_123"
    assert sc.v1.setup_intents.create().payment_method_types == ["card"]  # automatic by default
    assert sc.v1.setup_intents.retrieve(allowed.id).id == allowed.id
    assert len(sc.v1.setup_intents.list(params={"customer": cus}).data) == 3
    canceled = sc.v1.setup_intents.cancel(allowed.id, params={"cancellation_reason": "abandoned"})
    assert (canceled.status, canceled.cancellation_reason) == ("canceled", "abandoned")
    assert refusal(lambda: sc.v1.setup_intents.confirm(allowed.id, params={"payment_method": "pm_card_visa"})
                   ).code == "setup_intent_unexpected_state"
    done = sc.v1.setup_intents.confirm(automatic.id, params={"payment_method": "pm_card_visa"})
    assert done.status == "succeeded"
    assert refusal(lambda: sc.v1.setup_intents.cancel(done.id)).code == "setup_intent_unexpected_state"
    assert refusal(lambda: sc.v1.setup_intents.confirm(configured.id, params={"payment_method": "pm_nope"})
                   ).code == "resource_missing"


def test_a_default_payment_method_must_be_the_customers(sc: stripe.StripeClient) -> None:
    ann, bob = customer(sc), customer(sc)
    pm = card(sc, ann, default=False)
    error = refusal(lambda: sc.v1.customers.update(bob, params={"invoice_settings": {"default_payment_method": pm}}))
    assert (error.code, error.param) == ("resource_missing", "invoice_settings[default_payment_method]")
    error = refusal(lambda: sc.v1.customers.update(ann, params={"invoice_settings": {
        "default_payment_method": "pm_card_visa"}}))
    assert error.code == "resource_missing"


# -- idempotency -----------------------------------------------------------------------------------------------
def test_a_key_replays_its_first_response(url: str, sc: stripe.StripeClient) -> None:
    first = sc.v1.customers.create(params={"email": "a@example.com"}, options={"idempotency_key": "k1"})
    again = sc.v1.customers.create(params={"email": "a@example.com"}, options={"idempotency_key": "k1"})
    assert again.id == first.id
    assert replayed(again) == "true" and replayed(first) is None
    assert len(sc.v1.customers.list().data) == 1


def test_errors_are_replayed_too(sc: stripe.StripeClient) -> None:
    cus = customer(sc, "pm_card_chargeDeclined")
    params: Any = {"customer": cus, "items": [{"price": "price_monthly"}], "payment_behavior": "error_if_incomplete"}
    first = refusal(lambda: sc.v1.subscriptions.create(params=params, options={"idempotency_key": "k2"}),
                    stripe.CardError)
    card(sc, cus, "pm_card_visa")  # would succeed now, but the key replays the decline
    again = refusal(lambda: sc.v1.subscriptions.create(params=params, options={"idempotency_key": "k2"}),
                    stripe.CardError)
    assert again.headers and again.headers.get("Idempotent-Replayed") == "true"
    assert again.json_body == first.json_body
    invoice = draft(sc, cus, [1])
    sc.v1.invoices.finalize_invoice(invoice.id)
    refusal(lambda: sc.v1.invoices.finalize_invoice(invoice.id, options={"idempotency_key": "k3"}))
    replayed = refusal(lambda: sc.v1.invoices.finalize_invoice(invoice.id, options={"idempotency_key": "k3"}))
    assert replayed.http_status == 400 and replayed.headers.get("Idempotent-Replayed") == "true"


def test_refusals_before_execution_are_not_saved(sc: stripe.StripeClient) -> None:
    error = refusal(lambda: sc.v1.customers.create(params=p(emial="x"), options={"idempotency_key": "k4"}))
    assert error.code == "parameter_unknown"
    fixed = sc.v1.customers.create(params={"email": "x@example.com"}, options={"idempotency_key": "k4"})
    assert replayed(fixed) is None and fixed.email == "x@example.com"


def test_a_key_with_other_parameters_or_another_endpoint_is_an_idempotency_error(sc: stripe.StripeClient) -> None:
    cus = sc.v1.customers.create(params={"email": "a@example.com"}, options={"idempotency_key": "k5"})
    other = refusal(lambda: sc.v1.customers.create(params={"email": "b@example.com"},
                                                   options={"idempotency_key": "k5"}), stripe.IdempotencyError)
    assert other.http_status == 400 and "same parameters" in str(other.user_message)
    elsewhere = refusal(lambda: sc.v1.invoices.create(params={"customer": cus.id}, options={"idempotency_key": "k5"}),
                        stripe.IdempotencyError)
    assert "same endpoint" in str(elsewhere.user_message)
    too_long = refusal(lambda: sc.v1.customers.create(options={"idempotency_key": "k" * 256}), stripe.IdempotencyError)
    assert too_long.http_status == 400


def test_a_key_still_in_flight_is_a_409_and_the_sdk_retry_gets_the_replay(url: str, client: Client) -> None:
    ctl(url, "POST", "/faults", {"delay": 1.0, "method": "POST", "path": "/v1/customers", "count": 1})
    sc, patient = client(), client(retries=3)
    with ThreadPoolExecutor(2) as pool:
        slow = pool.submit(sc.v1.customers.create, params={"email": "a@example.com"},
                           options={"idempotency_key": "k6"})
        time.sleep(0.3)
        conflict = refusal(lambda: sc.v1.customers.create(params={"email": "a@example.com"},
                                                          options={"idempotency_key": "k6"}), stripe.APIError)
        retried = patient.v1.customers.create(params={"email": "a@example.com"}, options={"idempotency_key": "k6"})
        created = slow.result()
    assert conflict.http_status == 409 and conflict.error and conflict.error.type == "idempotency_error"
    assert "in-progress request" in str(conflict.user_message)
    assert retried.id == created.id
    assert len(sc.v1.customers.list().data) == 1


def test_the_sdk_retries_a_500_with_the_same_key_and_creates_once(url: str, client: Client) -> None:
    ctl(url, "POST", "/faults", {"status": 500, "method": "POST", "path": "/v1/customers", "count": 1})
    sc = client(retries=2)
    created = sc.v1.customers.create(params={"email": "a@example.com"})
    assert created.id and len(sc.v1.customers.list().data) == 1
    assert ctl(url, "GET", "/stats")["POST v1/customers"] == 2


# -- errors ----------------------------------------------------------------------------------------------------
def test_each_error_status_raises_the_sdk_class_for_it(url: str, client: Client) -> None:
    sc = client()
    cases: list[tuple[Callable[[], Any], type[stripe.StripeError], int]] = [
        (lambda: sc.v1.customers.create(params=p(bad="x")), stripe.InvalidRequestError, 400),
        (lambda: sc.v1.invoices.retrieve("in_nope"), stripe.InvalidRequestError, 404),
        (lambda: client(key="sk_live_nope").v1.customers.list(), stripe.AuthenticationError, 401),
        (lambda: client(key="pk_test_nope").v1.customers.list(), stripe.AuthenticationError, 401),
    ]
    for call, cls, status in cases:
        error = refusal(call, cls)
        assert error.http_status == status and error.error and error.error.message
    cus = customer(sc, "pm_card_chargeDeclined")
    error = refusal(lambda: sc.v1.invoices.pay(draft(sc, cus, [100]).id), stripe.CardError)
    assert error.http_status == 402 and error.error.type == "card_error"
    for status, cls in ((429, stripe.RateLimitError), (500, stripe.APIError)):
        ctl(url, "POST", "/faults", {"status": status, "count": 1})
        error = refusal(lambda: sc.v1.customers.list(), cls)
        assert error.http_status == status
    ctl(url, "POST", "/faults", {"status": 429, "count": 1})
    rate_limited = refusal(lambda: sc.v1.customers.list(), stripe.RateLimitError)
    assert rate_limited.error and rate_limited.error.code == "rate_limit"
    raw = requests.get(f"{url}/v1/customers", headers={"Authorization": f"Bearer {KEY}"},
                       params={"limit": "0"}, timeout=5)
    assert raw.status_code == 400 and not error_problems(raw.json())
    unknown = requests.get(f"{url}/v1/nothing", headers={"Authorization": f"Bearer {KEY}"}, timeout=5)
    assert unknown.status_code == 404 and "Unrecognized request URL" in unknown.json()["error"]["message"]


# -- events and webhooks -----------------------------------------------------------------------------------------
def test_events_carry_the_version_of_the_request(url: str, client: Client) -> None:
    old = client(version="2025-03-31.basil")
    old.v1.customers.create(params={"email": "a@example.com"}, options={"idempotency_key": "k7"})
    event = old.v1.events.list(params={"type": "customer.created"}).data[0]
    assert event.api_version == "2025-03-31.basil"
    assert event.request and event.request.idempotency_key == "k7" and event.request.id
    assert client().v1.events.retrieve(event.id).id == event.id
    assert [e.type for e in client().v1.events.list(params={"types": ["customer.*"]}).data] == ["customer.created"]


class Receiver(http.server.BaseHTTPRequestHandler):
    received: typing.ClassVar[list[tuple[str, bytes]]] = []
    fail_first: typing.ClassVar[list[bool]] = [True]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.fail_first[0]:
            self.fail_first[0] = False
            self.send_response(500)
        else:
            self.received.append((self.headers["Stripe-Signature"], body))
            self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_webhooks_are_signed_in_order_and_retried(url: str, sc: stripe.StripeClient) -> None:
    receiver = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    Receiver.received.clear()
    Receiver.fail_first[0] = True
    try:
        ctl(url, "POST", "/webhook", {"url": f"http://127.0.0.1:{receiver.server_port}/hook", "secret": "whsec_t"})
        cus = customer(sc, "pm_card_visa")
        sc.v1.invoices.pay(draft(sc, cus, [900]).id)
        emitted = [e["id"] for e in events(url)]
        deadline = time.monotonic() + 10
        while len(Receiver.received) < len(emitted) and time.monotonic() < deadline:
            time.sleep(0.05)
        delivered = [stripe.Webhook.construct_event(body.decode(), header, "whsec_t")
                     for header, body in Receiver.received]
        first, *rest = emitted  # the first delivery failed (500): retried later, the others went on in order
        ids = [e.id for e in delivered]
        assert [i for i in ids if i != first] == rest and ids.count(first) == 1
        retried = next(e for e in delivered if e.id == first)
        assert retried.type == "customer.created" and retried.data.object["id"] == cus
        assert all(e.api_version == PINNED and e.pending_webhooks == 1 for e in delivered)
    finally:
        ctl(url, "POST", "/webhook", {"url": None, "secret": None})
        receiver.shutdown()


# -- the controls the emulator tests and benches use -------------------------------------------------------------
def test_stats_and_data_controls(url: str, sc: stripe.StripeClient) -> None:
    cus = customer(sc)
    intent = sc.v1.setup_intents.create(params={"customer": cus})
    sc.v1.setup_intents.confirm(intent.id, params={"payment_method": "pm_card_visa"})
    stats = ctl(url, "GET", "/stats")
    assert stats["requests"] == 3 and stats["POST v1/setup_intents/{id}/confirm"] == 1
    assert stats["POST v1/customers"] == 1
    ctl(url, "DELETE", "/idempotency")
    ctl(url, "DELETE", "/data")
    assert ctl(url, "GET", "/stats") == {} and ctl(url, "GET", "/events") == {"data": []}
    assert refusal(lambda: sc.v1.customers.retrieve(cus)).http_status == 404
