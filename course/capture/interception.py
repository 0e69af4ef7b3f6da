"""Interception, read back from a capture: two TLS sessions, two certificates, one key holder.

Theory of operation
-------------------
An intercepting forward proxy (setup 7, ``proxy.modes.intercept``) answers the
client's ``CONNECT`` itself, ends the client's TLS with a certificate it minted for
the requested name, and opens its own TLS session to the origin.  This module checks
each of those claims against the bundle, never against the setup's name::

    client leg   the server's Certificate message, opened with the key log when it is
                 encrypted (TLS 1.3, RFC 8446 §4.4.2; in the clear in TLS 1.2, RFC 5246
                 §7.4.2): the leaf the client was shown, and who issued it
    backend leg  the same for the proxy's own session: the origin's real leaf
    key logs     which parties' own key logs (``keys/<party>.log``) hold each session's
                 secrets, looked up by the ClientHello's random (RFC 8446 §4.1.2)

and then computes the clues a client has (``Clue``), the three that the proxy's own
docstring names:

* **the issuer**: the leaf the client was shown names the interception CA as issuer
  and is signed by its key (``intercept-ca.pem`` in the bundle), not by the CA that
  issued the origin's leaf;
* **pinning**: the leaf's public key differs from the origin's, so a client that pins
  the origin's key refuses it.  Shown as an HPKP-style ``pin-sha256`` (the base64
  SHA-256 of the SubjectPublicKeyInfo: RFC 7469 §2.4, and the pin-sha256 directive of
  §2.1.1), the form pins are written in;
* **Certificate Transparency**: RFC 6962 §3.3 delivers SCTs in one of three ways, an
  X.509v3 extension of the certificate (OID 1.3.6.1.4.1.11129.2.4.2), a TLS extension
  (``signed_certificate_timestamp``, type 18; in TLS 1.3 it sits in the leaf's
  CertificateEntry, RFC 8446 §4.4.2) or a stapled OCSP response (``status_request``,
  type 5).  All three are looked for in each leaf.  The origin's demo certificate has
  none either (the demo CA is private, like the interception CA): the clue separates
  only where the real site's certificate is publicly trusted, and even then a browser
  does not refuse a leaf from a locally installed root for it (Chrome's CT policy
  applies to publicly trusted CAs only; see ``proxy.modes.intercept``).

``analyse_interception(bundle)`` returns an ``Interception``; ``.format()`` is the
section ``tlsproxy capture --setup intercept`` prints in its summary.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtensionOID, NameOID

from course.capture.bundle import CaptureBundle
from course.capture.dissect import Dissection, dissect, split_http_prefix
from proxy.errors import TLSParseError
from proxy.tls.keyschedule import parse_key_log
from proxy.tls.records import ByteReader, ContentType, HandshakeReassembler, split_records

CERTIFICATE = 11                 # HandshakeType certificate (RFC 8446 §4, RFC 5246 §7.4)
SERVER_HELLO = 2
SIGNED_CERTIFICATE_TIMESTAMP = 18  # RFC 6962 §3.3.1, registered in RFC 8446 §4.2's table
STATUS_REQUEST = 5               # RFC 6066 §8 (a stapled OCSP response; TLS 1.3: in the CertificateEntry)
PARTIES = ("client", "proxy", "proxy-backend", "origin")


# --------------------------------------------------------------------------- one session's certificate
@dataclass(frozen=True)
class Shown:
    """The leaf certificate the server of one TLS session showed, and what it carries."""

    leg: str
    server: str                          # the host that showed it: "proxy" or "origin" (from the key logs)
    der: bytes
    how: str                             # "decrypted with the key log" (TLS 1.3) or "in plaintext" (TLS 1.2)
    tls_extensions: frozenset[int]       # extension types sent with it (CertificateEntry or ServerHello)
    key_holders: tuple[str, ...]         # parties whose own key log holds this session's secrets

    @property
    def certificate(self) -> x509.Certificate:
        return x509.load_der_x509_certificate(self.der)

    @property
    def issuer(self) -> str:
        return _common_name(self.certificate.issuer)

    @property
    def names(self) -> tuple[str, ...]:
        try:
            san = self.certificate.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME).value
        except x509.ExtensionNotFound:
            return ()
        return tuple(str(name.value) for name in san)

    @property
    def pin_sha256(self) -> str:
        """RFC 7469 §2.4 (pin-sha256, §2.1.1): base64 of the SHA-256 of the DER SubjectPublicKeyInfo."""
        spki = self.certificate.public_key().public_bytes(serialization.Encoding.DER,
                                                          serialization.PublicFormat.SubjectPublicKeyInfo)
        return base64.b64encode(hashlib.sha256(spki).digest()).decode()

    @property
    def lifetime_days(self) -> float:
        cert = self.certificate
        return (cert.not_valid_after_utc - cert.not_valid_before_utc).total_seconds() / 86400

    @property
    def scts(self) -> dict[str, bool]:
        """Where an SCT could be (RFC 6962 §3.3), and whether this leaf has one there."""
        try:
            self.certificate.extensions.get_extension_for_oid(ExtensionOID.PRECERT_SIGNED_CERTIFICATE_TIMESTAMPS)
            in_certificate = True
        except x509.ExtensionNotFound:
            in_certificate = False
        return {"X.509 extension": in_certificate,
                "TLS extension": SIGNED_CERTIFICATE_TIMESTAMP in self.tls_extensions,
                "stapled OCSP": STATUS_REQUEST in self.tls_extensions}


def _sct_places(shown: Shown) -> str:
    return ", ".join(place for place, present in shown.scts.items() if present) or "none"


def _lifetime(shown: Shown) -> str:
    days = shown.lifetime_days
    return f"{days * 24:.0f} hours" if days < 2 else f"{days:.0f} days"


def _common_name(name: x509.Name) -> str:
    cn = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(cn[0].value) if cn else name.rfc4514_string()


def _handshake_messages(data: bytes) -> list[bytes]:
    """Whole handshake messages at the start of ``data`` (type, u24 length, body), up to the
    first thing that is not one (the application data after an opened handshake)."""
    messages, offset = [], 0
    while offset + 4 <= len(data) and data[offset] in (2, 4, 8, 11, 12, 13, 14, 15, 16, 20, 22, 24):
        end = offset + 4 + int.from_bytes(data[offset + 1:offset + 4], "big")
        if end > len(data):
            break
        messages.append(data[offset:end])
        offset = end
    return messages


def parse_certificate_message(message: bytes, tls13: bool) -> tuple[list[bytes], frozenset[int]]:
    """(the DER chain, the leaf's CertificateEntry extension types) of a Certificate message."""
    reader = ByteReader(message[4:], "Certificate")
    if tls13:
        reader.vector(1, name="certificate_request_context")
    entries = ByteReader(reader.vector(3, name="certificate_list"), "certificate_list")
    chain, leaf_extensions = [], frozenset()
    while entries.remaining:
        chain.append(entries.vector(3, minimum=1, name="cert_data"))
        if tls13:
            extensions = ByteReader(entries.vector(2, name="extensions"), "CertificateEntry extensions")
            types = set()
            while extensions.remaining:
                types.add(extensions.u16())
                extensions.vector(2)
            if len(chain) == 1:
                leaf_extensions = frozenset(types)
    return chain, leaf_extensions


def _server_hello_extensions(server_tls: bytes) -> frozenset[int]:
    from course.capture.tls12 import parse_hello

    reassembler = HandshakeReassembler()
    for record in split_records(server_tls)[0]:
        if record.content_type == ContentType.HANDSHAKE:
            for message in reassembler.feed(record.fragment):
                if message[0] == SERVER_HELLO:
                    return frozenset(parse_hello(message)[2])
    return frozenset()


def shown_certificate(d: Dissection) -> tuple[bytes, str, frozenset[int]] | None:
    """The leaf the server of dissected connection ``d`` showed: (DER, how it was read, extensions)."""
    server = d.connection.stream("server")
    server_tls = server[split_http_prefix(server):]
    if d.protocol.endswith("tls1.3"):
        if not d.decrypted:
            return None              # encrypted, and these keys do not open it
        for message in _handshake_messages(d.opened("server")):
            if message[0] == CERTIFICATE:
                chain, extensions = parse_certificate_message(message, tls13=True)
                return chain[0], "decrypted with the key log (TLS 1.3 encrypts it)", extensions
        return None
    reassembler = HandshakeReassembler()
    for record in split_records(server_tls)[0]:
        if record.content_type == ContentType.CHANGE_CIPHER_SPEC:
            break
        if record.content_type == ContentType.HANDSHAKE:
            for message in reassembler.feed(record.fragment):
                if message[0] == CERTIFICATE:
                    chain, _ = parse_certificate_message(message, tls13=False)
                    return chain[0], "in plaintext on the wire (TLS 1.2)", _server_hello_extensions(server_tls)
    return None


# --------------------------------------------------------------------------- the bundle
def _key_logs(bundle: CaptureBundle) -> dict[str, dict]:
    logs = {}
    for party in PARTIES:
        path = bundle.keylog(party)
        if path and path.exists():
            logs[party] = parse_key_log(path.read_text())
    return logs


def sessions(bundle: CaptureBundle) -> list[Shown]:
    """Each leg's first TLS session: the leaf its server showed, and who holds its keys.

    A session is named by its ClientHello's random: one that a splice or a tunnel carries
    across both legs (passthrough, forward) is one session, found on the client leg only."""
    all_keys = parse_key_log(bundle.keys_log.read_text()) if bundle.keys_log.exists() else {}
    logs, found, seen = _key_logs(bundle), [], set()
    for leg, info in bundle.legs.items():
        for connection in bundle.connections(leg):
            d = dissect(connection, all_keys)
            if not d.is_tls or d.client_hello is None or d.client_hello.random in seen:
                continue
            seen.add(d.client_hello.random)
            try:
                shown = shown_certificate(d)
            except TLSParseError:
                shown = None
            if shown is None:
                continue
            holders = tuple(party for party, log in logs.items() if d.client_hello.random in log)
            found.append(Shown(leg, _server(holders, info.ends[1]), shown[0], shown[1], shown[2], holders))
            break
    return found


# The key logs written by the side that *starts* a session: the lab client, and the proxy's backend leg.
CONNECTING = ("client", "proxy-backend")


def _server(holders: tuple[str, ...], leg_end: str) -> str:
    """The host that ended the session: whichever holder of its keys did not start it (the
    origin, for a session a tunnel or a splice carried); the leg's far end if no log has it."""
    ending = [party for party in holders if party not in CONNECTING]
    return ending[0] if len(ending) == 1 else leg_end


@dataclass(frozen=True)
class Clue:
    """One way a client can tell it is being intercepted, with what this capture shows."""

    name: str
    shows: bool                          # does this capture give the client away the clue?
    evidence: str


@dataclass
class Interception:
    client_saw: Shown | None             # the client leg's session (the leaf the client was shown)
    origin_showed: Shown | None          # the backend leg's session (the origin's real leaf)
    interception_ca: x509.Certificate | None
    reported: bytes | None               # the leaf the client itself reported (client.json / server-cert.pem)

    @property
    def two_sessions(self) -> bool:
        return self.client_saw is not None and self.origin_showed is not None

    @property
    def different_certificates(self) -> bool:
        return self.two_sessions and self.client_saw.der != self.origin_showed.der

    @property
    def signed_by_interception_ca(self) -> bool:
        if self.client_saw is None or self.interception_ca is None:
            return False
        try:
            self.client_saw.certificate.verify_directly_issued_by(self.interception_ca)
        except (InvalidSignature, ValueError, TypeError):  # a bad signature, or not the issuer's name or key type
            return False
        return True

    @property
    def proxy_holds_both(self) -> bool:
        return self.two_sessions and "proxy" in self.client_saw.key_holders \
            and "proxy-backend" in self.origin_showed.key_holders

    def clues(self) -> list[Clue]:
        if not self.two_sessions:
            return []
        saw, real = self.client_saw, self.origin_showed
        issuer = Clue("the issuer", saw.issuer != real.issuer,
                      f"the client was shown a leaf issued by {saw.issuer!r}"
                      + (" (verified: signed by the interception CA's key)" if self.signed_by_interception_ca else "")
                      + f"; the origin's leaf is issued by {real.issuer!r}")
        pin = Clue("pinning", saw.pin_sha256 != real.pin_sha256,
                   f"pin-sha256 of the key shown {saw.pin_sha256}, of the origin's {real.pin_sha256}: "
                   + ("different, so a client pinning the origin's key (or its CA) refuses the connection"
                      if saw.pin_sha256 != real.pin_sha256 else "the same key"))
        ct = Clue("Certificate Transparency", not any(saw.scts.values()) and any(real.scts.values()),
                  f"SCTs with the leaf shown: {_sct_places(saw)}; with the origin's: {_sct_places(real)}"
                  + ("" if any(real.scts.values()) else
                     " (the demo origin's CA is private too: a missing SCT gives interception away only where "
                     "the real site's certificate is publicly trusted, RFC 6962 §3.3)"))
        return [issuer, pin, ct]

    def format(self) -> str:
        if not self.two_sessions:
            return "no two TLS sessions with a certificate each were found in this capture"
        lines = []
        for label, shown in (("client leg", self.client_saw), ("backend leg", self.origin_showed)):
            lines.append(f"{label}: {shown.server} showed {', '.join(shown.names) or '(no SAN)'}, issuer "
                         f"{shown.issuer!r}, valid for {_lifetime(shown)}, {shown.how}; "
                         f"keys in the key logs of: {', '.join(shown.key_holders) or 'nobody captured'}")
        lines.append("two TLS sessions, " + ("two different certificates" if self.different_certificates
                                             else "the same certificate")
                     + (", the client's report agrees with the capture" if self.reported == self.client_saw.der
                        else ", the client's report DISAGREES with the capture"))
        lines.append("the proxy holds the keys of both sessions: " + ("yes" if self.proxy_holds_both else "no"))
        lines.append("how the client can tell:")
        lines += [f"  {clue.name}: {'yes' if clue.shows else 'no'}: {clue.evidence}" for clue in self.clues()]
        return "\n".join(lines)


def analyse_interception(bundle: CaptureBundle) -> Interception:
    found = sessions(bundle)
    by_leg = {shown.leg: shown for shown in found}
    ca_name = bundle.metadata.get("intercept_ca")
    ca_path = bundle.directory / ca_name if ca_name else None
    ca = x509.load_pem_x509_certificate(ca_path.read_bytes()) if ca_path and ca_path.exists() else None
    reported = bundle.certificate
    return Interception(by_leg.get("client"), by_leg.get("backend"), ca,
                        _leaf(reported) if reported and reported.exists() else None)


def _leaf(path: Path) -> bytes:
    from proxy.pki import leaf_der

    return leaf_der(path)
