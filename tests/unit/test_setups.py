"""course.setups: the one table of the seven setups, its derived facts, and its words checked against them.

``copied_words`` and ``copied_names`` are also used by the bench's and the capture's
setup tests: they find, in a module's source, the literals that would mean the module
keeps its own copy of the table (a setup's words; a setup's name, or a list of names).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from course import setups
from course.setups import BY_NAME, LEG_KINDS, NAMES, SETUPS

REPO = Path(__file__).resolve().parents[2]
PROXY_MODES = {s.mode for s in SETUPS if s.mode}


def table_words() -> set[str]:
    """Every distinctive string the table holds (short ones like "TLS" or "origin" are everywhere)."""
    words = set()
    for s in SETUPS:
        words |= {s.summary, s.description, s.terminates, s.proxy_sees, s.picture}
        words |= {leg.label for leg in s.legs}
    return {w for w in words if len(w) >= 12}


def copied_words(path: Path) -> list[str]:
    """The string literals in ``path`` that repeat the table's words (summaries, descriptions ...)."""
    words = table_words()
    return [f"line {node.lineno}: {node.value!r}" for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.Constant) and node.value in words]


def copied_names(path: Path) -> list[str]:
    """The literals in ``path`` that name setups: a setup's name (those that are not also a proxy
    mode, such as "terminate"), or a tuple/list/set literal naming two setups or more."""
    names, found = set(NAMES), []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Constant) and node.value in names - PROXY_MODES:
            found.append(f"line {node.lineno}: {node.value!r}")
        elif isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            named = [e.value for e in node.elts if isinstance(e, ast.Constant) and e.value in names]
            if len(named) >= 2:
                found.append(f"line {node.lineno}: a table of setup names {named}")
    return found


# --------------------------------------------------------------------------- the table
def test_the_six_setups_of_design_md_and_interception_in_teaching_order():
    assert [(s.number, s.name) for s in SETUPS] == [
        (1, "direct-http"), (2, "direct-https"), (3, "terminate"), (4, "reencrypt"), (5, "passthrough"),
        (6, "forward"), (7, "intercept")]
    assert NAMES == tuple(BY_NAME) == tuple(s.name for s in SETUPS)


def test_legs_are_of_known_kinds_and_a_proxy_has_a_mode():
    for s in SETUPS:
        assert {leg.kind for leg in s.legs} <= set(LEG_KINDS), s.name
        assert len(s.legs) in (1, 2)
        assert s.has_proxy == (s.mode is not None) == (s.hosts == ("client", "proxy", "origin"))
        assert s.leg_names == (("client", "backend") if s.has_proxy else ("client",))
    assert BY_NAME["reencrypt"].mode == "terminate"  # re-encryption is termination with a TLS backend
    assert BY_NAME["terminate"].leg_ends("backend") == ("proxy", "origin")
    assert BY_NAME["direct-https"].leg_ends("client") == ("client", "origin")


def test_where_each_tls_session_starts_and_ends():
    assert {s.name: s.tls_sessions for s in SETUPS} == {
        "direct-http": (),
        "direct-https": (("client", "origin"),),
        "terminate": (("client", "proxy"),),
        "reencrypt": (("client", "proxy"), ("proxy", "origin")),  # two sessions: hop by hop
        "passthrough": (("client", "origin"),),  # one session, through the splice
        "forward": (("client", "origin"),),  # one session, through the tunnel
        "intercept": (("client", "proxy"), ("proxy", "origin")),  # a tunnel asked for, two sessions made
    }
    assert {s.name: s.client_tls_ends for s in SETUPS} == {
        "direct-http": None, "direct-https": "origin", "terminate": "proxy", "reencrypt": "proxy",
        "passthrough": "origin", "forward": "origin", "intercept": "proxy"}
    assert [s.name for s in SETUPS if s.origin_tls] == ["direct-https", "reencrypt", "passthrough", "forward",
                                                        "intercept"]
    assert [s.name for s in SETUPS if s.tunnel] == ["forward", "intercept"]
    assert [s.name for s in SETUPS if s.intercepts] == ["intercept"]
    assert [s.name for s in SETUPS if not s.client_tls] == ["direct-http"]


def test_through_a_proxy_only_passthrough_and_connect_are_end_to_end():
    assert [s.name for s in SETUPS if s.has_proxy and s.end_to_end] == ["passthrough", "forward"]
    assert [s.name for s in SETUPS if s.proxy_reads_requests] == ["terminate", "reencrypt", "intercept"]
    assert not BY_NAME["reencrypt"].end_to_end


