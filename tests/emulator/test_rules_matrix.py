"""The Firestore rules matrix: every collection the code uses x {anonymous, owner, other, admin}
x {get, list, listAll, create, update, delete}, each cell's expected outcome written down in
MATRIX below and checked against the emulator with the role's real ID token.

Matrix size: 24 collections x 4 roles x 6 operations = 576 cells.

Roles (each acts on the *owner's* data; `owner` is the user the seeded documents belong to):
  anonymous  no ID token at all
  owner      the user whose uid the documents carry (as `userId`, as the document id, or as the
             parent document's id)
  other      another signed-in user
  admin      another signed-in user with the custom claim `admin: true`. firestore.rules never
             reads that claim: admin powers live in the backend's HTTP API (which checks the
             claim server-side), so through the client SDK an admin is just another user.

Operations (all over the Firestore emulator's REST API, rules enforced):
  get      read the owner's seeded document
  list     the owner's own query, scoped the way rules need it: `userId == owner` for
           collections owned by a field, `__name__ == the owner's document` for collections
           keyed by uid, the whole subcollection under the owner's parent document, and an
           unfiltered query for collections with no owner
  listAll  an unfiltered collection-group query over every collection of that id
  create   create a new document (at the owner's uid where the collection is keyed by uid)
           with the owner's data, as the frontend would write it
  update   change one field of the seeded document (`displayName` on profiles, else `name`)
  delete   delete the seeded document

Intent (DESIGN, firestore.rules): deny by default; users read their own profile, usage
(summary, shards, raw events), assistants of both providers, realtime calls and their
transcripts, and invoices; the frontend creates its own profile (email, displayName,
createdAt only) and may change displayName; everything else is written only by the backend
(the server SDK bypasses rules) and read by no client.

The list of collections is checked against the source: every name passed to `.collection()`
or `.collection_group()` in shared/, functions/, migrations/ and ops/ (resolved through
constants, loops and call sites) and every constant of simplytalk/collections.py must name a
collection in MATRIX, so a new collection cannot be forgotten. devtools/ is not scanned: its
benchmarks' scratch collections never exist in a deployment (deny by default covers them).
"""

from __future__ import annotations

import ast
import base64
import json
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from devtools.emulator_auth import AuthUser, set_claims, sign_up
from devtools.stack import Stack

ROLES = ("anonymous", "owner", "other", "admin")
OPS = ("get", "list", "listAll", "create", "update", "delete")

# How the owner's documents are found: "userId" (a field), "uid" (the document id is the uid),
# "parent" (under a document whose id is the uid), "none" (no owner: global or server data).
# Document ids in patterns: {uid} is the owner's uid; any other {var} is a seeded id.
OWNED_BY: dict[str, str] = {
    "users/{uid}": "uid",
    "tokenUsage/{uid}": "uid",
    "tokenUsage/{uid}/usageShards/{shard}": "parent",
    "tokenUsage/{uid}/applied/{eventId}": "parent",
    "tokenUsage/{uid}/rollupLease/{lease}": "parent",
    "usageEvents/{eventId}": "userId",
    "openaiAssistants/{assistantId}": "userId",
    "assistants/{assistantId}": "userId",
    "realtimeCalls/{callId}": "userId",
    "realtimeCalls/{callId}/transcript/{itemId}": "userId",
    "realtimeCallSlots/{uid}/slots/{slot}": "parent",
    "realtimeTaps/{callId}": "none",
    "invoices/{invoiceId}": "userId",
    "billingLedger/{uid}": "uid",
    "billingLedger/{uid}/years/{year}": "parent",
    "invoiceRuns/{period}": "none",
    "rateCards/{cardId}": "none",
    "stripeCustomers/{customerId}": "userId",
    "stripeEvents/{eventId}": "none",
    "unattributedUsage/{eventId}": "none",
    "setAsideUsage/{eventId}": "userId",
    "migrations/{number}": "none",
    "rateLimits/{uid}": "uid",
    "scrapeCooldowns/{assistantId}": "userId",
}

