"""deploy.toml, parsed."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
MANIFEST = ROOT / "deploy.toml"

SIGNATURE = {"http": "http", "firestore": "cloudevent", "pubsub": "cloudevent"}


@dataclass(frozen=True)
class Function:
    name: str
    entry_point: str
    trigger: str
    memory: str = "256Mi"
    timeout: str = "60s"
    max_instances: int | None = None
    cpu: str | None = None
    concurrency: int | None = None  # requests one instance serves at once (needs cpu >= 1)
    ack_deadline: int | None = None  # Pub/Sub: seconds a delivery may run before it is redelivered
    retry_backoff: list[str] | None = None  # Pub/Sub: [min, max] delay before a failed delivery is retried
    publishes: list[str] = field(default_factory=list)  # Pub/Sub topics the function publishes to
    event_type: str | None = None
    document: str | None = None
    topic: str | None = None
    schedule: str | None = None
    retry: bool = False
    env: dict[str, str] = field(default_factory=dict)
    secrets: dict[str, str] = field(default_factory=dict)

    @property
    def signature_type(self) -> str:
        return SIGNATURE[self.trigger]


@dataclass(frozen=True)
class Manifest:
    region: str
    runtime: str
    firestore_location: str
    source: str
    env: dict[str, str]
    functions: list[Function]

    def by_trigger(self, trigger: str) -> list[Function]:
        return [f for f in self.functions if f.trigger == trigger]


def load(path: Path = MANIFEST) -> Manifest:
    raw: dict[str, Any] = tomllib.loads(path.read_text())
    project = raw["project"]
    functions = [Function(**spec) for spec in raw.get("function", [])]
    for fn in functions:
        if fn.trigger not in SIGNATURE:
            raise ValueError(f"{fn.name}: unknown trigger {fn.trigger!r}")
        if fn.trigger == "firestore" and not (fn.event_type and fn.document):
            raise ValueError(f"{fn.name}: a firestore trigger needs event_type and document")
        if fn.trigger == "pubsub" and not fn.topic:
            raise ValueError(f"{fn.name}: a pubsub trigger needs a topic")
    return Manifest(
        region=project["region"],
        runtime=project["runtime"],
        firestore_location=project["firestore_location"],
        source=project["source"],
        env=dict(project.get("env", {})),
        functions=functions,
    )
