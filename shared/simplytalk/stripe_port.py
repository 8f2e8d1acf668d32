"""The Stripe operations the payments services use: a narrow port, the SDK behind it, and a fake.

`StripeGateway` names exactly the calls `services.payments` makes (their params and idempotency
keys are the caller's); `SdkStripeGateway` makes them on a `stripe.StripeClient` (or anything
with its `v1`), unchanged; `InMemoryStripe` keeps customers, SetupIntents, subscriptions and
invoices in memory for unit tests, raising the SDK's own exception classes, so
`stripe_gateway.stripe_errors()` and the services see what they would in production.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
from typing import Any, Protocol


class StripeGateway(Protocol):
    """The Stripe calls of `services.payments`. Results are Stripe objects (attribute access, `to_dict`)."""

    def create_customer(self, params: dict[str, Any], idempotency_key: str) -> Any: ...

    def update_customer(self, customer_id: str, params: dict[str, Any], idempotency_key: str) -> Any: ...

    def retrieve_setup_intent(self, setup_intent_id: str) -> Any: ...

    def create_setup_intent(self, params: dict[str, Any], idempotency_key: str) -> Any: ...

    def create_subscription(self, params: dict[str, Any], idempotency_key: str) -> Any: ...

    def retrieve_subscription(self, subscription_id: str) -> Any: ...

    def cancel_subscription(self, subscription_id: str) -> Any: ...

    def retrieve_invoice(self, invoice_id: str) -> Any: ...

    def create_invoice(self, params: dict[str, Any], idempotency_key: str) -> Any: ...

    def pay_invoice(self, invoice_id: str) -> Any: ...

    def void_invoice(self, invoice_id: str, idempotency_key: str) -> Any: ...

    def list_invoice_lines(self, invoice_id: str, params: dict[str, Any]) -> Any: ...

    def add_invoice_lines(self, invoice_id: str, params: dict[str, Any], idempotency_key: str) -> Any: ...

    def finalize_invoice(self, invoice_id: str, params: dict[str, Any], idempotency_key: str) -> Any: ...


class SdkStripeGateway:
    """The port on the official SDK: each method is the very call `services.payments` made before.
    The client's `v1` is looked up on every call (fault-injecting tests patch it)."""

    def __init__(self, client: Any) -> None:
        self.client = client  # stripe.StripeClient, or anything with its `v1`

    def create_customer(self, params: dict[str, Any], idempotency_key: str) -> Any:
        return self.client.v1.customers.create(params=params, options={"idempotency_key": idempotency_key})

    def update_customer(self, customer_id: str, params: dict[str, Any], idempotency_key: str) -> Any:
        return self.client.v1.customers.update(customer_id, params=params,
                                               options={"idempotency_key": idempotency_key})

    def retrieve_setup_intent(self, setup_intent_id: str) -> Any:
        return self.client.v1.setup_intents.retrieve(setup_intent_id)

    def create_setup_intent(self, params: dict[str, Any], idempotency_key: str) -> Any:
        return self.client.v1.setup_intents.create(params=params, options={"idempotency_key": idempotency_key})

    def create_subscription(self, params: dict[str, Any], idempotency_key: str) -> Any:
        return self.client.v1.subscriptions.create(params=params, options={"idempotency_key": idempotency_key})

    def retrieve_subscription(self, subscription_id: str) -> Any:
        return self.client.v1.subscriptions.retrieve(subscription_id)

    def cancel_subscription(self, subscription_id: str) -> Any:
        return self.client.v1.subscriptions.cancel(subscription_id)

    def retrieve_invoice(self, invoice_id: str) -> Any:
        return self.client.v1.invoices.retrieve(invoice_id)

    def create_invoice(self, params: dict[str, Any], idempotency_key: str) -> Any:
        return self.client.v1.invoices.create(params=params, options={"idempotency_key": idempotency_key})

    def pay_invoice(self, invoice_id: str) -> Any:
        return self.client.v1.invoices.pay(invoice_id)

    def void_invoice(self, invoice_id: str, idempotency_key: str) -> Any:
        return self.client.v1.invoices.void_invoice(invoice_id, options={"idempotency_key": idempotency_key})

    def list_invoice_lines(self, invoice_id: str, params: dict[str, Any]) -> Any:
        return self.client.v1.invoices.line_items.list(invoice_id, params=params)

    def add_invoice_lines(self, invoice_id: str, params: dict[str, Any], idempotency_key: str) -> Any:
        return self.client.v1.invoices.add_lines(invoice_id, params=params,
                                                 options={"idempotency_key": idempotency_key})

    def finalize_invoice(self, invoice_id: str, params: dict[str, Any], idempotency_key: str) -> Any:
        return self.client.v1.invoices.finalize_invoice(invoice_id, params=params,
                                                        options={"idempotency_key": idempotency_key})


