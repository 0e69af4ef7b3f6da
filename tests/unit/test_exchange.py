"""proxy.exchange and proxy.lifecycle: the two state tables the proxy runs on, checked as data."""

from __future__ import annotations

import pytest

from proxy.exchange import (IDEMPOTENT, ON_FAILURE, TRANSITIONS, ExchangePhase, Failure, Phase, Recovery, Step,
                            retryable)
from proxy.lifecycle import CUT_AT_SHUTDOWN, ConnectionLife, ConnEvent, ConnState
from proxy.lifecycle import TRANSITIONS as CONN_TRANSITIONS


def reachable(transitions, start):
    seen, frontier = {start}, [start]
    while frontier:
        state = frontier.pop()
        for (source, _), target in transitions.items():
            if source is state and target not in seen:
                seen.add(target)
                frontier.append(target)
    return seen


def test_every_phase_is_reachable_and_the_happy_path_ends_in_done():
    assert reachable(TRANSITIONS, Phase.READ_HEAD) == set(Phase)
    phase = ExchangePhase()
    for step in (Step.HEAD, Step.BACKEND, Step.CONNECTED, Step.SENT, Step.FIRST_BYTE, Step.END):
        phase.go(step)
    assert phase.phase is Phase.DONE


def test_a_step_the_table_does_not_have_is_refused():
    phase = ExchangePhase(Phase.RESPOND)
    with pytest.raises(RuntimeError, match="RETRY in RESPOND"):
        phase.go(Step.RETRY)


def test_every_phase_but_done_says_what_a_failure_becomes():
    for phase in Phase:
        row = {failure for (p, failure) in ON_FAILURE if p is phase}
        assert (phase is Phase.DONE) == (not row), phase
        assert phase is Phase.DONE or Failure.CLIENT_GONE in row, "a client can vanish in any phase"


def test_a_client_that_vanished_is_never_answered():
    assert {r for (_, f), r in ON_FAILURE.items() if f is Failure.CLIENT_GONE} == {Recovery.CLOSE}


def test_once_the_client_has_part_of_the_response_a_backend_failure_can_only_abort():
    """RFC 9112 §9.8: a cut response must look cut, so no clean 502 after the first byte."""
    assert ON_FAILURE[Phase.RESPOND, Failure.BACKEND_FAILED] is Recovery.ABORT
    assert ON_FAILURE[Phase.AWAIT_RESPONSE, Failure.BACKEND_FAILED] is Recovery.ANSWER
    assert {p for (p, _), r in ON_FAILURE.items() if r is Recovery.ABORT} == {Phase.RESPOND}


def test_retry_only_before_the_response_and_only_for_repeatable_requests():
    assert {p for (p, _), r in ON_FAILURE.items() if r is Recovery.RETRY} == {Phase.SEND_REQUEST,
                                                                               Phase.AWAIT_RESPONSE}
    phase = ExchangePhase(Phase.AWAIT_RESPONSE)
    assert phase.recovery(Failure.BACKEND_STALE, retryable=True) is Recovery.RETRY
    assert phase.recovery(Failure.BACKEND_STALE, retryable=False) is Recovery.ANSWER
    assert retryable("GET", has_body=False, reused_connection=True)
    assert not retryable("POST", has_body=False, reused_connection=True), "RFC 9110 §9.2.2: not idempotent"
    assert not retryable("PUT", has_body=True, reused_connection=True), "the body was consumed"
    assert not retryable("GET", has_body=False, reused_connection=False), "a fresh connection is not stale"
    assert "POST" not in IDEMPOTENT and "PATCH" not in IDEMPOTENT


def test_the_client_may_still_be_sending_where_the_table_lingers():
    lingers = {p for (p, _), r in ON_FAILURE.items() if r is Recovery.LINGER}
    assert lingers == {Phase.READ_HEAD, Phase.SEND_REQUEST}, "the phases in which the proxy reads the client"


def test_every_connection_state_reaches_closed():
    for state in ConnState:
        assert ConnState.CLOSED in reachable(CONN_TRANSITIONS, state), state
    assert reachable(CONN_TRANSITIONS, ConnState.ACCEPTED) == set(ConnState)


def test_shutdown_never_cuts_work_in_flight():
    assert ConnState.FORWARDING not in CUT_AT_SHUTDOWN and ConnState.TUNNEL not in CUT_AT_SHUTDOWN
    assert {ConnState.IDLE, ConnState.HANDSHAKE} <= CUT_AT_SHUTDOWN


def test_a_keep_alive_connection_cycles_and_refuses_a_skipped_step():
    life = ConnectionLife()
    for event in (ConnEvent.TLS, ConnEvent.READY, ConnEvent.BYTES, ConnEvent.REQUEST, ConnEvent.KEEP_ALIVE):
        life.go(event)
    assert life.state is ConnState.IDLE
    with pytest.raises(RuntimeError):
        life.go(ConnEvent.REQUEST)  # a request needs its head's bytes first
    assert life.go(ConnEvent.CLOSE) is ConnState.CLOSED
