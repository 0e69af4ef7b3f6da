"""course.capture.ladder: arrows computed from real (bundled) captures, and the files drawn.

The example captures in course/data/example-capture were made with ``tlsproxy capture``
(see their README), so these tests need neither root nor a network.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("scapy")
pytest.importorskip("matplotlib")

from course.capture.bundle import CaptureBundle, load_example  # noqa: E402
from course.capture.dissect import RecordView  # noqa: E402
from course.capture.ladder import (  # noqa: E402
    Arrow,
    draw,
    label_lines,
    ladder_arrows,
    notes,
    record_kind,
    rows,
    segment_kind,
)


FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def flow(arrows, leg, connection=1):
    return [(a.source, a.target, a.label) for a in arrows if a.leg == leg and a.connection == connection]


def kinds(arrows, leg="client", connection=1):
    """{record name: kind} for every record of one connection, and each arrow's own kind."""
    pieces = {text: kind for a in arrows if (a.leg, a.connection) == (leg, connection) for text, kind in a.pieces}
    return pieces, [(a.label, a.kind) for a in arrows if (a.leg, a.connection) == (leg, connection)]


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


# --------------------------------------------------------------------------- the colour rule
@pytest.mark.parametrize("view, kind", [
    (RecordView(0, 517, ("ClientHello",)), "plaintext"),
    (RecordView(0, 6, ("ChangeCipherSpec",)), "plaintext"),          # RFC 8446 §5: never encrypted
    (RecordView(0, 98, ("ClientKeyExchange",)), "plaintext"),        # TLS 1.2, before the client's CCS
    (RecordView(0, 90, ("NewSessionTicket",)), "plaintext"),         # TLS 1.2, before the server's CCS
    (RecordView(0, 287, ("NewSessionTicket",), protected=True, opened=True, keys="application"), "protected"),
    (RecordView(0, 74, ("Finished",), protected=True, opened=True, keys="handshake"), "protected"),
    (RecordView(0, 24, ("Application Data",), protected=True), "protected"),   # seen without keys
    (RecordView(0, 60, ("POST /x HTTP/1.1",)), "http"),
], ids=["ClientHello", "CCS", "tls12-ClientKeyExchange", "tls12-ticket", "tls13-ticket", "Finished",
        "sealed", "http"])
def test_a_record_is_coloured_by_what_the_wire_protects(view, kind):
    assert record_kind(view) == kind


def test_an_arrow_whose_records_differ_is_mixed_and_tcp_flags_do_not_count():
    assert segment_kind(["plaintext", "plaintext", "protected"]) == "mixed"
    assert segment_kind(["tcp", "protected"]) == "protected"
    assert segment_kind(["tcp"]) == "tcp"
    assert segment_kind(["http"]) == "http"


def test_tls13_plaintext_hellos_and_ccs_are_not_coloured_encrypted():
    pieces, arrows = kinds(ladder_arrows(load_example("terminate", "1.3")))
    assert pieces["ClientHello"] == pieces["ServerHello"] == pieces["ChangeCipherSpec"] == "plaintext"
    assert pieces["{EncryptedExtensions, Certificate, CertificateVerify, Finished}"] == "protected"
    assert pieces["{Finished}"] == "protected"
    assert pieces["[NewSessionTicket]"] == "protected"        # a post-handshake message: application keys
    assert pieces["[Alert(close_notify)]"] == "protected"
    assert ("ServerHello, ChangeCipherSpec, {EncryptedExtensions, Certificate, CertificateVerify, Finished}",
            "mixed") in arrows
    assert ("ClientHello", "plaintext") in arrows and ("RST", "tcp") in arrows


def test_tls12_key_exchange_and_ticket_are_plaintext_finished_is_protected():
    pieces, arrows = kinds(ladder_arrows(load_example("terminate", "1.2")))
    for name in ("ServerHello", "Certificate", "ServerKeyExchange", "ClientKeyExchange", "ChangeCipherSpec",
                 "NewSessionTicket"):
        assert pieces[name] == "plaintext", name
    assert pieces["[Finished]"] == "protected"
    assert ("ServerHello, Certificate, ServerKeyExchange, ServerHelloDone", "plaintext") in arrows
    assert ("NewSessionTicket, ChangeCipherSpec, [Finished]", "mixed") in arrows


@pytest.mark.parametrize("tls", ["1.2", "1.3"])
def test_colours_are_the_same_with_and_without_the_key_log(tls):
    """Protection is a property of the wire: the observer's ladder has other names, same colours."""
    bundle = load_example("terminate", tls)
    opened, sealed = ladder_arrows(bundle), ladder_arrows(bundle, decrypted=False)
    assert [a.kind for a in opened] == [a.kind for a in sealed]


def test_labels_keep_each_piece_colour_over_two_lines_at_most():
    parts = (("ServerHello", "plaintext"), ("ChangeCipherSpec", "plaintext"),
             ("{EncryptedExtensions, Certificate, CertificateVerify, Finished}", "protected"))
    lines = label_lines(parts)
    assert len(lines) == 2
    assert "".join(text for line in lines for text, _ in line).replace(" ", "") == \
        ", ".join(text for text, _ in parts).replace(" ", "")
    assert {kind for text, kind in lines[1]} == {"protected"}
    assert all(len("".join(text for text, _ in line).strip()) <= 64 for line in lines)
    assert len(label_lines((("x" * 300, "protected"),))) <= 2


# --------------------------------------------------------------------------- the end of a connection
def test_the_rst_is_explained_by_the_close_notify_that_reached_a_closed_socket():
    arrows = ladder_arrows(load_example("terminate", "1.3"))
    client = [a.label for a in arrows if a.leg == "client"]
    # The proxy's close_notify and FIN, then the client's close_notify, answered with RST.
    assert client[-4:] == ["[Alert(close_notify)]", "FIN", "[Alert(close_notify)]", "RST"]
    text = " ".join(notes(arrows))
    assert "RST from the proxy" in text and "close_notify" in text and "RFC 9293 §3.6.1" in text
    assert "FIN: each side" in text and "backend leg closes last" in text


def test_a_fin_sent_twice_is_marked_as_a_retransmission():
    arrows = ladder_arrows(CaptureBundle(FIXTURES / "capture-fin-retransmitted"))   # see its README.md
    fins = [a for a in arrows if a.leg == "client" and a.source == "client" and a.label.startswith("FIN")]
    assert [a.label for a in fins] == ["FIN", "FIN (retransmitted)"]
    assert fins[1].retransmitted and not fins[0].retransmitted
    assert any("tail-loss probe" in line for line in notes(arrows))
    assert not any(line.startswith("RST") for line in notes(arrows))     # this capture ends without one


def test_the_caption_says_where_the_request_went_among_the_tickets():
    full = " ".join(notes(ladder_arrows(load_example("terminate", "1.3"))))
    assert "the request left after them." in full          # this capture: after both tickets
    resumed = " ".join(notes(ladder_arrows(load_example("terminate", "1.3", resumed=True))))
    assert "before them on client connection 1" in resumed and "before it on client connection 2" in resumed
    assert not any("cross" in line for line in notes(ladder_arrows(load_example("terminate", "1.2"))))


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