# -- the fake ---------------------------------------------------------------------------------------

class StripeRecord(dict[str, Any]):
    """A Stripe object as the fake hands it out: a dict with attribute access and `to_dict`."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def to_dict(self) -> dict[str, Any]:
        return copy.deepcopy(dict(self))


def _record(value: Any) -> Any:
    if isinstance(value, dict):
        return StripeRecord({k: _record(v) for k, v in value.items()})
    if isinstance(value, list):
        return [_record(v) for v in value]
    return value


class InMemoryStripe:
    """Customers, SetupIntents, subscriptions and invoices (draft/open/paid/void, lines, totals) in memory.

    Like Stripe: a create or change under an idempotency key already used returns the first result
    (the same key with other params is an `IdempotencyError`); an unknown id is a 404
    `resource_missing`; only a draft takes lines; only an open invoice is voided. Tell it to
    `decline(card)` (a `CardError` when that card is charged) or to `fail_next(operation)` (a 5xx
    `APIError` by default). `calls` records each operation made, in order.
    """

    def __init__(self, price_amounts: dict[str, int] | None = None) -> None:
        self.customers: dict[str, StripeRecord] = {}
        self.setup_intents: dict[str, StripeRecord] = {}
        self.subscriptions: dict[str, StripeRecord] = {}
        self.invoices: dict[str, StripeRecord] = {}
        self.price_amounts = dict(price_amounts or {})
        self.declined: set[str] = set()
        self.calls: list[str] = []
        self._failures: dict[str, list[Exception | None]] = {}
        self._keys: dict[str, tuple[str, Any, StripeRecord]] = {}
        self._ids = itertools.count(1)
        self._clock = itertools.count(1_700_000_000)

    # -- telling it what to do --

    def decline(self, payment_method: str) -> None:
        """Charging `payment_method` fails with a CardError (card_declined)."""
        self.declined.add(payment_method)

    def fail_next(self, operation: str, error: Exception | None = None, times: int = 1, after: int = 0) -> None:
        """After `after` calls that succeed, the next `times` calls of `operation` (a StripeGateway
        method name) raise `error` (by default a 500 APIError, Stripe's side failing)."""
        import stripe

        pending = self._failures.setdefault(operation, [])
        pending.extend([None] * after)
        pending.extend(error or stripe.APIError("Stripe had a problem", http_status=500) for _ in range(times))

    def confirm_setup_intent(self, setup_intent_id: str, payment_method: str) -> StripeRecord:
        """What Stripe.js does when the user saves a card: the intent succeeds with it."""
        intent = self._get(self.setup_intents, setup_intent_id)
        intent.update(status="succeeded", payment_method=payment_method, created=next(self._clock))
        return self._copy(intent)

    # -- the port --

    def create_customer(self, params: dict[str, Any], idempotency_key: str) -> Any:
        def make() -> StripeRecord:
            customer = self._new("cus", {"object": "customer", "email": params.get("email"),
                                         "metadata": dict(params.get("metadata") or {}),
                                         "invoice_settings": {"default_payment_method": None}})
            self.customers[customer.id] = customer
            return customer
        return self._once("create_customer", idempotency_key, params, make)

    def update_customer(self, customer_id: str, params: dict[str, Any], idempotency_key: str) -> Any:
        def change() -> StripeRecord:
            customer = self._get(self.customers, customer_id)
            for name, value in params.items():
                if isinstance(value, dict) and isinstance(customer.get(name), dict):
                    customer[name].update(_record(value))
                else:
                    customer[name] = _record(value)
            return customer
        return self._once("update_customer", idempotency_key, (customer_id, params), change)

    def retrieve_setup_intent(self, setup_intent_id: str) -> Any:
        self._enter("retrieve_setup_intent")
        return self._copy(self._get(self.setup_intents, setup_intent_id))

    def create_setup_intent(self, params: dict[str, Any], idempotency_key: str) -> Any:
        def make() -> StripeRecord:
            self._get(self.customers, params["customer"])
            intent = self._new("seti", {"object": "setup_intent", "status": "requires_payment_method",
                                        "customer": params["customer"], "usage": params.get("usage"),
                                        "payment_method": None, "created": next(self._clock),
                                        "metadata": dict(params.get("metadata") or {})})
            intent["client_secret"] = f"{intent.id}_secret"
            self.setup_intents[intent.id] = intent
            return intent
        return self._once("create_setup_intent", idempotency_key, params, make)

    def create_subscription(self, params: dict[str, Any], idempotency_key: str) -> Any:
        def make() -> StripeRecord:
            customer = self._get(self.customers, params["customer"])
            amount = sum(self.price_amounts.get(item["price"], 1000) for item in params["items"])
            subscription = self._new("sub", {"object": "subscription", "customer": customer.id,
                                             "status": "incomplete", "items": _record(list(params["items"])),
                                             "metadata": dict(params.get("metadata") or {})})
            invoice = self._new_invoice(customer.id, {"subscription": subscription.id})
            self._append_line(invoice, {"amount": amount, "description": "subscription"})
            invoice["status"] = "open"
            subscription["latest_invoice"] = invoice.id
            self.subscriptions[subscription.id] = subscription
            import stripe

            with contextlib.suppress(stripe.CardError):  # `allow_incomplete`: it stays incomplete, its invoice open
                self._charge(invoice)
            return subscription
        return self._once("create_subscription", idempotency_key, params, make)

    def retrieve_subscription(self, subscription_id: str) -> Any:
        self._enter("retrieve_subscription")
        return self._copy(self._get(self.subscriptions, subscription_id))

    def cancel_subscription(self, subscription_id: str) -> Any:
        self._enter("cancel_subscription")
        subscription = self._get(self.subscriptions, subscription_id)
        subscription["status"] = "canceled"
        return self._copy(subscription)

    def retrieve_invoice(self, invoice_id: str) -> Any:
        self._enter("retrieve_invoice")
        return self._copy(self._get(self.invoices, invoice_id))

    def create_invoice(self, params: dict[str, Any], idempotency_key: str) -> Any:
        def make() -> StripeRecord:
            self._get(self.customers, params["customer"])
            return self._new_invoice(params["customer"], {
                "collection_method": params.get("collection_method"),
                "auto_advance": bool(params.get("auto_advance")), "currency": params.get("currency"),
                "metadata": dict(params.get("metadata") or {})})
        return self._once("create_invoice", idempotency_key, params, make)

    def pay_invoice(self, invoice_id: str) -> Any:
        self._enter("pay_invoice")
        invoice = self._get(self.invoices, invoice_id)
        if invoice.status != "open":
            raise self._refusal(f"Invoice {invoice_id} is {invoice.status}; only an open invoice is paid")
        self._charge(invoice)
        return self._copy(invoice)

    def void_invoice(self, invoice_id: str, idempotency_key: str) -> Any:
        def change() -> StripeRecord:
            invoice = self._get(self.invoices, invoice_id)
            if invoice.status not in ("open", "uncollectible"):
                raise self._refusal(f"Invoice {invoice_id} is {invoice.status}; only an open invoice is voided")
            invoice["status"] = "void"
            return invoice
        return self._once("void_invoice", idempotency_key, invoice_id, change)

    def list_invoice_lines(self, invoice_id: str, params: dict[str, Any]) -> Any:
        self._enter("list_invoice_lines")
        lines: list[StripeRecord] = self._get(self.invoices, invoice_id)["lines"]["data"]
        start = 0
        if params.get("starting_after"):
            start = next(i for i, line in enumerate(lines) if line.id == params["starting_after"]) + 1
        limit = int(params.get("limit") or 10)
        page = lines[start:start + limit]
        return _record({"object": "list", "data": copy.deepcopy(page), "has_more": start + limit < len(lines)})

    def add_invoice_lines(self, invoice_id: str, params: dict[str, Any], idempotency_key: str) -> Any:
        def change() -> StripeRecord:
            invoice = self._get(self.invoices, invoice_id)
            if invoice.status != "draft":
                raise self._refusal(f"Invoice {invoice_id} is {invoice.status}; only a draft takes lines")
            for line in params["lines"]:
                self._append_line(invoice, line)
            return invoice
        return self._once("add_invoice_lines", idempotency_key, (invoice_id, params), change)

    def finalize_invoice(self, invoice_id: str, params: dict[str, Any], idempotency_key: str) -> Any:
        def change() -> StripeRecord:
            invoice = self._get(self.invoices, invoice_id)
            if invoice.status != "draft":
                raise self._refusal(f"Invoice {invoice_id} is {invoice.status}; only a draft is finalized")
            invoice.update(status="open", auto_advance=bool(params.get("auto_advance", invoice.auto_advance)))
            return invoice
        return self._once("finalize_invoice", idempotency_key, (invoice_id, params), change)

    # -- inside --

    def lines_of(self, invoice_id: str) -> list[StripeRecord]:
        return list(self.invoices[invoice_id]["lines"]["data"])

    def invoices_of(self, customer_id: str) -> list[StripeRecord]:
        return [invoice for invoice in self.invoices.values() if invoice.customer == customer_id]

    def _enter(self, operation: str) -> None:
        self.calls.append(operation)
        pending = self._failures.get(operation)
        failure = pending.pop(0) if pending else None
        if failure is not None:
            raise failure

    def _once(self, operation: str, key: str, params: Any, make: Any) -> Any:
        self._enter(operation)
        if key in self._keys:
            kind, seen, result = self._keys[key]
            if (kind, seen) != (operation, copy.deepcopy(params)):
                import stripe

                raise stripe.IdempotencyError("Keys for idempotent requests can only be used with the same "
                                              "parameters they were first used with", http_status=400)
            return copy.deepcopy(result)
        result = self._copy(make())
        self._keys[key] = (operation, copy.deepcopy(params), result)
        return copy.deepcopy(result)

    def _new(self, prefix: str, fields: dict[str, Any]) -> StripeRecord:
        record: StripeRecord = _record(fields)
        record["id"] = f"{prefix}_{next(self._ids)}"
        return record

    def _new_invoice(self, customer_id: str, fields: dict[str, Any]) -> StripeRecord:
        invoice = self._new("in", {"object": "invoice", "customer": customer_id, "status": "draft", "total": 0,
                                   "amount_due": 0, "amount_paid": 0, "starting_balance": 0, "attempt_count": 0,
                                   "hosted_invoice_url": None, "metadata": {},
                                   "lines": {"object": "list", "data": []}, **fields})
        invoice["hosted_invoice_url"] = f"https://invoice.stripe.test/{invoice.id}"
        self.invoices[invoice.id] = invoice
        return invoice

    def _append_line(self, invoice: StripeRecord, line: dict[str, Any]) -> None:
        invoice["lines"]["data"].append(self._new("il", {
            "object": "line_item", "amount": int(line["amount"]), "description": line.get("description"),
            "metadata": dict(line.get("metadata") or {})}))
        invoice["total"] = invoice["amount_due"] = sum(item.amount for item in invoice["lines"]["data"])

    def _charge(self, invoice: StripeRecord) -> None:
        """Charge an open invoice to its customer's default card; its subscription follows."""
        import stripe

        customer = self.customers[invoice.customer]
        card = (customer.get("invoice_settings") or {}).get("default_payment_method")
        invoice["attempt_count"] += 1
        if not card or card in self.declined:
            raise stripe.CardError("Your card was declined.", "payment_method", "card_declined", http_status=402,
                                   json_body={"error": {"message": "Your card was declined."}})
        invoice.update(status="paid", amount_paid=invoice.total, amount_due=0)
        for subscription in self.subscriptions.values():
            if subscription.get("latest_invoice") == invoice.id and subscription.status == "incomplete":
                subscription["status"] = "active"

    @staticmethod
    def _get(objects: dict[str, StripeRecord], object_id: str) -> StripeRecord:
        if object_id not in objects:
            raise InMemoryStripe._refusal(f"No such object: '{object_id}'", code="resource_missing", status=404)
        return objects[object_id]

    @staticmethod
    def _refusal(message: str, code: str | None = None, status: int = 400) -> Exception:
        import stripe

        return stripe.InvalidRequestError(message, "id", code=code, http_status=status)

    @staticmethod
    def _copy(record: StripeRecord) -> StripeRecord:
        return copy.deepcopy(record)
