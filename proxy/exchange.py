"""One exchange, request and response, as a state machine: its phases and what a failure becomes.

Theory of operation
-------------------
A reverse proxy's whole job fits in one exchange: read a request, find it a backend,
send it there, bring the answer back.  What makes that hard is not the happy path but
the failures: at each step something different has already happened, so the same
error (the backend resets the connection, say) needs a different answer::

    READ_HEAD ──head──▶ ROUTE ──backend──▶ CONNECT ──connected──▶ SEND_REQUEST
                                              ▲                        │ sent
                                              └── retry (stale) ──┐    ▼
                                                               AWAIT_RESPONSE ⟲ 1xx
                                                                       │ first byte to the client
                                                                       ▼
                                                                    RESPOND ──end──▶ DONE

``TRANSITIONS`` is that picture as data, and ``ON_FAILURE`` is the table every proxy
carries in its head, here written down: for each phase and each kind of failure, what
the proxy does.  The line that matters most is between ``AWAIT_RESPONSE`` and
``RESPOND``: until the first byte of the response reaches the client, a failure can
still be answered with a clean ``502``; after it, the only honest thing left is to cut
the connection (``ABORT``: no close_notify, so the client sees a truncated message, never
a complete wrong one, RFC 9112 §9.8).

This module is sans-IO: it imports nothing that touches a socket.  The engine that
drives an exchange (``proxy.modes.terminate``, one thread per connection) moves it with
``ExchangePhase.go(event)`` and asks ``recovery(failure)`` what to do when something
fails; ``course.diagrams`` draws both tables.
"""

from __future__ import annotations

from enum import Enum


class Phase(Enum):
    READ_HEAD = "reading the request head"
    ROUTE = "choosing a pool and a backend"
    CONNECT = "borrowing a connection to the backend"
    SEND_REQUEST = "sending the request head and streaming its body"
    AWAIT_RESPONSE = "waiting for the response: nothing of it has reached the client"
    RESPOND = "streaming the response: the client has part of it"
    DONE = "the exchange is complete"


class Step(Enum):
    """What moves an exchange from one phase to the next."""

    HEAD = "request head read"
    BACKEND = "backend chosen"
    CONNECTED = "connection borrowed"
    SENT = "request sent"
    INTERIM = "1xx relayed"
    RETRY = "stale connection: once more"
    FIRST_BYTE = "first byte to the client"
    END = "response complete"


TRANSITIONS: dict[tuple[Phase, Step], Phase] = {
    (Phase.READ_HEAD, Step.HEAD): Phase.ROUTE,
    (Phase.ROUTE, Step.BACKEND): Phase.CONNECT,
    (Phase.CONNECT, Step.CONNECTED): Phase.SEND_REQUEST,
    (Phase.SEND_REQUEST, Step.SENT): Phase.AWAIT_RESPONSE,
    (Phase.SEND_REQUEST, Step.RETRY): Phase.CONNECT,
    (Phase.AWAIT_RESPONSE, Step.INTERIM): Phase.AWAIT_RESPONSE,
    (Phase.AWAIT_RESPONSE, Step.RETRY): Phase.CONNECT,
    (Phase.AWAIT_RESPONSE, Step.FIRST_BYTE): Phase.RESPOND,
    (Phase.RESPOND, Step.END): Phase.DONE,
}


class Failure(Enum):
    """Who failed, and how: the four columns of ``ON_FAILURE`` (see ``proxy.errors``)."""

    CLIENT_BROKE = "the client broke HTTP or a limit (ClientError)"
    CLIENT_GONE = "the client closed, reset or went quiet (ClientGone)"
    BACKEND_FAILED = "the backend failed or broke HTTP (UpstreamError)"
    BACKEND_STALE = "a reused backend connection closed before answering (StaleConnection)"


class Recovery(Enum):
    ANSWER = "answer with the error's status; keep the connection if the request was read to its end"
    LINGER = "answer, then read and discard what the client still sends before closing"
    RETRY = "once more on a fresh backend connection (idempotent, no body); otherwise answer 502"
    ABORT = "close at once without close_notify: the client sees the response cut short"
    CLOSE = "close without a word: nobody is listening"


ANSWER, LINGER, RETRY, ABORT, CLOSE = Recovery
_ = None  # cannot happen: in that phase the proxy is not reading from that side

_BY_PHASE: dict[Phase, tuple[Recovery | None, ...]] = {
    #                      CLIENT_BROKE  CLIENT_GONE  BACKEND_FAILED  BACKEND_STALE
    Phase.READ_HEAD:      (LINGER,       CLOSE,       _,              _),
    Phase.ROUTE:          (ANSWER,       CLOSE,       ANSWER,         _),
    Phase.CONNECT:        (_,            CLOSE,       ANSWER,         _),
    Phase.SEND_REQUEST:   (LINGER,       CLOSE,       ANSWER,         RETRY),
    Phase.AWAIT_RESPONSE: (_,            CLOSE,       ANSWER,         RETRY),
    Phase.RESPOND:        (_,            CLOSE,       ABORT,          ABORT),
}

#: What a failure becomes, by phase and by who failed (the table above, as a lookup).
ON_FAILURE: dict[tuple[Phase, Failure], Recovery] = {
    (phase, failure): recovery
    for phase, row in _BY_PHASE.items()
    for failure, recovery in zip(Failure, row)
    if recovery is not None
}

#: RFC 9110 §9.2.2: methods whose repetition has the same effect as one request.  Only
#: these, and only without a body, are retried: a POST may already have had its effect.
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})


class ExchangePhase:
    """Where one exchange is; ``go`` follows ``TRANSITIONS`` and refuses anything else."""

    __slots__ = ("phase",)

    def __init__(self, phase: Phase = Phase.READ_HEAD) -> None:
        self.phase = phase

    def go(self, step: Step) -> Phase:
        try:
            self.phase = TRANSITIONS[self.phase, step]
        except KeyError:
            raise RuntimeError(f"an exchange cannot take {step.name} in {self.phase.name}") from None
        return self.phase

    def recovery(self, failure: Failure, *, retryable: bool = False) -> Recovery:
        """What to do about ``failure`` now (RETRY only when the request may be repeated)."""
        recovery = ON_FAILURE[self.phase, failure]
        if recovery is Recovery.RETRY and not retryable:
            return Recovery.ANSWER
        return recovery


def retryable(method: str, has_body: bool, reused_connection: bool) -> bool:
    """May this request go once more, on a fresh connection, after a stale one failed?"""
    return reused_connection and not has_body and method in IDEMPOTENT
