"""A Firestore client (emulator) that counts its RPCs, to report round trips per request."""

from __future__ import annotations

import collections
import threading
from typing import Any

import grpc
from google.auth.credentials import AnonymousCredentials
from google.cloud import firestore


class _CountingStream:
    """Proxies a streaming call, counting documents as they arrive (RunQuery, BatchGetDocuments)."""

    def __init__(self, call: Any, counter: _Counter) -> None:
        self._call, self._counter, self._docs = call, counter, 0

    def __iter__(self) -> _CountingStream:
        return self

    def __next__(self) -> Any:
        try:
            response = next(self._call)
        except StopIteration:
            if not self._docs:
                self._counter.add_reads(1)  # an empty query is billed one read
            raise
        pb = getattr(response, "_pb", response)
        fields = {f.name for f, _ in pb.ListFields()}
        if "document" in fields or "found" in fields or "missing" in fields:
            self._docs += 1  # a missing document is billed one read too
            self._counter.add_reads(1)
        return response

    def __getattr__(self, name: str) -> Any:
        return getattr(self._call, name)


class _Counter(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor,
               grpc.StreamUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):
    def __init__(self) -> None:
        self.calls: collections.Counter[str] = collections.Counter()
        self.reads = 0
        self.writes = 0
        self._lock = threading.Lock()

    def add_reads(self, n: int) -> None:
        with self._lock:
            self.reads += n

    def take_reads(self) -> int:
        with self._lock:
            reads, self.reads = self.reads, 0
            return reads

    def _count(self, details: Any) -> None:
        with self._lock:
            self.calls[details.method.rsplit("/", 1)[-1]] += 1

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        self._count(details)
        if details.method.endswith("/Commit"):  # a batch's or a transaction's writes (billed each)
            with self._lock:
                self.writes += len(request.writes)
        return continuation(details, request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        self._count(details)
        return _CountingStream(continuation(details, request), self)

    def intercept_stream_unary(self, continuation: Any, details: Any, request_iterator: Any) -> Any:
        self._count(details)
        return continuation(details, request_iterator)

    def intercept_stream_stream(self, continuation: Any, details: Any, request_iterator: Any) -> Any:
        self._count(details)
        return continuation(details, request_iterator)

    def take_writes(self) -> int:
        with self._lock:
            writes, self.writes = self.writes, 0
            return writes

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