# The expected outcome of every cell. A blank collection repeats the one above.
MATRIX_TABLE = """
collection                                   role       get    list   listAll create update delete
users/{uid}                                  anonymous  deny   deny   deny    deny   deny   deny
                                             owner      ALLOW  ALLOW  deny    ALLOW  ALLOW  deny
                                             other      deny   deny   deny    deny   deny   deny
                                             admin      deny   deny   deny    deny   deny   deny
tokenUsage/{uid}                             anonymous  deny   deny   deny    deny   deny   deny
                                             owner      ALLOW  ALLOW  deny    deny   deny   deny
                                             other      deny   deny   deny    deny   deny   deny
                                             admin      deny   deny   deny    deny   deny   deny
tokenUsage/{uid}/usageShards/{shard}         anonymous  deny   deny   deny    deny   deny   deny
                                             owner      ALLOW  ALLOW  deny    deny   deny   deny
                                             other      deny   deny   deny    deny   deny   deny
                                             admin      deny   deny   deny    deny   deny   deny
tokenUsage/{uid}/applied/{eventId}           anonymous  deny   deny   deny    deny   deny   deny
                                             owner      deny   deny   deny    deny   deny   deny
                                             other      deny   deny   deny    deny   deny   deny
                                             admin      deny   deny   deny    deny   deny   deny
tokenUsage/{uid}/rollupLease/{lease}         anonymous  deny   deny   deny    deny   deny   deny
                                             owner      deny   deny   deny    deny   deny   deny
                                             other      deny   deny   deny    deny   deny   deny
                                             admin      deny   deny   deny    deny   deny   deny
usageEvents/{eventId}                        anonymous  deny   deny   deny    deny   deny   deny
                                             owner      ALLOW  ALLOW  deny    deny   deny   deny
                                             other      deny   deny   deny    deny   deny   deny
                                             admin      deny   deny   deny    deny   deny   deny
openaiAssistants/{assistantId}               anonymous  deny   deny   deny    deny   deny   deny
                                             owner      ALLOW  ALLOW  deny    deny   deny   deny
                                             other      deny   deny   deny    deny   deny   deny
                                             admin      deny   deny   deny    deny   deny   deny
assistants/{assistantId}                     anonymous  deny   deny   deny    deny   deny   deny
                                             owner      ALLOW  ALLOW  deny    deny   deny   deny
                                             other      deny   deny   deny    deny   deny   deny
                                             admin      deny   deny   deny    deny   deny   deny
realtimeCalls/{callId}                       anonymous  deny   deny   deny    deny   deny   deny
                                             owner      ALLOW  ALLOW  deny    deny   deny   deny
                                             other      deny   deny   deny    deny   deny   deny
                                             admin      deny   deny   deny    deny   deny   deny
realtimeCalls/{callId}/transcript/{itemId}   anonymous  deny   deny   deny    deny   deny   deny
                                             owner      ALLOW  ALLOW  deny    deny   deny   deny
                                             other      deny   deny   deny    deny   deny   deny
                                             admin      deny   deny   deny    deny   deny   deny
realtimeCallSlots/{uid}/slots/{slot}         anonymous  deny   deny   deny    deny   deny   deny
                                             owner      deny   deny   deny    deny   deny   deny
                                             other      deny   deny   deny    deny   deny   deny
                                             admin      deny   deny   deny    deny   deny   deny
realtimeTaps/{callId}                        anonymous  deny   deny   deny    deny   deny   deny
                                             owner      deny   deny   deny    deny   deny   deny
                                             other      deny   deny   deny    deny   deny   deny
                                             admin      deny   deny   deny    deny   deny   deny
invoices/{invoiceId}                         anonymous  deny   deny   deny    deny   deny   deny
                                             owner      ALLOW  ALLOW  deny    deny   deny   deny
                                             other      deny   deny   deny    deny   deny   deny
                                             admin      deny   deny   deny    deny   deny   deny
billingLedger/{uid}                          anonymous  deny   deny   deny    deny   deny   deny
                                             owner      deny   deny   deny    deny   deny   deny
                                             other      deny   deny   deny    deny   deny   deny
                                             admin      deny   deny   deny    deny   deny   deny
billingLedger/{uid}/years/{year}             anonymous  deny   deny   deny    deny   deny   deny
                                             owner      deny   deny   deny    deny   deny   deny
                                             other      deny   deny   deny    deny   deny   deny
                                             admin      deny   deny   deny    deny   deny   deny
invoiceRuns/{period}                         anonymous  deny   deny   deny    deny   deny   deny
                                             owner      deny   deny   deny    deny   deny   deny
                                             other      deny   deny   deny    deny   deny   deny
                                             admin      deny   deny   deny    deny   deny   deny
rateCards/{cardId}                           anonymous  deny   deny   deny    deny   deny   deny
                                             owner      deny   deny   deny    deny   deny   deny
                                             other      deny   deny   deny    deny   deny   deny
                                             admin      deny   deny   deny    deny   deny   deny
stripeCustomers/{customerId}                 anonymous  deny   deny   deny    deny   deny   deny
                                             owner      deny   deny   deny    deny   deny   deny
                                             other      deny   deny   deny    deny   deny   deny
                                             admin      deny   deny   deny    deny   deny   deny
stripeEvents/{eventId}                       anonymous  deny   deny   deny    deny   deny   deny
                                             owner      deny   deny   deny    deny   deny   deny
                                             other      deny   deny   deny    deny   deny   deny
                                             admin      deny   deny   deny    deny   deny   deny
unattributedUsage/{eventId}                  anonymous  deny   deny   deny    deny   deny   deny
                                             owner      deny   deny   deny    deny   deny   deny
                                             other      deny   deny   deny    deny   deny   deny
                                             admin      deny   deny   deny    deny   deny   deny
setAsideUsage/{eventId}                      anonymous  deny   deny   deny    deny   deny   deny
                                             owner      deny   deny   deny    deny   deny   deny
                                             other      deny   deny   deny    deny   deny   deny
                                             admin      deny   deny   deny    deny   deny   deny
migrations/{number}                          anonymous  deny   deny   deny    deny   deny   deny
                                             owner      deny   deny   deny    deny   deny   deny
                                             other      deny   deny   deny    deny   deny   deny
                                             admin      deny   deny   deny    deny   deny   deny
rateLimits/{uid}                             anonymous  deny   deny   deny    deny   deny   deny
                                             owner      deny   deny   deny    deny   deny   deny
                                             other      deny   deny   deny    deny   deny   deny
                                             admin      deny   deny   deny    deny   deny   deny
scrapeCooldowns/{assistantId}                anonymous  deny   deny   deny    deny   deny   deny
                                             owner      deny   deny   deny    deny   deny   deny
                                             other      deny   deny   deny    deny   deny   deny
                                             admin      deny   deny   deny    deny   deny   deny
"""


