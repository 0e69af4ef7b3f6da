"""A client connection's life, as a state machine: the table shutdown and the status page read.

Theory of operation
-------------------
Every connection the proxy accepts goes through the same few states, whichever mode
serves it::

    ACCEPTED ──tls──▶ HANDSHAKE ──ready──▶ IDLE ──bytes──▶ READING ──request──▶ FORWARDING
        └──────────ready (plain TCP)───────▲  ▲                │                │  │
                                           │  └──keep-alive────┼────────────────┘  │ tunnel
                                           │                   ▼ linger            ▼
                                           │               DRAINING             TUNNEL
                  any state ──close──▶ CLOSED

The states answer two questions the rest of the server asks:

* **Graceful shutdown** (``proxy.server``): which connections may be closed at once,
  and which must be let finish?  ``CUT_AT_SHUTDOWN``: a connection still in its
  handshake, idle between requests, or with only part of a head received has nothing
  in flight, so it is closed (nginx closes idle keep-alive connections the same way);
  one that is forwarding a request, relaying a tunnel or lingering is given until the
  grace period ends.
* **The status page** (``proxy.admin``): how many connections are in each state now.

``ConnectionLife.go(event)`` follows ``TRANSITIONS`` and refuses a move the table does
not have, so a mode that forgets a step fails loudly in the tests instead of
miscounting.  Sans-IO: nothing here touches a socket.
"""

from __future__ import annotations

from enum import Enum


class ConnState(Enum):
    ACCEPTED = "accepted, not yet served"
    HANDSHAKE = "TLS handshake under way"
    IDLE = "waiting for the next request (keep-alive) or the ClientHello"
    READING = "the head clock runs: from accept on a new connection, from a head's first byte after"
    FORWARDING = "a request is in flight to a backend"
    TUNNEL = "relaying opaque bytes (passthrough, CONNECT)"
    DRAINING = "answered an error; reading what the client still sends before closing"
    CLOSED = "closed"


class ConnEvent(Enum):
    TLS = "TLS listener: handshake"
    READY = "ready for a request"
    BYTES = "a head is due: its clock starts"
    REQUEST = "a whole head: forward it"
    KEEP_ALIVE = "exchange done, connection kept"
    TUNNEL = "tunnel opened"
    LINGER = "lingering close"
    CLOSE = "closed"


S, E = ConnState, ConnEvent

TRANSITIONS: dict[tuple[ConnState, ConnEvent], ConnState] = {
    (S.ACCEPTED, E.TLS): S.HANDSHAKE,
    (S.ACCEPTED, E.READY): S.IDLE,
    (S.HANDSHAKE, E.READY): S.IDLE,
    (S.IDLE, E.BYTES): S.READING,
    (S.READING, E.REQUEST): S.FORWARDING,
    (S.READING, E.TUNNEL): S.TUNNEL,  # passthrough: a ClientHello routed
    (S.READING, E.LINGER): S.DRAINING,  # a bad head, with more bytes behind it
    (S.FORWARDING, E.KEEP_ALIVE): S.IDLE,
    (S.FORWARDING, E.TUNNEL): S.TUNNEL,  # CONNECT answered 200
    (S.FORWARDING, E.LINGER): S.DRAINING,  # an error answered before the body was read
    **{(state, E.CLOSE): S.CLOSED for state in S},
}
del S, E

#: Closed at once by a graceful shutdown: nothing is in flight on them.
CUT_AT_SHUTDOWN = frozenset({ConnState.ACCEPTED, ConnState.HANDSHAKE, ConnState.IDLE, ConnState.READING})


class ConnectionLife:
    """The state of one connection; ``go`` follows ``TRANSITIONS``."""

    __slots__ = ("state",)

    def __init__(self) -> None:
        self.state = ConnState.ACCEPTED

    def go(self, event: ConnEvent) -> ConnState:
        try:
            self.state = TRANSITIONS[self.state, event]
        except KeyError:
            raise RuntimeError(f"a connection cannot take {event.name} in {self.state.name}") from None
        return self.state
