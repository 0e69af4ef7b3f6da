"""Run every request and response vector through the sans-IO readers.

Each vector is run three ways: all bytes in one feed without EOF (a bad request
must be refused from its bytes alone, never by waiting), all bytes then EOF, and
one byte per feed (the outcome must not depend on how TCP split the bytes).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from proxy.errors import IncompleteMessage, ProtocolError
from proxy.http1 import (
    NEED_DATA,
    ConnectionClosed,
    Data,
    EndOfMessage,
    ReaderState,
    Request,
    RequestReader,
    Response,
    ResponseReader,
)
from tests.vectors.request_vectors import REQUEST_VECTORS, RequestVector
from tests.vectors.response_vectors import RESPONSE_VECTORS, ResponseVector


@dataclass
class Outcome:
    heads: list = field(default_factory=list)  # Request/Response events, in order
    bodies: list[bytes] = field(default_factory=list)  # one per completed message
    error: ProtocolError | None = None
    error_after_head: bool = False  # was the error raised after a head event?
    waiting: bool = False  # ended on NEED_DATA in the middle of a message


def drive(reader, raw: bytes, *, eof: bool, byte_by_byte: bool) -> Outcome:
    """Feed ``raw`` (whole or byte by byte), pump events, record what happened."""
    outcome = Outcome()
    body = bytearray()
    in_message = False
    chunks = [raw[i : i + 1] for i in range(len(raw))] if byte_by_byte else [raw]
    budget = 10 * len(raw) + 100  # each event consumes bytes: a bound, so no test can hang

    def pump() -> bool:
        """Run next_event until it needs data; False when the reader is finished."""
        nonlocal in_message, budget
        while True:
            budget -= 1
            assert budget > 0, "reader made no progress"
            try:
                event = reader.next_event()
            except ProtocolError as error:
                outcome.error = error
                outcome.error_after_head = in_message
                return False
            outcome.waiting = event is NEED_DATA and in_message
            if event is NEED_DATA:
                return True
            if event is ConnectionClosed:
                return False
            if isinstance(event, (Request, Response)):
                outcome.heads.append(event)
                in_message = True
                body.clear()
            elif isinstance(event, Data):
                assert event.data, "Data events are never empty"
                body.extend(event.data)
            else:
                assert isinstance(event, EndOfMessage)
                outcome.bodies.append(bytes(body))
                in_message = False
                if reader.state is ReaderState.TUNNEL:
                    return False

    for chunk in chunks:
        reader.feed(chunk)
        if not pump():
            return outcome
    if eof:
        reader.feed_eof()
        pump()
    return outcome


# --------------------------------------------------------------------------- requests
def request_reader(vector: RequestVector) -> RequestReader:
    if vector.mode == "forward":
        return RequestReader(allow_absolute_form=True, allow_connect=True)
    assert vector.mode == "reverse"
    return RequestReader()


def request_result(vector: RequestVector, outcome: Outcome) -> int | str:
    if outcome.error is not None:
        return outcome.error.status
    if outcome.heads and len(outcome.bodies) == len(outcome.heads) and not outcome.waiting:
        return "ok"
    return "incomplete"


@pytest.mark.parametrize("vector", REQUEST_VECTORS, ids=lambda v: v.id)
@pytest.mark.parametrize("byte_by_byte", [False, True], ids=["whole", "bytewise"])
def test_request_vector(vector: RequestVector, byte_by_byte: bool) -> None:
    outcome = drive(request_reader(vector), vector.raw, eof=vector.needs_eof, byte_by_byte=byte_by_byte)
    assert request_result(vector, outcome) == vector.expect, (
        f"{vector.id} ({vector.rfc}): {outcome.error!r}"
    )
    if vector.expect == "ok" and vector.body is not None:
        assert outcome.bodies[0] == vector.body


@pytest.mark.parametrize(
    "vector", [v for v in REQUEST_VECTORS if not v.needs_eof], ids=lambda v: v.id
)
def test_request_vector_outcome_does_not_change_with_eof(vector: RequestVector) -> None:
    """EOF after a complete (or already refused) input changes nothing."""
    outcome = drive(request_reader(vector), vector.raw, eof=True, byte_by_byte=False)
    assert request_result(vector, outcome) == vector.expect


@pytest.mark.parametrize("vector", [v for v in REQUEST_VECTORS if v.needs_eof], ids=lambda v: v.id)
def test_cut_request_waits_for_more_until_eof(vector: RequestVector) -> None:
    outcome = drive(request_reader(vector), vector.raw, eof=False, byte_by_byte=False)
    assert outcome.error is None
    outcome = drive(request_reader(vector), vector.raw, eof=True, byte_by_byte=False)
    assert isinstance(outcome.error, IncompleteMessage)


def test_request_table_covers_the_brief() -> None:
    """The table keeps at least one row for each family of attack it exists for."""
    ids = {v.id for v in REQUEST_VECTORS}
    for required in [
        "cl-te", "te-cl", "cl-duplicate-identical", "cl-duplicate-different", "cl-plus-sign",
        "cl-hex", "cl-space-inside", "cl-empty", "ok-chunked-case-insensitive", "te-quoted",
        "te-chunked-then-other", "te-other-then-chunked", "te-chunked-twice-list", "te-http10",
        "te-space-before-colon", "obs-fold", "bare-cr-in-field", "bare-lf-everywhere",
        "nul-in-name", "nul-in-value", "chunk-size-0x", "chunk-size-plus", "chunk-size-minus",
        "chunk-size-leading-space", "chunk-size-trailing-space", "chunk-size-17-digits",
        "chunk-ext-too-long", "chunk-data-missing-crlf", "two-spaces-after-method",
        "version-http2", "absolute-form-reverse", "host-missing", "host-duplicate-identical",
        "host-with-space",
    ]:
        assert required in ids, required


# --------------------------------------------------------------------------- responses
def response_result(outcome: Outcome) -> int | str:
    if outcome.error is not None:
        return "abort" if outcome.error_after_head and outcome.heads[-1].status >= 200 else 502
    final = [h for h in outcome.heads if h.status >= 200 or h.framing.kind == "tunnel"]
    if len(final) == 1 and len(outcome.bodies) == len(outcome.heads) and not outcome.waiting:
        return "ok"
    return "incomplete"


@pytest.mark.parametrize("vector", RESPONSE_VECTORS, ids=lambda v: v.id)
@pytest.mark.parametrize("byte_by_byte", [False, True], ids=["whole", "bytewise"])
def test_response_vector(vector: ResponseVector, byte_by_byte: bool) -> None:
    reader = ResponseReader()
    reader.expect_response_to(vector.request_method)
    outcome = drive(reader, vector.raw, eof=vector.needs_eof, byte_by_byte=byte_by_byte)
    assert response_result(outcome) == vector.expect, f"{vector.id} ({vector.rfc}): {outcome.error!r}"
    if vector.expect == "ok":
        final = outcome.heads[-1]
        if vector.framing is not None:
            assert final.framing.kind == vector.framing
        if vector.body is not None:
            assert outcome.bodies[-1] == vector.body
    if vector.expect == "abort" and vector.needs_eof:
        assert isinstance(outcome.error, IncompleteMessage)


# The status alone does not prove the *reason*: a 400 for "missing Host" would hide a
# broken CL+TE check.  For the rows that guard against smuggling, the error message
# must name the rule the row is about.
REQUEST_REASONS = {
    "cl-te": "both Transfer-Encoding and Content-Length",
    "te-cl": "both Transfer-Encoding and Content-Length",
    "cl-duplicate-identical": "more than one Content-Length",
    "cl-duplicate-different": "more than one Content-Length",
    "cl-list-identical": "not 1*DIGIT",
    "cl-plus-sign": "not 1*DIGIT",
    "cl-hex": "not 1*DIGIT",
    "cl-superscript-digit": "not 1*DIGIT",
    "te-http10": "HTTP/1.0",
    "te-chunked-then-other": "not the final transfer coding",
    "te-other-then-chunked": "not supported",
    "te-chunked-twice-list": "more than once",
    "te-chunked-twice-lines": "more than once",
    "te-quoted": "not a coding name",
    "te-empty-element-after": "empty element",
    "te-high-byte-before-value": "not a coding name",
    "te-space-before-colon": "whitespace between field name and colon",
    "te-tab-before-colon": "whitespace between field name and colon",
    "te-leading-space-on-line": "obs-fold",
    "te-value-folded": "obs-fold",
    "obs-fold": "obs-fold",
    "whitespace-before-first-field": "obs-fold",
    "bare-lf-in-field": "bare LF",
    "bare-lf-everywhere": "bare CR or LF",
    "bare-cr-in-field": "bare CR",
    "nul-in-value": "control byte 0x00",
    "two-spaces-after-method": "method SP request-target SP HTTP-version",
    "absolute-form-reverse": "absolute-form",
    "host-missing": "without Host",
    "host-duplicate-identical": "more than one Host",
    "host-with-space": "invalid Host",
    "chunk-size-0x": "invalid chunk-size line",
    "chunk-size-17-digits": "invalid chunk-size line",
    "chunk-ext-too-long": "too long",
    "chunk-ext-too-long-unterminated": "too long",
    "chunk-data-missing-crlf": "not followed by CRLF",
    "trailer-space-before-colon": "trailer section",
}


@pytest.mark.parametrize("vector_id, reason", sorted(REQUEST_REASONS.items()))
def test_request_vector_is_refused_for_the_right_reason(vector_id: str, reason: str) -> None:
    vector = next(v for v in REQUEST_VECTORS if v.id == vector_id)
    outcome = drive(request_reader(vector), vector.raw, eof=vector.needs_eof, byte_by_byte=False)
    assert outcome.error is not None and reason in str(outcome.error), str(outcome.error)