def _parse(table: str) -> dict[str, dict[str, dict[str, bool]]]:
    lines = [line for line in table.splitlines() if line.strip()]
    header = lines[0].split()
    assert header == ["collection", "role", *OPS], header
    matrix: dict[str, dict[str, dict[str, bool]]] = {}
    collection = ""
    for line in lines[1:]:
        words = line.split()
        if not line.startswith(" "):
            collection, words = words[0], words[1:]
        role, verdicts = words[0], words[1:]
        assert role in ROLES and len(verdicts) == len(OPS) and set(verdicts) <= {"ALLOW", "deny"}, line
        assert role not in matrix.get(collection, {}), f"{collection} {role} twice"
        matrix.setdefault(collection, {})[role] = {op: v == "ALLOW" for op, v in zip(OPS, verdicts, strict=True)}
    return matrix


MATRIX = _parse(MATRIX_TABLE)
CELLS = [(c, r, o) for c in MATRIX for r in ROLES for o in OPS]


# -- the source scan: which collections the code uses -------------------------------------------

ROOT = Path(__file__).resolve().parents[2]
SCANNED = ("shared", "functions", "migrations", "ops")
COLLECTIONS_PY = ROOT / "shared" / "simplytalk" / "collections.py"
_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)


class Unresolved(Exception):
    pass


