"""How long is the body?  RFC 9112 §6.3, the rule that request smuggling attacks.

Theory of operation
-------------------
An HTTP/1.1 message carries no explicit "end of message" marker: the recipient works
out the body length from the head, by the numbered rules of RFC 9112 §6.3.  When two
recipients in a chain (this proxy and a backend) apply those rules differently, one of
them sees the end of a request where the other sees a body, and bytes the attacker
placed "inside" the body become a second request that the proxy never inspected:
request smuggling (RFC 9112 §11.2; Linhart et al. 2005, Kettle 2019).

So this module applies the rules strictly and refuses every message whose length is
ambiguous, instead of guessing the way a lenient server would:

=====  ==================================================  =====================
rule   the message                                         framing
=====  ==================================================  =====================
1      response to HEAD; 1xx, 204, 304                     none
2      2xx response to CONNECT                             tunnel
3      both Transfer-Encoding and Content-Length           error (400 / 502)
4      Transfer-Encoding, chunked last                     chunked
4      request: Transfer-Encoding, chunked not last        error 400
4      response: Transfer-Encoding, chunked not last       close (read to EOF)
5      invalid Content-Length                              error (400 / 502)
6      valid Content-Length                                length
7      request with neither                                none (length 0)
8      response with neither                               close (read to EOF)
=====  ==================================================  =====================

``Framing`` records the decision; ``reader.py`` picks a body decoder from it and
``forwarding.py`` uses it to write the framing header of the forwarded message.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from proxy.errors import (
    ContentTooLarge,
    NotImplementedByProxy,
    ProtocolError,
)
from proxy.http1.fields import TOKEN
from proxy.http1.headers import Headers


class BodyKind(StrEnum):
    """How a body is delimited: the outcome of RFC 9112 §6.3 (a ``StrEnum``: ``"length"`` compares equal)."""

    NONE = "none"  # no body at all
    LENGTH = "length"  # exactly Content-Length bytes
    CHUNKED = "chunked"  # chunked transfer coding (RFC 9112 §7.1)
    CLOSE = "close"  # until the connection closes (responses only)
    TUNNEL = "tunnel"  # after this head the connection carries opaque bytes (CONNECT, 101)


FRAMING_KINDS = tuple(BodyKind)

# A Content-Length with more digits than this is larger than any body we will ever
# accept (10**18 bytes is an exabyte).  Refusing it before int() also keeps clear of
# CPython's int-from-string digit limit (RFC 9112 §6.3 warns about overflow).
MAX_CONTENT_LENGTH_DIGITS = 18

_is_token = TOKEN.fullmatch


@dataclass(frozen=True, slots=True)
class Framing:
    """How a message body is delimited.

    ``kind`` is one of ``"none"`` (no body), ``"length"`` (exactly ``length`` bytes),
    ``"chunked"`` (chunked transfer coding, RFC 9112 §7.1), ``"close"`` (the body
    ends when the connection closes; responses only) or ``"tunnel"`` (after this
    head the connection carries opaque bytes: CONNECT, 101 Switching Protocols).
    """

    kind: BodyKind
    length: int | None = None

    def __post_init__(self) -> None:
        if self.kind.__class__ is not BodyKind:
            try:
                object.__setattr__(self, "kind", BodyKind(self.kind))  # Framing("length", 5) works too
            except ValueError:
                raise ValueError(f"unknown framing kind {self.kind!r}") from None
        if (self.kind is BodyKind.LENGTH) != (self.length is not None):
            raise ValueError("Framing.length is set exactly when kind == 'length'")


NO_BODY = Framing(BodyKind.NONE)
CHUNKED = Framing(BodyKind.CHUNKED)
CLOSE_DELIMITED = Framing(BodyKind.CLOSE)
TUNNEL = Framing(BodyKind.TUNNEL)
EMPTY_BODY = Framing(BodyKind.LENGTH, 0)


# --------------------------------------------------------------------------- field values
def parse_content_length(values: list[str]) -> int:
    """The body length from the Content-Length field line(s): exactly one 1*DIGIT.

    RFC 9110 §8.6: Content-Length = 1*DIGIT.  No sign, no hex, no whitespace inside,
    no empty value.  RFC 9110 §8.6 lets a recipient accept "42, 42" or two identical
    lines; we refuse them, because a recipient that takes the first value and one
    that takes the last are a smuggling pair once the values differ (RFC 9112 §6.3
    rule 5: an invalid Content-Length is an unrecoverable error).
    """
    if len(values) != 1:
        raise ProtocolError("more than one Content-Length field line (RFC 9112 §6.3 rule 5)")
    value = values[0]
    # isascii() first: str.isdigit() also accepts "²" and other non-ASCII digits.
    if not (value.isascii() and value.isdigit()):
        raise ProtocolError(f"Content-Length {value[:40]!r} is not 1*DIGIT (RFC 9110 §8.6)")
    digits = value.lstrip("0") or "0"
    if len(digits) > MAX_CONTENT_LENGTH_DIGITS:
        raise ContentTooLarge(f"Content-Length has {len(digits)} digits")
    return int(digits)


def parse_transfer_coding(values: list[str]) -> list[str]:
    """The transfer codings, lower-cased, in the order they were applied.

    RFC 9112 §6.1: Transfer-Encoding = #transfer-coding, and transfer-coding names
    are case-insensitive (RFC 9112 §7), so "Chunked" is chunked.  Stricter than the
    general list rule of RFC 9110 §5.6.1 (which tolerates empty elements), because
    this field decides the framing: an empty element, a quoted string, a parameter,
    a control or a high byte are all refused here, so that no backend can read this
    value differently from us.
    """
    codings: list[str] = []
    for value in values:
        for element in value.split(","):
            element = element.strip(" \t")
            if not element:
                raise ProtocolError("empty element in Transfer-Encoding (RFC 9112 §6.1)")
            if _is_token(element) is None:
                raise ProtocolError(
                    f"Transfer-Encoding element {element[:40]!r} is not a coding name (RFC 9112 §6.1)"
                )
            codings.append(element.lower())
    if codings.count("chunked") > 1:
        # RFC 9112 §6.1: "A sender MUST NOT apply the chunked transfer coding more
        # than once to a message body."
        raise ProtocolError("chunked applied more than once (RFC 9112 §6.1)")
    return codings


def persistent_connection(version: str, headers: Headers) -> bool:
    """RFC 9112 §9.3: will the connection persist after this message?

    "close" in Connection ends it; HTTP/1.1 persists by default; HTTP/1.0 persists
    only with "Connection: keep-alive".  (RFC 9112 §9.3 tells a *forwarding* proxy
    not to honour a request's HTTP/1.0 keep-alive, because old proxies passed the
    header on blindly; this proxy removes Connection before forwarding, and to its
    client it is the server, so it honours it, as nginx does.)
    """
    tokens = headers.tokens("connection") if headers._values("connection") else ()
    if "close" in tokens:
        return False
    if version == "HTTP/1.1":
        return True
    return "keep-alive" in tokens


# --------------------------------------------------------------------------- requests
def request_framing(method: str, version: str, headers: Headers, max_body_size: int) -> Framing:
    """RFC 9112 §6.3 for a request (rules 3-7), plus CONNECT (RFC 9110 §9.3.6)."""
    transfer_encoding = headers._values("transfer-encoding")
    content_length = headers._values("content-length")
    if transfer_encoding:
        if version == "HTTP/1.0":
            # RFC 9112 §6.1: an HTTP/1.0 message with Transfer-Encoding MUST be
            # treated as if its framing were faulty: HTTP/1.0 had no chunked coding,
            # so an HTTP/1.0 backend would use the Content-Length (smuggling).
            raise ProtocolError("Transfer-Encoding in an HTTP/1.0 request (RFC 9112 §6.1)")
        if content_length:
            # RFC 9112 §6.3 rule 3: "ought to be handled as an error"; §6.1 lets a
            # server reject it.  This pair is the classic CL.TE / TE.CL smuggling.
            raise ProtocolError("both Transfer-Encoding and Content-Length (RFC 9112 §6.3 rule 3)")
        codings = parse_transfer_coding(transfer_encoding)
        if codings[-1] != "chunked":
            # RFC 9112 §6.3 rule 4: a request whose final coding is not chunked has no
            # reliable length: the server MUST respond 400 and close.
            raise ProtocolError("chunked is not the final transfer coding (RFC 9112 §6.3 rule 4)")
        if len(codings) > 1:
            # RFC 9112 §6.1: a coding the server does not understand SHOULD get 501.
            raise NotImplementedByProxy(
                f"transfer coding {codings[0]!r} is not supported (RFC 9112 §6.1)"
            )
        if method == "CONNECT":
            raise ProtocolError("CONNECT request with a body (RFC 9110 §9.3.6)")
        return CHUNKED
    if content_length:
        length = parse_content_length(content_length)
        if length > max_body_size:
            raise ContentTooLarge(f"request body of {length} bytes is over the limit")
        if method == "CONNECT":
            if length:
                # RFC 9110 §9.3.6: CONNECT has no content; bytes after the head are
                # tunnel data, and a server that read them as a body would swallow them.
                raise ProtocolError("CONNECT request with a body (RFC 9110 §9.3.6)")
            return TUNNEL
        return EMPTY_BODY if length == 0 else Framing(BodyKind.LENGTH, length)
    if method == "CONNECT":
        return TUNNEL
    return NO_BODY  # RFC 9112 §6.3 rule 7


# --------------------------------------------------------------------------- responses
def response_framing(status: int, version: str, headers: Headers, request_method: str) -> Framing:
    """RFC 9112 §6.3 for a response to ``request_method`` (rules 1-6 and 8).

    Framing headers are validated even when rule 1 says there is no body, so a
    backend that sends garbage there is caught rather than forwarded.
    """
    transfer_encoding = headers._values("transfer-encoding")
    content_length = headers._values("content-length")
    codings = None
    length = None
    if transfer_encoding:
        if content_length:
            # RFC 9112 §6.3 rule 3: might be response splitting; we do not guess.
            raise ProtocolError("both Transfer-Encoding and Content-Length (RFC 9112 §6.3 rule 3)")
        if version == "HTTP/1.0":
            raise ProtocolError("Transfer-Encoding in an HTTP/1.0 response (RFC 9112 §6.1)")
        codings = parse_transfer_coding(transfer_encoding)
    elif content_length:
        length = parse_content_length(content_length)

    if request_method == "HEAD" or status < 200 or status == 204 or status == 304:
        if status == 101:
            return TUNNEL  # RFC 9110 §15.2.2: the connection now speaks another protocol
        return NO_BODY  # rule 1
    if request_method == "CONNECT" and status < 300:
        return TUNNEL  # rule 2
    if codings is not None:
        return CHUNKED if codings[-1] == "chunked" else CLOSE_DELIMITED  # rule 4
    if length is not None:
        return EMPTY_BODY if length == 0 else Framing(BodyKind.LENGTH, length)  # rule 6
    return CLOSE_DELIMITED  # rule 8
