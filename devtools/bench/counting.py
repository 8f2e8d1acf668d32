"""A Firestore client (emulator) that counts its RPCs, to report round trips per request."""

from __future__ import annotations

import collections
import threading
from typing import Any

import grpc
from google.auth.credentials import AnonymousCredentials
from google.cloud import firestore


class _Counter(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor,
               grpc.StreamUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):
    def __init__(self) -> None:
        self.calls: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()

    def _count(self, details: Any) -> None:
        with self._lock:
            self.calls[details.method.rsplit("/", 1)[-1]] += 1

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        self._count(details)
        return continuation(details, request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        self._count(details)
        return continuation(details, request)

    def intercept_stream_unary(self, continuation: Any, details: Any, request_iterator: Any) -> Any:
        self._count(details)
        return continuation(details, request_iterator)

    def intercept_stream_stream(self, continuation: Any, details: Any, request_iterator: Any) -> Any:
        self._count(details)
        return continuation(details, request_iterator)

    def take(self) -> int:
        with self._lock:
            total = sum(self.calls.values())
            self.calls.clear()
            return total


class CountingClient(firestore.Client):
    def __init__(self, project: str) -> None:
        super().__init__(project=project, credentials=AnonymousCredentials())
        self.counter = _Counter()

    def _emulator_channel(self, transport: Any) -> Any:
        return grpc.intercept_channel(super()._emulator_channel(transport), self.counter)