def _constants(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            out.update({t.id: node.value.value for t in node.targets if isinstance(t, ast.Name)})
    return out


def _binds(target: ast.AST, name: str) -> bool:
    return any(isinstance(n, ast.Name) and n.id == name for n in ast.walk(target))


class _Source:
    """One module: resolves the argument of each `.collection(...)` call to collection names."""

    def __init__(self, text: str, label: str, constants: dict[str, str]) -> None:
        self.label = label
        self.tree = ast.parse(text, label)
        self.parent = {c: n for n in ast.walk(self.tree) for c in ast.iter_child_nodes(n)}
        self.constants = constants
        self.modules: set[str] = set()  # local names of simplytalk.collections
        self.imported: dict[str, str] = {}  # names imported from it
        for node in ast.walk(self.tree):
            if isinstance(node, ast.ImportFrom) and node.module == "simplytalk":
                self.modules |= {a.asname or a.name for a in node.names if a.name == "collections"}
            elif isinstance(node, ast.ImportFrom) and node.module == "simplytalk.collections":
                self.imported |= {a.asname or a.name: constants[a.name] for a in node.names}
            elif isinstance(node, ast.Import):
                self.modules |= {a.asname for a in node.names if a.name == "simplytalk.collections" and a.asname}

    def where(self, node: ast.AST) -> str:
        return f"{self.label}:{getattr(node, 'lineno', '?')}"

    def uses(self) -> Iterator[tuple[str, str]]:
        for node in ast.walk(self.tree):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr in ("collection", "collection_group")):
                if len(node.args) != 1 or node.keywords:
                    raise Unresolved(f"{self.where(node)}: {ast.unparse(node)}")
                for name in self.resolve(node.args[0]):
                    yield name, self.where(node)

    def resolve(self, expr: ast.AST, depth: int = 0) -> set[str]:
        if depth > 30:
            raise Unresolved(f"{self.where(expr)}: {ast.unparse(expr)} (too deep)")
        if isinstance(expr, ast.Constant) and isinstance(expr.value, str):
            return set(expr.value.strip("/").split("/")[::2])
        if (isinstance(expr, ast.Attribute) and isinstance(expr.value, ast.Name) and expr.value.id in self.modules
                and expr.attr in self.constants):
            return {self.constants[expr.attr]}
        if isinstance(expr, ast.Name):
            if expr.id in self.imported:
                return {self.imported[expr.id]}
            values = self.bindings(expr, expr.id)
            if values:
                return set().union(*(self.resolve(v, depth + 1) for v in values))
        raise Unresolved(f"{self.where(expr)}: which collection does `{ast.unparse(expr)}` name? "
                         "(use a constant of simplytalk/collections.py or a string literal)")

    def bindings(self, at: ast.AST, name: str) -> list[ast.AST]:
        """What `name` may hold at `at`: its assignments in the innermost scope that binds it."""
        node: ast.AST | None = at
        while node is not None:
            node = self.parent.get(node)
            if isinstance(node, (*_SCOPES, ast.Module)):
                values = self._bound_in(node, name)
                if values:
                    return values
        return []

    def _bound_in(self, scope: ast.AST, name: str) -> list[ast.AST]:
        values: list[ast.AST] = []
        for node in self._walk_scope(scope):
            if isinstance(node, ast.Assign):
                for target in node.targets:
                    values += self._match(target, node.value, name)
            elif isinstance(node, ast.AnnAssign) and node.value is not None:
                values += self._match(node.target, node.value, name)
            elif isinstance(node, (ast.For, ast.AsyncFor, ast.comprehension)) and _binds(node.target, name):
                for item in self._items(node.iter):
                    values += self._match(node.target, item, name)
            elif isinstance(node, (ast.NamedExpr, ast.AugAssign)) and _binds(node.target, name):
                raise Unresolved(f"{self.where(node)}: `{name}` bound by {type(node).__name__}")
        if isinstance(scope, (ast.FunctionDef, ast.AsyncFunctionDef)):
            values += self._arguments(scope, name)
        return values

    @staticmethod
    def _walk_scope(scope: ast.AST) -> Iterator[ast.AST]:
        stack = list(ast.iter_child_nodes(scope))
        while stack:
            node = stack.pop()
            yield node
            if not isinstance(node, (*_SCOPES, ast.ClassDef)):
                stack.extend(ast.iter_child_nodes(node))

    def _match(self, target: ast.AST, value: ast.AST, name: str) -> list[ast.AST]:
        if isinstance(target, ast.Name):
            return [value] if target.id == name else []
        if isinstance(target, (ast.Tuple, ast.List)) and _binds(target, name):
            if isinstance(value, (ast.Tuple, ast.List)) and len(value.elts) == len(target.elts):
                return [v for t, e in zip(target.elts, value.elts, strict=True) for v in self._match(t, e, name)]
            raise Unresolved(f"{self.where(target)}: cannot unpack `{ast.unparse(value)}`")
        return []

    def _items(self, iterable: ast.AST) -> list[ast.AST]:
        if isinstance(iterable, (ast.Tuple, ast.List, ast.Set)):
            return list(iterable.elts)
        if isinstance(iterable, ast.Dict):
            return [k for k in iterable.keys if k is not None]
        if isinstance(iterable, ast.Name):
            return [item for value in self.bindings(iterable, iterable.id) for item in self._items(value)]
        if (isinstance(iterable, ast.Call) and isinstance(iterable.func, ast.Attribute) and not iterable.args
                and iterable.func.attr in ("items", "keys", "values")):
            method = iterable.func.attr
            out: list[ast.AST] = []
            container = iterable.func.value
            literals = self.bindings(container, container.id) if isinstance(container, ast.Name) else [container]
            for d in literals:
                if not isinstance(d, ast.Dict):
                    raise Unresolved(f"{self.where(iterable)}: {ast.unparse(iterable)}")
                for k, v in zip(d.keys, d.values, strict=True):
                    if k is None:
                        raise Unresolved(f"{self.where(d)}: ** in a dict literal")
                    out.append(k if method == "keys" else v if method == "values" else ast.Tuple(elts=[k, v]))
            return out
        raise Unresolved(f"{self.where(iterable)}: cannot list `{ast.unparse(iterable)}`")

    def _arguments(self, fn: ast.FunctionDef | ast.AsyncFunctionDef, name: str) -> list[ast.AST]:
        positional = [a.arg for a in (*fn.args.posonlyargs, *fn.args.args)]
        if name not in positional and name not in [a.arg for a in fn.args.kwonlyargs]:
            return []
        values: list[ast.AST] = []
        if name in positional:
            index = positional.index(name)
            first_default = len(positional) - len(fn.args.defaults)
            if index >= first_default:
                values.append(fn.args.defaults[index - first_default])
        else:
            kw = [a.arg for a in fn.args.kwonlyargs].index(name)
            if (default := fn.args.kw_defaults[kw]) is not None:
                values.append(default)
        method = isinstance(self.parent.get(fn), ast.ClassDef) and positional[:1] in (["self"], ["cls"])
        for call in ast.walk(self.tree):
            if not isinstance(call, ast.Call):
                continue
            func = call.func
            if isinstance(func, ast.Name) and func.id == fn.name:
                offset = 0
            elif isinstance(func, ast.Attribute) and func.attr == fn.name:
                offset = 1 if method else 0
            else:
                continue
            if any(isinstance(a, ast.Starred) for a in call.args) or any(k.arg is None for k in call.keywords):
                raise Unresolved(f"{self.where(call)}: *args or **kwargs passed to {fn.name}")
            values += [k.value for k in call.keywords if k.arg == name]
            if name in positional and 0 <= positional.index(name) - offset < len(call.args):
                values.append(call.args[positional.index(name) - offset])
        return values


