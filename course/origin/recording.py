"""What a demo origin saw: request counts and, with ``record_raw``, raw request bytes.

Theory of operation
-------------------
One ``_Tally`` per ``Origin`` is shared by every connection thread (under a lock)
and read by tests: how many requests were parsed, and the raw requests kept.
``_RecordingReader`` wraps a handler's buffered ``rfile`` and keeps exactly the
bytes the parser consumed for one request (the head, then at most ``body_cap``
bytes of body), so a test can prove what a request smuggling attempt did or did
not deliver to the origin.
"""

from __future__ import annotations

import threading


class _Tally:
    """What the origin saw, shared by every connection thread and read by tests."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests_seen = 0
        self.raw_requests: list[bytes] = []

    def count(self) -> None:
        with self.lock:
            self.requests_seen += 1

    def keep_raw(self, raw: bytes) -> None:
        with self.lock:
            self.raw_requests.append(raw)


class _RecordingReader:
    """Wraps the handler's buffered ``rfile``; keeps every byte the handler consumes.

    It sits *above* the read buffer, so what it keeps is what the parser took for
    one request, not whatever the kernel happened to deliver: a request smuggled
    behind another shows up as a second record.
    """

    def __init__(self, inner, body_cap: int) -> None:
        self.inner = inner
        self.body_cap = body_cap
        self.start()

    def start(self) -> None:
        self.kept = bytearray()
        self.body_kept = 0
        self.in_body = False

    def _keep(self, data) -> None:
        if self.in_body:
            data = data[: self.body_cap - self.body_kept]
            self.body_kept += len(data)
        self.kept += data

    def readline(self, limit: int = -1) -> bytes:
        line = self.inner.readline(limit)
        self._keep(line)
        return line

    def read(self, size: int = -1) -> bytes:
        data = self.inner.read(size)
        self._keep(data)
        return data

    def readinto(self, buffer) -> int:
        got = self.inner.readinto(buffer)
        self._keep(memoryview(buffer)[:got])
        return got

    def close(self) -> None:
        self.inner.close()
