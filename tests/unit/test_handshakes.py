"""course.handshakes: flights and round trips from traces (built from callback reports),
and certificate sizes read from the demo certificates."""

from __future__ import annotations

import pytest

from course.handshakes import certificate_summary, flights, round_trips
from proxy.tls.records import HandshakeType as H
from proxy.tls.trace import RECORD_HEADER, HandshakeTrace, make_event


def message(direction: str, msg_type: int, length: int = 40) -> object:
    """A handshake message as the client's callback reports it (4-byte header + body)."""
    return make_event(server_side=False, direction=direction, version=0x0304, content_type=22,
                      data=bytes([msg_type]) + (length - 4).to_bytes(3, "big") + bytes(length - 4))


def ccs(direction: str) -> object:
    """A ChangeCipherSpec, as the callback reports it: a record header of type 20."""
    return make_event(server_side=False, direction=direction, version=0x0303, content_type=RECORD_HEADER,
                      data=b"\x14\x03\x03\x00\x01")


def alert(direction: str) -> object:
    return make_event(server_side=False, direction=direction, version=0x0304, content_type=21, data=b"\x01\x00")


TLS13_FULL = [message("write", H.CLIENT_HELLO, 512), message("read", H.SERVER_HELLO, 122), ccs("read"),
              message("read", H.ENCRYPTED_EXTENSIONS), message("read", H.CERTIFICATE, 526),
              message("read", H.CERTIFICATE_VERIFY, 78), message("read", H.FINISHED, 52), ccs("write"),
              message("write", H.FINISHED, 52), message("read", H.NEW_SESSION_TICKET, 265),
              alert("read"), alert("write")]
TLS12_FULL = [message("write", H.CLIENT_HELLO), message("read", H.SERVER_HELLO), message("read", H.CERTIFICATE),
              message("read", H.SERVER_KEY_EXCHANGE), message("read", H.SERVER_HELLO_DONE, 4),
              message("write", H.CLIENT_KEY_EXCHANGE), ccs("write"), message("write", H.FINISHED, 16),
              message("read", H.NEW_SESSION_TICKET), ccs("read"), message("read", H.FINISHED, 16)]
TLS12_RESUMED = [message("write", H.CLIENT_HELLO), message("read", H.SERVER_HELLO), ccs("read"),
                 message("read", H.FINISHED, 16), ccs("write"), message("write", H.FINISHED, 16)]


def test_tls13_full_handshake_is_one_round_trip_in_three_flights():
    trace = HandshakeTrace(TLS13_FULL)
    shown = flights(trace)
    assert [(f.sender, f.messages) for f in shown] == [
        ("client", ("ClientHello",)),
        ("server", ("ServerHello", "ChangeCipherSpec", "EncryptedExtensions", "Certificate",
                    "CertificateVerify", "Finished")),
        ("client", ("ChangeCipherSpec", "Finished")),
        ("server", ("NewSessionTicket",)),          # after the handshake; the close_notify is left out
    ]
    assert shown[1].size == 122 + 1 + 40 + 526 + 78 + 52
    assert round_trips(trace) == 1


def test_tls12_full_handshake_waits_for_two_server_flights():
    assert round_trips(HandshakeTrace(TLS12_FULL)) == 2
    assert [f.sender for f in flights(TLS12_FULL)] == ["client", "server", "client", "server"]


def test_tls12_resumed_handshake_is_one_round_trip():
    assert round_trips(TLS12_RESUMED) == 1


def test_alerts_only_when_asked_and_an_unfinished_handshake_has_no_round_trips():
    assert flights(TLS13_FULL, alerts=True)[-2:][0].messages[-1] == "Alert(warning, close_notify)"
    assert round_trips(TLS13_FULL[:5]) == 0


def test_certificate_summary_of_the_demo_certificates(pki):
    ecdsa = certificate_summary(pki.files("www.example.test")[0])
    rsa = certificate_summary(pki.files("www-rsa.example.test")[0])
    assert (ecdsa.name, ecdsa.key_type, ecdsa.public_key_bytes) == ("www.example.test", "ECDSA P-256", 91)
    assert (rsa.key_type, rsa.public_key_bytes) == ("RSA-2048", 294)
    assert rsa.der_bytes - ecdsa.der_bytes == pytest.approx(294 - 91, abs=30)   # the key is the difference