def collections_in_code() -> dict[str, list[str]]:
    """Every collection name the deployed code and operator tools use -> where."""
    constants = _constants(COLLECTIONS_PY)
    found: dict[str, list[str]] = {name: [f"{COLLECTIONS_PY.relative_to(ROOT)} ({const})"]
                                   for const, name in constants.items()}
    for top in SCANNED:
        for path in sorted((ROOT / top).rglob("*.py")):
            for name, where in _Source(path.read_text(), str(path.relative_to(ROOT)), constants).uses():
                found.setdefault(name, []).append(where)
    return found


def collections_in_matrix() -> set[str]:
    return {segment for pattern in MATRIX for segment in pattern.split("/")[::2]}


# -- the matrix's own shape (no emulator needed) -------------------------------------------------

@pytest.fixture(autouse=True)
def _clean_firestore() -> None:
    """Overrides conftest's per-test wipe: the matrix seeds once for the whole module."""


def test_the_matrix_is_complete_and_its_size_is_in_the_docstring() -> None:
    assert set(MATRIX) == set(OWNED_BY)
    for collection, roles in MATRIX.items():
        assert set(roles) == set(ROLES), collection
    assert set(OWNED_BY.values()) <= {"userId", "uid", "parent", "none"}
    size = f"{len(MATRIX)} collections x {len(ROLES)} roles x {len(OPS)} operations = {len(CELLS)} cells"
    assert size in (__doc__ or ""), f"update the module docstring: {size}"


