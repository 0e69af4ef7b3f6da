"""The values a reader hands back: message heads, body pieces, and two sentinels.

Theory of operation
-------------------
A reader turns bytes into *events*, in the spirit of h11.  One message is always

    Request | Response   (the head, with the framing the reader decided)
    Data*                (zero or more pieces of the decoded body)
    EndOfMessage         (the body is complete; carries the trailer fields, if any)

and two sentinels say why there is no event right now:

    NEED_DATA            feed me more bytes (or feed_eof) and ask again (any time)
    ConnectionClosed     no further message will come on this connection (between
                         messages only)

The drive loop is always the same (STYLE.md rule 2)::

    while True:
        event = reader.next_event()
        if event is NEED_DATA:
            data = sock.recv(65536)
            reader.feed(data) if data else reader.feed_eof()
            continue
        ...act on event...

``NEED_DATA`` and ``ConnectionClosed`` are *sentinels*: unique objects compared with
``is``.  They are built like h11's: each is a class whose class is itself, so
``event is NEED_DATA`` and ``isinstance(event, NEED_DATA)`` (and ``case NEED_DATA():``
in a ``match``) all work.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from proxy.http1.framing import NO_BODY, Framing
from proxy.http1.headers import Headers


class _Sentinel(type):
    """Metaclass for sentinels: the class is its own (only) instance."""

    def __new__(mcs, name, bases, namespace, **kwargs):
        cls = super().__new__(mcs, name, bases, namespace, **kwargs)
        cls.__class__ = cls
        return cls

    def __repr__(cls) -> str:
        return cls.__name__


class NEED_DATA(_Sentinel, metaclass=_Sentinel):
    """The reader needs more bytes (``feed``) or the news that there are none (``feed_eof``)."""


class ConnectionClosed(_Sentinel, metaclass=_Sentinel):
    """No further message on this connection: a clean EOF between messages, or the
    previous message said the connection would close (RFC 9112 §9.6)."""


# Request and Response have no __slots__ on purpose: the server may attach its own
# bookkeeping (a start time, a route) to the message it is handling.
@dataclass
class Request:
    """A request head (RFC 9112 §3).  The reader fills in the last three fields."""

    method: str
    target: str
    version: str  # "HTTP/1.1" or "HTTP/1.0"
    headers: Headers
    framing: Framing = NO_BODY
    keep_alive: bool = True  # RFC 9112 §9.3: may another request follow this one?
    expect_continue: bool = False  # RFC 9110 §10.1.1: "Expect: 100-continue" (HTTP/1.1 only)


@dataclass
class Response:
    """A response head (RFC 9112 §4).  The reader fills in the last two fields."""

    version: str
    status: int
    reason: str
    headers: Headers
    framing: Framing = NO_BODY
    keep_alive: bool = True


@dataclass(slots=True)
class Data:
    """A piece of a decoded message body (chunk framing removed)."""

    data: bytes


@dataclass(slots=True)
class EndOfMessage:
    """The body is complete; ``trailers`` holds the chunked trailer section (RFC 9112 §7.1.2)."""

    trailers: Headers = field(default_factory=Headers)
