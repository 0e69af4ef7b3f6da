"""course.capture.ladder: arrows computed from real (bundled) captures, and the files drawn.

The example captures in course/data/example-capture were made with ``tlsproxy capture``
(see their README), so these tests need neither root nor a network.
"""

from __future__ import annotations

import pytest

pytest.importorskip("scapy")
pytest.importorskip("matplotlib")

from course.capture.bundle import load_example  # noqa: E402
from course.capture.ladder import Arrow, draw, ladder_arrows, rows  # noqa: E402


def flow(arrows, leg, connection=1):
    return [(a.source, a.target, a.label) for a in arrows if a.leg == leg and a.connection == connection]


def test_tls13_terminate_ladder_shows_each_message_between_the_right_hosts():
    arrows = ladder_arrows(load_example("terminate", "1.3"))
    client_leg = flow(arrows, "client")
    assert client_leg[:4] == [
        ("client", "proxy", "SYN"),
        ("proxy", "client", "SYN-ACK"),
        ("client", "proxy", "ClientHello"),
        ("proxy", "client", "ServerHello, ChangeCipherSpec, "
                            "{EncryptedExtensions, Certificate, CertificateVerify, Finished}"),
    ]
    assert ("client", "proxy", "ChangeCipherSpec, {Finished}") in client_leg
    # Opened with the key log: the request is named by its start line, inside [] (application keys).
    assert ("client", "proxy", "[POST /account/statement?id=path-marker-7 HTTP/1.1]") in client_leg
    assert ("proxy", "client", "[NewSessionTicket]") in client_leg
    assert any(label == "FIN" for _, _, label in client_leg)
    backend = flow(arrows, "backend")
    assert backend[:3] == [("proxy", "origin", "SYN"), ("origin", "proxy", "SYN-ACK"),
                           ("proxy", "origin", "POST /account/statement?id=path-marker-7 HTTP/1.1")]
    assert backend[3][2].startswith("HTTP/1.1 200")
    assert [a.time for a in arrows] == sorted(a.time for a in arrows)
    assert all(a.label != "ACK" for a in arrows)          # pure ACKs are left out by default


def test_without_keys_the_ladder_shows_what_an_observer_sees():
    arrows = ladder_arrows(load_example("terminate", "1.3"), decrypted=False)
    labels = [label for _, _, label in flow(arrows, "client")]
    # EncryptedExtensions, Certificate, CertificateVerify and Finished, as the wire shows them:
    assert "ServerHello, ChangeCipherSpec, [Application Data] ×4" in labels
    assert not any("Certificate" in label or "POST" in label for label in labels)


def test_tls12_ladder_has_the_plaintext_certificate_and_key_exchange():
    labels = [label for _, _, label in flow(ladder_arrows(load_example("terminate", "1.2")), "client")]
    assert "ServerHello, Certificate, ServerKeyExchange, ServerHelloDone" in labels
    assert "ClientKeyExchange, ChangeCipherSpec, [Finished]" in labels


def test_resumed_handshake_has_no_certificate():
    arrows = ladder_arrows(load_example("terminate", "1.3", resumed=True))
    first, second = flow(arrows, "client", 1), flow(arrows, "client", 2)
    assert any("Certificate" in label for _, _, label in first)
    assert ("client", "proxy", "ClientHello (PSK)") in second          # it offers the ticket
    assert second[3] == ("proxy", "client", "ServerHello, ChangeCipherSpec, {EncryptedExtensions, Finished}")
    assert not any("Certificate" in label for _, _, label in second)


def test_rows_keep_order_and_stretch_long_gaps_logarithmically():
    arrows = [Arrow(t, "client", "proxy", "x", "tcp", "client", 1) for t in (0.0, 0.0001, 0.0002, 1.0)]
    y = rows(arrows)
    assert y[0] == 0 and all(b - a >= 1 for a, b in zip(y, y[1:]))
    assert y[3] - y[2] > y[2] - y[1]                     # a 1 s gap takes more room than 0.1 ms ...
    assert y[3] - y[2] < 3.6                             # ... but not a second's worth


def test_draw_two_columns_for_a_direct_setup(tmp_path):
    bundle = load_example("direct-http")
    arrows = ladder_arrows(bundle)
    assert {(a.source, a.target) for a in arrows} == {("client", "origin"), ("origin", "client")}
    assert draw(arrows, ["client", "origin"], tmp_path / "direct", formats=("svg",))[0].exists()


def test_committed_figures_are_drawn_from_the_bundled_captures(tmp_path):
    from course.capture.ladder import regenerate_committed_figures

    paths = regenerate_committed_figures(tmp_path)
    assert sorted(p.name for p in paths) == sorted(f"ladder-{n}.{e}" for n in ("tls13", "tls12", "tls13-resumed")
                                                   for e in ("png", "svg"))
    png = (tmp_path / "ladder-tls12.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
    svg = (tmp_path / "ladder-tls13-resumed.svg").read_text()
    assert svg.lstrip().startswith("<?xml") and "resumed" in svg and "ClientHello" in svg and "origin" in svg
