"""ASGI middleware that protects the server before any endpoint code runs.

It refuses oversized bodies (413) from ``Content-Length`` before reading them and
again while streaming (chunked uploads), cuts requests that take too long (504),
admits at most ``max_pending`` predictions at a time (503 beyond that, so a burst
queues in a bounded pool instead of filling memory with uploads), and writes a
PHI-free access log line: method, route template, status, duration. Never the
query string, file names, form fields or headers.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
import uuid
from typing import Any

from fastapi import HTTPException

access_log = logging.getLogger("medplug.serve.access")
DRAIN_LIMIT = 64 * 1024**2

Scope = dict[str, Any]


class Admission:
    """A thread-safe count of predictions in flight, bounded by ``limit``."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._count = 0
        self._lock = threading.Lock()

    @property
    def count(self) -> int:
        return self._count

    def try_enter(self) -> Ticket | None:
        with self._lock:
            if self._count >= self.limit:
                return None
            self._count += 1
        return Ticket(self)

    def _leave(self) -> None:
        with self._lock:
            self._count -= 1


class Ticket:
    """One admitted prediction; released once, by the request or by its worker job.

    A job that outlives its request's timeout keeps the ticket until the worker
    thread really finishes, so timed-out work still counts against the bound.
    """

    def __init__(self, admission: Admission) -> None:
        self._admission = admission
        self._released = False
        self._lock = threading.Lock()
        self.held_by_job = False

    def release(self) -> None:
        with self._lock:
            if self._released:
                return
            self._released = True
        self._admission._leave()


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body larger than the limit of {limit} bytes")


class RequestGuard:
    """Size limit, timeout, admission control and access log for every HTTP request."""

    def __init__(
        self,
        app: Any,
        *,
        max_body_bytes: int,
        timeout_s: float,
        admission: Admission,
        admitted_prefix: str = "/predict",
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.timeout_s = timeout_s
        self.admission = admission
        self.admitted_prefix = admitted_prefix

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = uuid.uuid4().hex[:12]
        status_sent: list[int] = []

        async def send_tracking(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status_sent.append(message["status"])
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self._guarded(scope, receive, send_tracking)
        finally:
            route = scope.get("route")
            access_log.info(
                "%s %s %s %.1fms id=%s",
                scope["method"],
                getattr(route, "path", None) or "<unmatched>",
                status_sent[0] if status_sent else "-",
                (time.perf_counter() - started) * 1000,
                request_id,
            )

    async def _guarded(self, scope: Scope, receive: Any, send: Any) -> None:
        declared = _content_length(scope)
        if declared is not None and declared > self.max_body_bytes:
            await self._drain(receive, declared)
            await _send_error(send, 413, BodyTooLarge(self.max_body_bytes).detail)
            return
        ticket = None
        if scope["method"] == "POST" and scope["path"].startswith(self.admitted_prefix):
            ticket = self.admission.try_enter()
            if ticket is None:
                await self._drain(receive, declared)
                await _send_error(
                    send,
                    503,
                    "server busy: too many predictions queued, retry later",
                    headers=[(b"retry-after", b"5")],
                )
                return
            scope.setdefault("state", {})["admission_ticket"] = ticket
        received = 0

        async def receive_limited() -> dict[str, Any]:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    if message.get("more_body", False):
                        await self._drain(receive, None)
                    raise BodyTooLarge(self.max_body_bytes)
            return message

        started: list[bool] = []

        async def send_marking(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                started.append(True)
            await send(message)

        try:
            await asyncio.wait_for(self.app(scope, receive_limited, send_marking), self.timeout_s)
        except asyncio.TimeoutError:
            if not started:
                await _send_error(send, 504, f"request took longer than {self.timeout_s:g} s")
        except Exception as exc:  # unexpected: log the type only, messages may quote data
            access_log.error("internal error %s", type(exc).__name__)
            if not started:
                await _send_error(send, 500, "internal server error")
        finally:
            if ticket is not None and not ticket.held_by_job:
                ticket.release()

    async def _drain(self, receive: Any, declared: int | None) -> None:
        """Read and discard the rest of an over-limit body before answering 413.

        Once a response is sent uvicorn stops reading, and a client still sending
        would see a connection reset instead of the 413. Bodies far over the
        limit (more than ``DRAIN_LIMIT`` bytes) are not read: those clients see
        the connection closed.
        """
        if declared is not None and declared > self.max_body_bytes + DRAIN_LIMIT:
            return
        drained = 0

        async def loop() -> None:
            nonlocal drained
            while drained <= DRAIN_LIMIT:
                message = await receive()
                drained += len(message.get("body", b""))
                if message["type"] != "http.request" or not message.get("more_body", False):
                    return

        try:
            await asyncio.wait_for(loop(), self.timeout_s)
        except asyncio.TimeoutError:
            pass


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _send_error(
    send: Any, status: int, detail: str, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
