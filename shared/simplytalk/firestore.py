"""One lazily created Firestore client per instance."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from simplytalk.config import settings

if TYPE_CHECKING:
    from google.cloud.firestore import Client


@functools.cache
def firestore_client() -> Client:
    from google.cloud import firestore

    cfg = settings()
    if cfg.firestore_emulator_host:
        # The emulator needs no credentials; the client sends `Bearer owner`,
        # which bypasses security rules as the server SDKs do in production.
        from google.auth.credentials import AnonymousCredentials

        cfg.export_emulator_hosts()
        return firestore.Client(project=cfg.project_id, credentials=AnonymousCredentials())
    return firestore.Client(project=cfg.project_id)