def test_every_collection_used_in_code_is_in_the_matrix() -> None:
    used = collections_in_code()
    missing = {name: where for name, where in used.items() if name not in collections_in_matrix()}
    assert not missing, f"collections the code uses with no row in MATRIX: {missing}"


def test_every_collection_in_the_matrix_is_used_in_code() -> None:
    stale = collections_in_matrix() - set(collections_in_code())
    assert not stale, f"MATRIX rows for collections no code uses (renamed?): {stale}"


def test_the_scan_resolves_names_through_variables() -> None:
    """The scanner itself: loops, tuple assignments, dict items and call sites are followed."""
    source = '''
from simplytalk import collections as col
FIELDS = {"a": "fromDict"}
def helper(db, collection):
    return db.collection(collection)
def run(db, ok):
    helper(db, col.USERS)
    for name, coll in FIELDS.items():
        helper(db, coll)
    for c in ("loopA", col.TOKEN_USAGE):
        db.collection(c).document("x").collection("sub/doc/deeper")
    target, _ = ("tupleA", 1) if ok else ("tupleB", 2)
'''
    constants = {"USERS": "users", "TOKEN_USAGE": "tokenUsage"}
    names = {name for name, _ in _Source(source, "probe.py", constants).uses()}
    assert names == {"users", "fromDict", "loopA", "tokenUsage", "sub", "deeper"}
    for unknowable in ("db.collection(target)", "db.collection(f'x{ok}')", "db.collection(col.NOT_A_CONSTANT)",
                       "db.collection(ok)"):
        with pytest.raises(Unresolved):
            list(_Source(f"{source}    {unknowable}\n", "probe.py", constants).uses())


# -- the emulator run ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Outcome:
    status: int
    body: str
    allowed: bool | None  # None: neither a clean allow nor a clean PERMISSION_DENIED

    def __str__(self) -> str:
        verdict = {True: "ALLOW", False: "deny", None: "unexpected"}[self.allowed]
        return f"{verdict} (HTTP {self.status}: {self.body[:300]})"


