"""course.capture.whosees: the "who sees what" table, computed from bundled captures.

Each expectation below is a property of the setup that the computation must find in
the bytes (the example captures were made by ``tlsproxy capture``; integration tests
repeat the terminate case on a fresh capture).
"""

from __future__ import annotations

import pytest

pytest.importorskip("scapy")

from course.capture.bundle import load_example  # noqa: E402
from course.capture.whosees import ITEMS, who_sees_what  # noqa: E402

EVERYTHING = dict.fromkeys(ITEMS, True)


def test_terminate_tls13():
    table = who_sees_what(load_example("terminate", "1.3"))
    assert table.row("on-path, client leg") == {**dict.fromkeys(ITEMS, False), "SNI": True, "client address": True}
    # The backend leg is plain HTTP, and X-Forwarded-For carries the client's address on it.
    assert table.row("on-path, backend leg") == {**EVERYTHING, "SNI": False, "certificate": False}
    assert table.cells["on-path, backend leg", "client address"].how == "X-Forwarded-For header in plaintext"
    assert table.row("proxy") == EVERYTHING
    assert table.cells["proxy", "certificate"].how == "decrypted with its own keys"   # TLS 1.3 hides it
    # The origin reads the request in plaintext but takes no part in the client's TLS.
    assert table.row("origin") == {**EVERYTHING, "SNI": False, "certificate": False}
    assert table.origin_log == {"Host": True, "path": True, "headers": True, "body": True, "client address": True}


def test_tls12_shows_the_certificate_to_everyone_on_path():
    table = who_sees_what(load_example("terminate", "1.2"))
    assert table.cells["on-path, client leg", "certificate"].how == "in plaintext on the wire"
    assert not table.visible("on-path, client leg", "path")


def test_reencrypt_hides_the_backend_leg_from_an_observer():
    table = who_sees_what(load_example("reencrypt", "1.3"))
    assert not any(table.row("on-path, backend leg").values())
    assert table.row("proxy") == EVERYTHING
    assert table.cells["origin", "client address"].how == "X-Forwarded-For header, decrypted with its own keys"
    assert not table.visible("origin", "SNI")        # the proxy's own ClientHello names origin.example.test


def test_passthrough_proxy_sees_only_the_client_hello():
    table = who_sees_what(load_example("passthrough", "1.3"))
    assert table.row("proxy") == {**dict.fromkeys(ITEMS, False), "SNI": True, "client address": True}
    assert table.row("origin") == {**EVERYTHING, "client address": False}   # it sees the proxy's address
    assert table.origin_log["client address"] is False


def test_forward_proxy_sees_the_connect_line_but_not_the_request():
    table = who_sees_what(load_example("forward", "1.3"))
    assert table.row("proxy") == {**dict.fromkeys(ITEMS, False), "SNI": True, "client address": True}
    assert table.visible("origin", "path") and not table.visible("origin", "client address")


def test_an_intercepting_proxy_reads_what_a_tunnel_would_have_hidden():
    """Setup 7: the client asked for a tunnel, as in setup 6, but the proxy answered it and holds
    the keys of both sessions: it reads the request in the clear, as in re-encryption."""
    table = who_sees_what(load_example("intercept", "1.3"))
    assert table.row("proxy") == EVERYTHING
    for item in ("path", "headers", "body", "Host"):
        assert table.cells["proxy", item].how == "decrypted with its own keys"
    assert table.row("proxy") != who_sees_what(load_example("forward", "1.3")).row("proxy")
    # On the wire both legs are TLS 1.3: an observer reads the SNI (and the client's TCP address), nothing else.
    assert table.row("on-path, client leg") == {**dict.fromkeys(ITEMS, False), "SNI": True, "client address": True}
    assert table.row("on-path, backend leg") == {**dict.fromkeys(ITEMS, False), "SNI": True}
    # The origin never sees the leaf the client was shown (minted by the proxy); it gets the client's
    # address only because the proxy adds X-Forwarded-For, and says so in its own log.
    assert table.row("origin") == {**EVERYTHING, "certificate": False}
    assert table.cells["origin", "client address"].how == "X-Forwarded-For header, decrypted with its own keys"
    assert table.origin_log == {"Host": True, "path": True, "headers": True, "body": True, "client address": True}


def test_direct_setups_have_no_proxy_row():
    plain = who_sees_what(load_example("direct-http"))
    assert plain.observers == ["on-path, client leg", "origin"]
    assert plain.row("on-path, client leg") == {**EVERYTHING, "SNI": False, "certificate": False}
    tls = who_sees_what(load_example("direct-https", "1.3"))
    assert tls.row("origin") == EVERYTHING


def test_format_prints_a_row_per_observer_and_the_reasons():
    text = who_sees_what(load_example("terminate", "1.3")).format()
    assert text.splitlines()[0].split() == ["SNI", "certificate", "Host", "path", "headers", "body", "client",
                                            "address"]
    assert "origin: Host (in plaintext on the wire)" in text
    assert "the origin's own log (its JSON answer) agrees" in text