def test_interception_is_reencryption_underneath_a_tunnel_the_client_asked_for():
    """Setup 7: the client's side is setup 6's (a CONNECT, the forward proxy's mode), the sessions
    are setup 4's (two, the proxy in between holding the plaintext)."""
    intercept, forward, reencrypt = BY_NAME["intercept"], BY_NAME["forward"], BY_NAME["reencrypt"]
    assert intercept.mode == forward.mode == "forward"  # tlsproxy serve --mode forward --intercept-ca ...
    assert intercept.tunnel and forward.tunnel and not reencrypt.tunnel
    assert intercept.tls_sessions == reencrypt.tls_sessions != forward.tls_sessions
    assert intercept.proxy_reads_requests and not intercept.end_to_end
    assert intercept.legs[0].kind == "intercept" and intercept.legs[1] == reencrypt.legs[1]
    assert intercept.picture == "client --CONNECT + TLS (minted cert)==> proxy ==TLS (2nd session)==> origin"
    # What a client can check, named where the setup is described (course.capture.interception computes them).
    for clue in ("issuer", "interception CA", "pin", "Certificate Transparency", "RFC 9110 §9.3.6"):
        assert clue in intercept.description, clue


# --------------------------------------------------------------------------- the words
def test_no_summary_calls_a_hop_by_hop_setup_end_to_end():
    for s in SETUPS:
        claims = "end-to-end" in s.summary.lower() or "end to end" in s.summary.lower()
        assert claims == (s.has_proxy and s.end_to_end), (s.name, s.summary)


def test_reencrypt_is_described_as_hop_by_hop_and_says_why_vendors_call_it_end_to_end():
    reencrypt = BY_NAME["reencrypt"]
    assert "hop-by-hop" in reencrypt.summary and "two sessions" in reencrypt.summary
    assert "end-to-end TLS" in reencrypt.description  # the vendors' name for it ...
    assert "not end to end" in reencrypt.description  # ... and why it is not, in the security sense
    assert "plaintext" in reencrypt.description and "keys" in reencrypt.description


def test_who_terminates_and_what_the_proxy_sees_agree_with_the_sessions():
    for s in SETUPS:
        assert s.terminates.startswith(s.client_tls_ends or "nobody"), s.name
        # notebook 04 asks `"origin" in s.terminates` for "does the origin pay for TLS"
        assert ("origin" in s.terminates) == s.origin_tls, s.name
        if not s.has_proxy:
            assert s.proxy_sees == "-"
        elif s.proxy_reads_requests:
            assert s.proxy_sees.startswith("everything") and "plaintext" in s.proxy_sees
        else:
            assert "handshake" in s.proxy_sees and "everything" not in s.proxy_sees
    assert "CONNECT" in BY_NAME["forward"].proxy_sees and "SNI" in BY_NAME["passthrough"].proxy_sees


def test_a_leg_label_says_tls_where_a_session_ends_and_not_on_plain_http():
    for s in SETUPS:
        for leg in s.legs:
            if leg.kind == "tls":
                assert leg.label.startswith("TLS"), (s.name, leg)
            if leg.kind == "http":
                assert "TLS" not in leg.label, (s.name, leg)
    assert "CONNECT" in BY_NAME["forward"].legs[0].label
    for s in SETUPS:
        if s.intercepts:  # a CONNECT, then a TLS session that ends at the proxy
            assert "CONNECT" in s.legs[0].label and "TLS" in s.legs[0].label
    assert "2nd session" in BY_NAME["reencrypt"].legs[1].label


def test_pictures_are_drawn_from_the_legs():
    assert BY_NAME["terminate"].picture == "client ==TLS==> proxy --HTTP--> origin"
    assert BY_NAME["direct-http"].picture == "client --HTTP--> origin"
    assert BY_NAME["passthrough"].picture == "client ~~TLS (spliced)~~> proxy ~~TCP splice~~> origin"
    for s in SETUPS:
        assert s.picture.startswith("client ") and s.picture.endswith(" origin")
        assert all(leg.label in s.picture for leg in s.legs)


def test_every_mode_the_table_names_is_written():
    assert all(s.available for s in SETUPS)
    assert PROXY_MODES == {"terminate", "passthrough", "forward"}


# --------------------------------------------------------------------------- one copy
def test_the_table_s_words_live_only_in_course_setups():
    """A second copy of a summary, description or picture anywhere in course/ would drift."""
    table = Path(setups.__file__).resolve()
    copies = {str(path.relative_to(REPO)): found for path in sorted((REPO / "course").rglob("*.py"))
              if path != table and (found := copied_words(path))}
    assert copies == {}


@pytest.mark.parametrize("finder, source", [
    (copied_names, "def f():\n    return 'direct-https'\n"),
    (copied_names, "NAMES = ('terminate', 'passthrough')\n"),
    (copied_words, f"S = {BY_NAME['reencrypt'].summary!r}\n"),
    (copied_words, f"P = {BY_NAME['forward'].picture!r}\n"),
])
def test_the_copy_finders_find_copies(tmp_path, finder, source):
    path = tmp_path / "copy.py"
    path.write_text(source)
    assert finder(path)
    path.write_text("MODE = 'terminate'\nSETUPS = NAMES\n")  # a mode's name alone is not a copy
    assert finder(path) == []