@dataclass(frozen=True)
class Target:
    """A MATRIX row made concrete for one owner: where its seeded document is, how to query it."""

    pattern: str
    owner: str

    @property
    def segments(self) -> list[str]:
        return [self.owner if s == "{uid}" else f"seed-{s[1:-1]}" if s.startswith("{") else s
                for s in self.pattern.split("/")]

    @property
    def doc(self) -> str:
        return "/".join(self.segments)

    @property
    def parent(self) -> str:
        return "/".join(self.segments[:-2])

    @property
    def collection_id(self) -> str:
        return self.segments[-2]

    def new_id(self, role: str) -> str:
        return self.owner if self.pattern.endswith("/{uid}") else f"new-by-{role}"

    def seed(self, email: str) -> dict[str, Any]:
        data: dict[str, Any] = {"userId": self.owner, "name": "seed"}
        if self.pattern == "users/{uid}":  # init-user finds nothing to add: its transaction only reads
            data |= {"email": email, "displayName": "Owner", "vapiAssistants": [], "openaiAssistants": []}
        return data

    def created(self, email: str) -> dict[str, Any]:
        if self.pattern == "users/{uid}":  # what the frontend writes at sign-up
            return {"email": email, "displayName": "Owner"}
        return {"userId": self.owner, "name": "created"}

    @property
    def update_field(self) -> str:
        return "displayName" if self.pattern == "users/{uid}" else "name"


_local = threading.local()


def _send(method: str, url: str, token: str | None, body: Any = None) -> tuple[int, str]:
    session = getattr(_local, "session", None)
    if session is None:
        session = _local.session = requests.Session()
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    for _ in range(20):  # a trigger's transaction may hold the document for a moment
        resp = session.request(method, url, json=body, headers=headers, timeout=20)
        if not (resp.status_code == 409 and "ABORTED" in resp.text):
            break
        time.sleep(0.1)
    return resp.status_code, resp.text


def _value(v: Any) -> dict[str, Any]:
    if isinstance(v, list):
        return {"arrayValue": {"values": [_value(x) for x in v]}}
    return {"stringValue": v}


class Runner:
    def __init__(self, stack: Stack, people: dict[str, AuthUser | None]) -> None:
        self.root = f"projects/{stack.project}/databases/(default)/documents"
        self.base = f"http://{stack.firestore_host}/v1/{self.root}"
        self.people = people
        owner = people["owner"]
        assert owner is not None
        self.owner = owner
        self.targets = {pattern: Target(pattern, owner.uid) for pattern in MATRIX}

    def token(self, role: str) -> str | None:
        person = self.people[role]
        return person.id_token if person else None

    def run(self, cell: tuple[str, str, str]) -> Outcome:
        pattern, role, op = cell
        t, token = self.targets[pattern], self.token(role)
        if op == "get":
            status, body = _send("GET", f"{self.base}/{t.doc}", token)
            return self._judge(status, body, lambda data: data.get("name") == f"{self.root}/{t.doc}")
        if op in ("list", "listAll"):
            query: dict[str, Any] = {"from": [{"collectionId": t.collection_id, "allDescendants": op == "listAll"}]}
            parent = t.parent if op == "list" else ""
            if op == "list" and OWNED_BY[pattern] == "userId":
                query["where"] = {"fieldFilter": {"field": {"fieldPath": "userId"}, "op": "EQUAL",
                                                  "value": {"stringValue": t.owner}}}
            elif op == "list" and OWNED_BY[pattern] == "uid":
                query["where"] = {"fieldFilter": {"field": {"fieldPath": "__name__"}, "op": "EQUAL",
                                                  "value": {"referenceValue": f"{self.root}/{t.doc}"}}}
            url = f"{self.base}/{parent}:runQuery" if parent else f"{self.base}:runQuery"
            status, body = _send("POST", url, token, {"structuredQuery": query})
            return self._judge(status, body, lambda rows: f"{self.root}/{t.doc}" in
                               {r.get("document", {}).get("name") for r in rows})
        if op == "create":
            prefix = f"{self.base}/{t.parent}" if t.parent else self.base
            fields = {k: _value(v) for k, v in t.created(self.owner.email).items()}
            status, body = _send("POST", f"{prefix}/{t.collection_id}?documentId={t.new_id(role)}", token,
                                 {"fields": fields})
            return self._judge(status, body, lambda data: data.get("name", "").endswith(f"/{t.new_id(role)}"))
        if op == "update":
            f = t.update_field
            status, body = _send("PATCH", f"{self.base}/{t.doc}?updateMask.fieldPaths={f}&currentDocument.exists=true",
                                 token, {"fields": {f: _value("changed")}})
            return self._judge(status, body, lambda data: data["fields"][f] == _value("changed"))
        assert op == "delete"
        status, body = _send("DELETE", f"{self.base}/{t.doc}?currentDocument.exists=true", token)
        return self._judge(status, body, lambda data: True)

    @staticmethod
    def _judge(status: int, body: str, check: Callable[[Any], bool]) -> Outcome:
        if status == 403 and "PERMISSION_DENIED" in body:
            return Outcome(status, body, False)
        if status == 200:
            try:
                ok = check(json.loads(body or "{}"))
            except (ValueError, KeyError, TypeError, AttributeError):
                ok = False
            return Outcome(status, body, True if ok else None)
        return Outcome(status, body, None)


