"""A local Stripe for tests and `make run`: the wire format of the endpoints we use.

Form-encoded requests with Stripe's bracket nesting in, JSON objects shaped as
in Stripe's API reference out (`object`, prefixed ids, `livemode: false`,
lists as `{object: "list", data, has_more}`), Stripe's error body, and
Idempotency-Key semantics (a replay returns the first response; the same key
with other parameters is a 400 idempotency_error). Webhook events are signed
with the configured secret (`Stripe-Signature: t=...,v1=...`) and delivered to
the configured URL, as Stripe does.

localstripe (PyPI) was probed first: it lacks idempotency, invoice
finalization, hosted invoice URLs and invoices from pending items, which this
backend relies on.

Run: `python -m devtools.fake_stripe --port 12111`.
Finalized auto-advancing invoices are charged automatically after
`--autopay-delay` seconds when the customer has a default payment method.
Test-only controls: `POST /_fake/webhook` {url, secret}, `GET /_fake/stats`,
`DELETE /_fake/data`, `DELETE /_fake/idempotency` (keys expire, as after 24 hours).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import secrets
import threading
import time
import urllib.parse
import urllib.request
from collections import Counter
from typing import Any

from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

API_VERSION = "2025-10-29.clover"
DECLINING_CARDS = {"pm_card_chargeDeclined", "pm_card_visa_chargeDeclined"}


class StripeError(Exception):
    def __init__(self, status: int, message: str, *, kind: str = "invalid_request_error",
                 code: str | None = None, param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.kind, self.code, self.param = status, message, kind, code, param

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"type": self.kind, "message": self.message}
        if self.code:
            error["code"] = self.code
        if self.param:
            error["param"] = self.param
        return {"error": error}


def decode_form(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """`a[b][0][c]=v` -> {"a": {"b": [{"c": "v"}]}} (Stripe's encoding)."""
    root: dict[str, Any] = {}
    for key, value in pairs:
        parts = [key.split("[", 1)[0]] + [p.rstrip("]") for p in key.split("[")[1:]]
        node = root
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return _lists(root)


def _lists(node: Any) -> Any:
    if isinstance(node, dict):
        converted = {k: _lists(v) for k, v in node.items()}
        if converted and all(k.isdigit() for k in converted):
            return [converted[k] for k in sorted(converted, key=int)]
        return converted
    return node


def _bool(value: Any, default: bool = False) -> bool:
    if value is None:
        return default
    return str(value).lower() == "true"


def _int(value: Any, param: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError) as exc:
        raise StripeError(400, f"Invalid integer: {value}", param=param) from exc


class FakeStripe:
    def __init__(self, public_url: str = "http://127.0.0.1", autopay_delay: float = 0.2) -> None:
        self.public_url = public_url
        self.autopay_delay = autopay_delay
        self.lock = threading.RLock()
        self.webhook_url: str | None = None
        self.webhook_secret: str | None = None
        self.reset()

    def reset(self) -> None:
        with self.lock:
            self.objects: dict[str, dict[str, Any]] = {}
            self.idempotency: dict[str, tuple[str, int, dict[str, Any]]] = {}
            self.stats: Counter[str] = Counter()
            self.events: list[dict[str, Any]] = []

    # -- plumbing --------------------------------------------------------------------
    def _id(self, prefix: str) -> str:
        return f"{prefix}_{secrets.token_hex(12)}"

    def _store(self, obj: dict[str, Any]) -> dict[str, Any]:
        self.objects[obj["id"]] = obj
        return obj

    def _get(self, oid: str, kind: str) -> dict[str, Any]:
        obj = self.objects.get(oid)
        if not obj or obj["object"] != kind:
            raise StripeError(404, f"No such {kind}: '{oid}'", code="resource_missing", param="id")
        return obj

    def _list(self, kind: str, url: str, **filters: Any) -> dict[str, Any]:
        data = [o for o in self.objects.values() if o["object"] == kind
                and all(filters[k] is None or o.get(k) == filters[k] for k in filters)]
        data.sort(key=lambda o: o["created"], reverse=True)
        return {"object": "list", "data": data, "has_more": False, "url": url}

    def _emit(self, kind: str, obj: dict[str, Any]) -> None:
        event = {"id": self._id("evt"), "object": "event", "api_version": API_VERSION,
                 "created": int(time.time()), "data": {"object": json.loads(json.dumps(obj))},
                 "livemode": False, "pending_webhooks": 1, "request": {"id": None, "idempotency_key": None},
                 "type": kind}
        self.events.append(event)
        if self.webhook_url and self.webhook_secret:
            threading.Thread(target=self._deliver, args=(event,), daemon=True).start()

    def _deliver(self, event: dict[str, Any]) -> None:
        import stripe

        payload = json.dumps(event)
        header = stripe.WebhookSignature.generate_signature_header(payload, self.webhook_secret or "")
        for attempt in range(5):  # Stripe retries failed deliveries
            try:
                req = urllib.request.Request(self.webhook_url or "", payload.encode(), {
                    "Content-Type": "application/json", "Stripe-Signature": header}, method="POST")
                with urllib.request.urlopen(req, timeout=30) as resp:
                    if resp.status < 300:
                        return
            except OSError:
                pass
            time.sleep(0.2 * 2**attempt)

    # -- requests --------------------------------------------------------------------
    def handle(self, method: str, path: str, params: dict[str, Any], headers: Any) -> tuple[int, Any]:
        if path.startswith("/_fake/"):
            return self._control(method, path, params)
        auth = headers.get("Authorization", "")
        if not auth.startswith("Bearer sk_test_"):
            raise StripeError(401, "Invalid API Key provided", kind="invalid_request_error")
        key = headers.get("Idempotency-Key")
        with self.lock:
            self.stats["requests"] += 1
            self.stats[f"{method} {self._route_name(path)}"] += 1
            if key and method == "POST":
                fingerprint = hashlib.sha256(json.dumps([path, params], sort_keys=True).encode()).hexdigest()
                if key in self.idempotency:
                    seen_fp, status, body = self.idempotency[key]
                    if seen_fp != fingerprint:
                        raise StripeError(400, "Keys for idempotent requests can only be used with the same "
                                               "parameters they were first used with.", kind="idempotency_error")
                    return status, body
                status, body = self._route(method, path, params)
                self.idempotency[key] = (fingerprint, status, body)
                return status, body
            return self._route(method, path, params)

    @staticmethod
    def _route_name(path: str) -> str:
        parts = path.strip("/").split("/")
        return "/".join(p if i != 2 else "{id}" for i, p in enumerate(parts))

    def _control(self, method: str, path: str, params: dict[str, Any]) -> tuple[int, Any]:
        if path == "/_fake/webhook" and method == "POST":
            self.webhook_url, self.webhook_secret = params.get("url"), params.get("secret")
            return 200, {"ok": True}
        if path == "/_fake/stats":
            return 200, dict(self.stats)
        if path == "/_fake/data" and method == "DELETE":
            self.reset()
            return 200, {"ok": True}
        if path == "/_fake/idempotency" and method == "DELETE":  # Stripe forgets keys after 24 hours
            self.idempotency.clear()
            return 200, {"ok": True}
        if path == "/_fake/events":
            return 200, {"data": self.events}
        raise StripeError(404, f"Unrecognized request URL ({method}: {path})")

    def _route(self, method: str, path: str, p: dict[str, Any]) -> tuple[int, Any]:
        parts = path.strip("/").split("/")
        if len(parts) < 2 or parts[0] != "v1":
            raise StripeError(404, f"Unrecognized request URL ({method}: {path})")
        resource, oid, action = parts[1], parts[2] if len(parts) > 2 else None, parts[3] if len(parts) > 3 else None
        handler = getattr(self, f"_{resource}", None)
        if handler is None:
            raise StripeError(404, f"Unrecognized request URL ({method}: {path})")
        result: tuple[int, Any] = handler(method, oid, action, p)
        return result

    # -- customers ---------------------------------------------------------------------
    def _customers(self, method: str, oid: str | None, action: str | None, p: dict[str, Any]) -> tuple[int, Any]:
        if method == "POST" and oid is None:
            customer = self._store({
                "id": self._id("cus"), "object": "customer", "created": int(time.time()), "livemode": False,
                "email": p.get("email"), "name": p.get("name"), "metadata": p.get("metadata") or {},
                "invoice_settings": {"default_payment_method": None}, "currency": None, "delinquent": False})
            self._emit("customer.created", customer)
            return 200, customer
        if method == "GET" and oid is None:
            return 200, self._list("customer", "/v1/customers", email=p.get("email"))
        assert oid is not None
        customer = self._get(oid, "customer")
        if method == "POST":
            if "metadata" in p:
                customer["metadata"].update(p["metadata"] or {})
            if "invoice_settings" in p:
                pm = (p["invoice_settings"] or {}).get("default_payment_method")
                customer["invoice_settings"]["default_payment_method"] = pm or None
            for field in ("email", "name"):
                if field in p:
                    customer[field] = p[field]
            self._emit("customer.updated", customer)
        return 200, customer

    # -- setup intents -----------------------------------------------------------------
    def _setup_intents(self, method: str, oid: str | None, action: str | None,
                       p: dict[str, Any]) -> tuple[int, Any]:
        if method == "POST" and oid is None:
            if p.get("customer"):
                self._get(p["customer"], "customer")
            sid = self._id("seti")
            intent = self._store({
                "id": sid, "object": "setup_intent", "created": int(time.time()), "livemode": False,
                "client_secret": f"{sid}_secret_{secrets.token_hex(8)}", "customer": p.get("customer"),
                "status": "requires_payment_method", "payment_method": None, "usage": p.get("usage", "off_session"),
                "payment_method_types": p.get("payment_method_types") or ["card"],
                "metadata": p.get("metadata") or {}})
            return 200, intent
        assert oid is not None
        intent = self._get(oid, "setup_intent")
        if method == "POST" and action == "confirm":  # what Stripe.js does in the browser
            card = p.get("payment_method") or "pm_card_visa"
            intent["payment_method"] = f"pm_{secrets.token_hex(12)}" if card == "pm_card_visa" else card
            self.objects[intent["payment_method"]] = {
                "id": intent["payment_method"], "object": "payment_method", "created": int(time.time()),
                "customer": intent["customer"], "type": "card", "declines": card in DECLINING_CARDS}
            intent["status"] = "succeeded"
            self._emit("setup_intent.succeeded", intent)
        return 200, intent

    # -- subscriptions ----------------------------------------------------------------
    def _subscriptions(self, method: str, oid: str | None, action: str | None,
                       p: dict[str, Any]) -> tuple[int, Any]:
        if method == "POST" and oid is None:
            customer = self._get(p.get("customer") or "", "customer")
            items = p.get("items") or []
            if not items or not items[0].get("price"):
                raise StripeError(400, "Missing required param: items[0][price].", param="items")
            has_card = bool(customer["invoice_settings"]["default_payment_method"])
            sub = self._store({
                "id": self._id("sub"), "object": "subscription", "created": int(time.time()),
                "livemode": False, "customer": customer["id"],
                "status": "active" if has_card else "incomplete", "cancel_at_period_end": False,
                "canceled_at": None, "metadata": p.get("metadata") or {},
                "items": {"object": "list", "data": [{"id": self._id("si"), "object": "subscription_item",
                                                      "price": {"id": items[0]["price"], "object": "price"}}],
                          "has_more": False}})
            self._emit("customer.subscription.created", sub)
            return 200, sub
        if method == "GET" and oid is None:
            return 200, self._list("subscription", "/v1/subscriptions", customer=p.get("customer"))
        assert oid is not None
        sub = self._get(oid, "subscription")
        if method == "DELETE":
            sub["status"], sub["canceled_at"] = "canceled", int(time.time())
            self._emit("customer.subscription.deleted", sub)
        elif method == "POST":
            if "cancel_at_period_end" in p:
                sub["cancel_at_period_end"] = _bool(p["cancel_at_period_end"])
            if "metadata" in p:
                sub["metadata"].update(p["metadata"] or {})
            self._emit("customer.subscription.updated", sub)
        return 200, sub

    # -- invoice items and invoices -----------------------------------------------------
    def _invoiceitems(self, method: str, oid: str | None, action: str | None,
                      p: dict[str, Any]) -> tuple[int, Any]:
        if method != "POST" or oid is not None:
            raise StripeError(404, "Unrecognized request URL")
        customer = self._get(p.get("customer") or "", "customer")
        target = None
        if p.get("invoice"):
            target = self._get(p["invoice"], "invoice")
            if target["status"] != "draft":
                raise StripeError(400, "Invoice items can only be added to draft invoices.", param="invoice")
        item = self._store({
            "id": self._id("ii"), "object": "invoiceitem", "created": int(time.time()), "livemode": False,
            "customer": customer["id"], "amount": _int(p.get("amount"), "amount"),
            "currency": p.get("currency") or "usd", "description": p.get("description"),
            "metadata": p.get("metadata") or {}, "invoice": p.get("invoice")})
        if target is not None:
            target["lines"]["data"].append(self._line(item))
            self._totals(target)
        return 200, item

    def _line(self, item: dict[str, Any]) -> dict[str, Any]:
        return {"id": self._id("il"), "object": "line_item", "amount": item["amount"], "currency": item["currency"],
                "description": item["description"], "metadata": item["metadata"], "invoice_item": item["id"]}

    @staticmethod
    def _totals(invoice: dict[str, Any]) -> None:
        total = sum(line["amount"] for line in invoice["lines"]["data"])
        invoice.update({"subtotal": total, "total": total, "amount_due": total, "amount_remaining": total})

    def _invoices(self, method: str, oid: str | None, action: str | None, p: dict[str, Any]) -> tuple[int, Any]:
        if method == "POST" and oid is None:
            customer = self._get(p.get("customer") or "", "customer")
            invoice_id = self._id("in")
            pending = [o for o in self.objects.values() if o["object"] == "invoiceitem"
                       and o["customer"] == customer["id"] and o["invoice"] is None]
            if p.get("pending_invoice_items_behavior", "exclude") != "include":
                pending = []
            for item in pending:
                item["invoice"] = invoice_id
            lines = [self._line(i) for i in pending]
            total = sum(line["amount"] for line in lines)
            invoice = self._store({
                "id": invoice_id, "object": "invoice", "created": int(time.time()), "livemode": False,
                "customer": customer["id"], "status": "draft", "currency": p.get("currency") or "usd",
                "collection_method": p.get("collection_method", "charge_automatically"),
                "auto_advance": _bool(p.get("auto_advance"), True), "metadata": p.get("metadata") or {},
                "lines": {"object": "list", "data": lines, "has_more": False},
                "subtotal": total, "total": total, "amount_due": total, "amount_paid": 0,
                "amount_remaining": total, "hosted_invoice_url": None, "invoice_pdf": None, "number": None,
                "attempt_count": 0, "status_transitions": {"finalized_at": None, "paid_at": None}})
            self._emit("invoice.created", invoice)
            return 200, invoice
        if method == "GET" and oid is None:
            return 200, self._list("invoice", "/v1/invoices", customer=p.get("customer"))
        assert oid is not None
        invoice = self._get(oid, "invoice")
        if method == "GET" and action == "lines":
            return 200, {"object": "list", "data": invoice["lines"]["data"], "has_more": False,
                         "url": f"/v1/invoices/{oid}/lines"}
        if method == "POST" and action == "finalize":
            if invoice["status"] != "draft":
                raise StripeError(400, f"This invoice is already {invoice['status']}.",
                                  code="invoice_not_editable")
            invoice["status"] = "open"
            invoice["number"] = f"FAKE-{len([o for o in self.objects.values() if o['object'] == 'invoice']):04d}"
            invoice["hosted_invoice_url"] = f"{self.public_url}/i/{invoice['id']}"
            invoice["invoice_pdf"] = f"{self.public_url}/i/{invoice['id']}/pdf"
            invoice["status_transitions"]["finalized_at"] = int(time.time())
            self._emit("invoice.finalized", invoice)
            if invoice["amount_due"] == 0:
                self._paid(invoice)
            elif invoice["auto_advance"] and invoice["collection_method"] == "charge_automatically":
                self._schedule_collection(invoice["id"])
        elif method == "POST" and action == "pay":  # Stripe's automatic collection, on demand
            if invoice["status"] != "open":
                raise StripeError(400, f"Invoice is {invoice['status']}.", code="invoice_not_open")
            self._attempt(invoice)
        elif method == "POST" and action == "void":
            invoice["status"] = "void"
            self._emit("invoice.voided", invoice)
        elif method == "POST" and action is None and "metadata" in p:
            invoice["metadata"].update(p["metadata"] or {})
        return 200, invoice

    def _schedule_collection(self, invoice_id: str) -> None:
        """Stripe charges a finalized auto-advancing invoice by itself (about an hour later there;
        `autopay_delay` seconds here), when the customer has a default payment method."""
        def collect() -> None:
            time.sleep(self.autopay_delay)
            with self.lock:
                invoice = self.objects.get(invoice_id)
                if not invoice or invoice["status"] != "open":
                    return
                customer = self.objects.get(invoice["customer"]) or {}
                if not (customer.get("invoice_settings") or {}).get("default_payment_method"):
                    return  # nothing to charge: the invoice waits, as in Stripe
                with contextlib.suppress(StripeError):
                    self._attempt(invoice)

        threading.Thread(target=collect, daemon=True).start()

    def _attempt(self, invoice: dict[str, Any]) -> None:
        customer = self._get(invoice["customer"], "customer")
        pm = customer["invoice_settings"]["default_payment_method"]
        invoice["attempt_count"] += 1
        if not pm or self.objects.get(pm, {}).get("declines"):
            self._emit("invoice.payment_failed", invoice)
            raise StripeError(402, "Your card was declined.", kind="card_error", code="card_declined")
        self._paid(invoice)

    def _paid(self, invoice: dict[str, Any]) -> None:
        invoice["status"], invoice["amount_paid"], invoice["amount_remaining"] = "paid", invoice["amount_due"], 0
        invoice["status_transitions"]["paid_at"] = int(time.time())
        self._emit("invoice.paid", invoice)

    # -- WSGI ----------------------------------------------------------------------------
    def wsgi(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        try:
            if request.path.startswith("/_fake/") and request.is_json:
                params = request.get_json()
            else:
                pairs = urllib.parse.parse_qsl(request.query_string.decode(), keep_blank_values=True)
                pairs += urllib.parse.parse_qsl(request.get_data(as_text=True), keep_blank_values=True)
                params = decode_form(pairs)
            status, body = self.handle(request.method, request.path, params, request.headers)
        except StripeError as exc:
            status, body = exc.status, exc.body()
        response = Response(json.dumps(body), status, content_type="application/json",
                            headers={"Request-Id": f"req_{secrets.token_hex(7)}", "Stripe-Version": API_VERSION})
        return response(environ, start_response)


def serve(port: int, host: str = "127.0.0.1") -> tuple[FakeStripe, Any]:
    fake = FakeStripe(public_url=f"http://{host}:{port}")
    server = make_server(host, port, fake.wsgi, threaded=True)
    return fake, server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=12111)
    args = parser.parse_args()
    _, server = serve(args.port)
    server.serve_forever()


if __name__ == "__main__":
    main()
