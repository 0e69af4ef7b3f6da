"""course.capture.interception: the certificates each TLS session showed, read from bundled captures.

The bundled interception capture (``tlsproxy capture --setup intercept``) must show two
sessions with different leaves, the client's issued by the run's interception CA, and
the proxy holding both sessions' keys; the other bundles are the controls (re-encrypt:
two sessions, one CA; forward: one session through the tunnel).  The Certificate
message parser is fed plain bytes.
"""

from __future__ import annotations

import datetime
import struct

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtensionOID, NameOID

pytest.importorskip("scapy")

from course.capture.bundle import load_example  # noqa: E402
from course.capture.interception import (  # noqa: E402
    SIGNED_CERTIFICATE_TIMESTAMP,
    Shown,
    analyse_interception,
    parse_certificate_message,
    sessions,
)
from proxy.errors import TLSParseError  # noqa: E402
from proxy.tls.mint import CA_COMMON_NAME  # noqa: E402


@pytest.fixture(scope="module")
def intercepted():
    return analyse_interception(load_example("intercept", "1.3"))


def test_two_sessions_two_certificates_and_the_proxy_holds_both_keys(intercepted):
    saw, real = intercepted.client_saw, intercepted.origin_showed
    assert intercepted.two_sessions and intercepted.different_certificates
    assert (saw.leg, saw.server, real.leg, real.server) == ("client", "proxy", "backend", "origin")
    assert saw.key_holders == ("client", "proxy") and real.key_holders == ("proxy-backend", "origin")
    assert intercepted.proxy_holds_both
    # Both leaves name the host the client asked for; only the issuer and the key tell them apart.
    assert "www.example.test" in saw.names and "www.example.test" in real.names
    assert intercepted.reported == saw.der  # what the client itself reported, found in the capture
    assert saw.how.startswith("decrypted")  # TLS 1.3 encrypts the Certificate (RFC 8446 §4.4.2)


def test_the_leaf_the_client_saw_was_issued_and_signed_by_the_runs_interception_ca(intercepted):
    saw, real = intercepted.client_saw, intercepted.origin_showed
    assert saw.issuer == CA_COMMON_NAME == _common_name(intercepted.interception_ca.subject)
    assert intercepted.signed_by_interception_ca
    assert real.issuer != CA_COMMON_NAME
    assert saw.lifetime_days < 2 < real.lifetime_days  # minted for a day (proxy.tls.mint.LEAF_LIFETIME)


def test_the_clues_are_computed_and_tell_interception_from_reencryption(intercepted):
    clues = {clue.name: clue for clue in intercepted.clues()}
    assert clues["the issuer"].shows and CA_COMMON_NAME in clues["the issuer"].evidence
    assert clues["pinning"].shows and intercepted.client_saw.pin_sha256 in clues["pinning"].evidence
    assert not any(intercepted.client_saw.scts.values())   # a minted leaf carries no SCT anywhere
    assert not clues["Certificate Transparency"].shows     # ... nor does the private demo origin's
    reencrypt = analyse_interception(load_example("reencrypt", "1.3"))
    assert reencrypt.two_sessions and not reencrypt.signed_by_interception_ca
    assert not {clue.name: clue for clue in reencrypt.clues()}["the issuer"].shows  # one CA issued both
    text = intercepted.format()
    assert "two TLS sessions, two different certificates" in text
    assert "the proxy holds the keys of both sessions: yes" in text


def test_a_tunnel_carries_one_session_through_both_legs():
    found = sessions(load_example("forward", "1.3"))
    assert [(s.leg, s.server, s.key_holders) for s in found] == [("client", "origin", ("client", "origin"))]
    assert not analyse_interception(load_example("forward", "1.3")).two_sessions


# --------------------------------------------------------------------------- from bytes
def _leaf(*, sct: bool) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "leaf.example.test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
               .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1)))
    if sct:  # RFC 6962 §3.3: an OCTET STRING holding a SignedCertificateTimestampList (one v1 SCT)
        one = (b"\x00" + b"\x11" * 32 + struct.pack(">Q", 1_700_000_000_000) + b"\x00\x00"
               + b"\x04\x03" + struct.pack(">H", 4) + b"sign")
        listed = struct.pack(">HH", len(one) + 2, len(one)) + one
        builder = builder.add_extension(x509.UnrecognizedExtension(
            ExtensionOID.PRECERT_SIGNED_CERTIFICATE_TIMESTAMPS, b"\x04" + bytes([len(listed)]) + listed), False)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def _certificate_message(chain: list[bytes], leaf_extensions: bytes = b"", *, tls13: bool = True) -> bytes:
    entries = b""
    for i, der in enumerate(chain):
        entries += len(der).to_bytes(3, "big") + der
        if tls13:
            extensions = leaf_extensions if i == 0 else b""
            entries += len(extensions).to_bytes(2, "big") + extensions
    body = (b"\x00" if tls13 else b"") + len(entries).to_bytes(3, "big") + entries
    return b"\x0b" + len(body).to_bytes(3, "big") + body


def test_the_certificate_message_parser_reads_both_versions_and_the_leafs_extensions():
    leaf, other = _leaf(sct=False), _leaf(sct=False)
    sct_extension = struct.pack(">HH", SIGNED_CERTIFICATE_TIMESTAMP, 3) + b"abc"
    chain, extensions = parse_certificate_message(_certificate_message([leaf, other], sct_extension), tls13=True)
    assert chain == [leaf, other] and extensions == {SIGNED_CERTIFICATE_TIMESTAMP}
    chain, extensions = parse_certificate_message(_certificate_message([leaf], tls13=False), tls13=False)
    assert chain == [leaf] and extensions == frozenset()
    with pytest.raises(TLSParseError):  # a length that runs past the message is never trusted
        parse_certificate_message(_certificate_message([leaf])[:-40], tls13=True)


def test_an_sct_is_found_in_the_certificate_or_in_the_handshake():
    with_sct = Shown("client", "origin", _leaf(sct=True), "", frozenset(), ())
    without = Shown("client", "proxy", _leaf(sct=False), "", frozenset({SIGNED_CERTIFICATE_TIMESTAMP}), ())
    assert with_sct.scts == {"X.509 extension": True, "TLS extension": False, "stapled OCSP": False}
    assert without.scts == {"X.509 extension": False, "TLS extension": True, "stapled OCSP": False}


def _common_name(name: x509.Name) -> str:
    return name.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