def _run_all(runner: Runner, cells: Iterable[tuple[str, str, str]]) -> dict[tuple[str, str, str], Outcome]:
    cells = list(cells)
    with ThreadPoolExecutor(max_workers=16) as pool:
        return dict(zip(cells, pool.map(runner.run, cells), strict=True))


@pytest.fixture(scope="module")
def people(stack: Stack) -> dict[str, AuthUser | None]:
    stamp = time.time_ns()
    owner, other, admin = (sign_up(stack.auth_host, f"matrix-{who}-{stamp}@example.com")
                           for who in ("owner", "other", "admin"))
    admin = set_claims(stack.auth_host, stack.project, admin, {"admin": True})
    payload = admin.id_token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert claims.get("admin") is True, claims  # the admin row tests a real admin token
    return {"anonymous": None, "owner": owner, "other": other, "admin": admin}


@pytest.fixture(scope="module")
def outcomes(stack: Stack, db: Any, people: dict[str, AuthUser | None]) -> dict[tuple[str, str, str], Outcome]:
    """Every cell, once. Creates run on an empty database (non-owners first, then the owner,
    the profile last since it fires init-user); then one seed per collection, written with the
    emulator's admin access (rules bypassed); reads and updates; deletes last."""
    runner = Runner(stack, people)
    results: dict[tuple[str, str, str], Outcome] = {}
    creates = [c for c in CELLS if c[2] == "create"]
    stack.clear_firestore()
    results |= _run_all(runner, [c for c in creates if c[1] != "owner"])
    results |= _run_all(runner, [c for c in creates if c[1] == "owner" and c[0] != "users/{uid}"])
    results |= _run_all(runner, [c for c in creates if c[1] == "owner" and c[0] == "users/{uid}"])
    usage = db.collection("tokenUsage").document(runner.owner.uid)
    deadline = time.monotonic() + 10
    while results[("users/{uid}", "owner", "create")].allowed and not usage.get().exists \
            and time.monotonic() < deadline:  # let init-user finish before the wipe
        time.sleep(0.05)

    stack.clear_firestore()
    batch = db.batch()
    for t in runner.targets.values():
        batch.set(db.document(t.doc), t.seed(runner.owner.email))
    batch.commit()

    results |= _run_all(runner, [c for c in CELLS if c[2] in ("get", "list", "listAll", "update")])
    results |= _run_all(runner, [c for c in CELLS if c[2] == "delete"])
    assert set(results) == set(CELLS)
    return results


def _cell_id(cell: tuple[str, str, str]) -> str:
    pattern, role, op = cell
    return f"{re.sub(r'/[{][^}]+[}]$', '', pattern)}-{role}-{op}"


@pytest.mark.parametrize("cell", CELLS, ids=[_cell_id(c) for c in CELLS])
def test_cell(outcomes: dict[tuple[str, str, str], Outcome], cell: tuple[str, str, str]) -> None:
    pattern, role, op = cell
    expected = MATRIX[pattern][role][op]
    got = outcomes[cell]
    assert got.allowed is expected, (f"{role} {op} on {pattern}: expected {'ALLOW' if expected else 'deny'}, "
                                     f"got {got}")
