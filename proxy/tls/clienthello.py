"""Read a client's first TLS flight without terminating TLS: the ClientHello (sans-IO).

Theory of operation
-------------------
In passthrough mode (setup 5) the proxy never decrypts anything.  It still has to
choose an origin, and the only routing information a TLS client sends in clear is in
its first message, the ClientHello: the server name it wants (SNI, RFC 6066 §3) and
the application protocols it speaks (ALPN, RFC 7301).  So the proxy reads bytes
until it holds one complete ClientHello, routes on it, connects to the origin and
*replays every byte it read* (``ClientHelloReader.raw``) before splicing the two
sockets.  The origin then runs the real handshake with the client; the proxy only
looked.

The bytes arrive in three nested framings, each of which may be cut anywhere::

    TCP segments   | seg 1 ........ | seg 2 ................ | seg 3 ... |
    TLS records    | hdr | fragment ......... | hdr | fragment .......... |
    handshake msg        | 01 | len24 | ClientHello body .................|

A record holds at most 2^14 bytes (RFC 8446 §5.1), and a ClientHello may be
larger (post-quantum key shares, many PSK identities), so one message may span
records; and TCP may deliver any prefix.  The reader therefore follows the
sans-IO drive loop used throughout this project::

    reader = ClientHelloReader()
    while (event := reader.next_event()) is NEED_DATA:
        data = sock.recv(4096)
        reader.feed(data) if data else reader.feed_eof()
    route(event.server_name); origin.sendall(reader.raw)

(``proxy.drive.next_event(reader, transport, timeout=..., deadline=..., need_data=NEED_DATA)`` is
that loop with the time limits a proxy needs.)

``next_event`` answers ``NEED_DATA`` for every proper prefix of a valid first
flight, and raises ``TLSParseError`` as soon as the bytes *cannot* become one: the
first byte is not 22 (plain HTTP on a TLS port fails on its first byte), the
handshake type is not ClientHello, a length overruns its container, an extension
appears twice.  It never raises anything else: the fuzz tests hold it to that.

Server name policy (RFC 6066 §3 and the attacks behind it)
-----------------------------------------------------------
``server_name`` is the routing key, so it is decoded strictly and normalised once:

* exactly one entry of type host_name(0), like OpenSSL (``tls_parse_ctos_server_name``):
  the RFC's "extensible list" was never implemented anywhere, and two names would let
  the proxy and the origin route on different ones;
* ASCII letters, digits, ``-``, ``_`` and dots only: IDNs travel as A-labels
  (``xn--...``); a NUL byte is refused (the 2009 null-prefix attack, where
  ``bank.example\\0.evil.example`` compares equal to ``bank.example`` in C code);
* a trailing dot is refused (RFC 6066: the name is sent "without a trailing dot"),
  rather than stripped: otherwise ``admin.example.`` and ``admin.example`` would be
  two routing keys for one host and a rule written for one could be bypassed with
  the other.  Go's crypto/tls refuses it the same way;
* IP literals are refused ("Literal IPv4 and IPv6 addresses are not permitted");
* the result is lower-cased (DNS names are case-insensitive, RFC 4343), so routing
  tables compare with ``==``.
"""

from __future__ import annotations

import enum
import string
from dataclasses import dataclass, field
from typing import Literal

from proxy.errors import TLSParseError
from proxy.tls.records import (
    MAX_PLAINTEXT_LENGTH,
    RECORD_HEADER_LENGTH,
    ByteReader,
    ContentType,
    HandshakeType,
    alert_record,
    check_record_header,
    is_grease,
    uint16_list,
    version_name,
)

__all__ = [
    "NEED_DATA", "ClientHello", "ClientHelloReader", "parse_client_hello",
    "parse_client_hello_body", "validate_host_name", "unrecognized_name_alert", "cipher_suite_name",
    "extension_name", "ExtensionType", "CIPHER_SUITE_NAMES", "EXTENSION_NAMES",
]


class _Sentinel(enum.Enum):
    NEED_DATA = "NEED_DATA"

    def __repr__(self) -> str:
        return self.value


#: ``next_event`` returns this when the bytes so far are a valid but incomplete prefix.
NEED_DATA = _Sentinel.NEED_DATA


class ExtensionType(enum.IntEnum):
    """The extensions this module decodes (the rest are kept raw)."""

    SERVER_NAME = 0                  # RFC 6066 §3
    APPLICATION_LAYER_PROTOCOL_NEGOTIATION = 16   # RFC 7301
    PRE_SHARED_KEY = 41              # RFC 8446 §4.2.11
    SUPPORTED_VERSIONS = 43          # RFC 8446 §4.2.1


# A small table for teaching output; Wireshark and the IANA TLS registry have the rest.
EXTENSION_NAMES: dict[int, str] = {
    0: "server_name", 1: "max_fragment_length", 5: "status_request",
    10: "supported_groups", 11: "ec_point_formats", 13: "signature_algorithms",
    16: "application_layer_protocol_negotiation", 18: "signed_certificate_timestamp",
    21: "padding", 22: "encrypt_then_mac", 23: "extended_master_secret",
    27: "compress_certificate", 28: "record_size_limit", 35: "session_ticket",
    41: "pre_shared_key", 42: "early_data", 43: "supported_versions", 44: "cookie",
    45: "psk_key_exchange_modes", 49: "post_handshake_auth",
    50: "signature_algorithms_cert", 51: "key_share", 13172: "next_protocol_negotiation",
    17513: "application_settings", 65037: "encrypted_client_hello",
    65281: "renegotiation_info",
}

CIPHER_SUITE_NAMES: dict[int, str] = {
    # TLS 1.3 (RFC 8446 §B.4): the suite names only the AEAD and the hash.
    0x1301: "TLS_AES_128_GCM_SHA256",
    0x1302: "TLS_AES_256_GCM_SHA384",
    0x1303: "TLS_CHACHA20_POLY1305_SHA256",
    0x1304: "TLS_AES_128_CCM_SHA256",
    # TLS 1.2 AEAD suites with forward secrecy (what Mozilla "intermediate" allows).
    0xC02B: "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    0xC02C: "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    0xC02F: "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    0xC030: "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    0xCCA8: "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
    0xCCA9: "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
    0xCCAA: "TLS_DHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
    0x009E: "TLS_DHE_RSA_WITH_AES_128_GCM_SHA256",
    0x009F: "TLS_DHE_RSA_WITH_AES_256_GCM_SHA384",
    # TLS 1.2 CBC suites (MAC-then-encrypt: Lucky Thirteen), still offered by OpenSSL.
    0xC009: "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA",
    0xC00A: "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA",
    0xC013: "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA",
    0xC014: "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA",
    0xC023: "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256",
    0xC024: "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA384",
    0xC027: "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256",
    0xC028: "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA384",
    0x0033: "TLS_DHE_RSA_WITH_AES_128_CBC_SHA",
    0x0039: "TLS_DHE_RSA_WITH_AES_256_CBC_SHA",
    0x0067: "TLS_DHE_RSA_WITH_AES_128_CBC_SHA256",
    0x006B: "TLS_DHE_RSA_WITH_AES_256_CBC_SHA256",
    # Static RSA key exchange: no forward secrecy; removed from TLS 1.3.
    0x002F: "TLS_RSA_WITH_AES_128_CBC_SHA",
    0x0035: "TLS_RSA_WITH_AES_256_CBC_SHA",
    0x003C: "TLS_RSA_WITH_AES_128_CBC_SHA256",
    0x003D: "TLS_RSA_WITH_AES_256_CBC_SHA256",
    0x009C: "TLS_RSA_WITH_AES_128_GCM_SHA256",
    0x009D: "TLS_RSA_WITH_AES_256_GCM_SHA384",
    # Signalling values, not real suites: RFC 5746 §3.3 and RFC 7507 (downgrade).
    0x00FF: "TLS_EMPTY_RENEGOTIATION_INFO_SCSV",
    0x5600: "TLS_FALLBACK_SCSV",
}


def cipher_suite_name(code: int) -> str:
    if is_grease(code):
        return f"GREASE(0x{code:04x})"
    return CIPHER_SUITE_NAMES.get(code, f"0x{code:04x}")


def extension_name(code: int) -> str:
    if is_grease(code):
        return f"GREASE(0x{code:04x})"
    return EXTENSION_NAMES.get(code, f"extension_{code}")


@dataclass(frozen=True)
class ClientHello:
    """A decoded ClientHello (RFC 8446 §4.1.2; RFC 5246 §7.4.1.2 for TLS 1.2 clients)."""

    legacy_version: int
    random: bytes
    session_id: bytes
    cipher_suites: tuple[int, ...]
    compression_methods: bytes
    extensions: tuple[tuple[int, bytes], ...]   # (type, extension_data), in wire order
    server_name: str | None                     # validated, lower-case; see the module docstring
    alpn: tuple[str, ...]                       # latin-1 decoded: .encode("latin-1") gives the wire bytes
    supported_versions: tuple[int, ...]
    message: bytes = field(default=b"", repr=False)  # the whole handshake message (transcript input)

    @property
    def offers_tls13(self) -> bool:
        """TLS 1.3 is offered only through supported_versions (RFC 8446 §4.2.1);
        legacy_version stays 0x0303 so that old middleboxes keep working."""
        return 0x0304 in self.supported_versions

    @property
    def highest_version(self) -> int:
        offered = [v for v in self.supported_versions if not is_grease(v)]
        return max(offered) if offered else self.legacy_version

    @property
    def extension_types(self) -> tuple[int, ...]:
        return tuple(ext_type for ext_type, _ in self.extensions)

    def extension(self, ext_type: int) -> bytes | None:
        for candidate, data in self.extensions:
            if candidate == ext_type:
                return data
        return None

    def cipher_suite_names(self) -> list[str]:
        return [cipher_suite_name(code) for code in self.cipher_suites]

    def extension_names(self) -> list[str]:
        return [extension_name(code) for code in self.extension_types]

    def describe(self) -> str:
        """A few lines for a notebook or a log: what a passive observer learns."""
        versions = ", ".join(version_name(v) for v in self.supported_versions) or "(none: TLS <= 1.2 client)"
        return "\n".join([
            f"ClientHello ({len(self.message)} bytes), legacy_version {version_name(self.legacy_version)}",
            f"  server_name        : {self.server_name or '(none)'}",
            f"  alpn               : {', '.join(self.alpn) or '(none)'}",
            f"  supported_versions : {versions}",
            f"  cipher_suites      : {', '.join(self.cipher_suite_names())}",
            f"  extensions         : {', '.join(self.extension_names())}",
            f"  session_id         : {len(self.session_id)} bytes, random {self.random.hex()[:16]}...",
        ])


# --------------------------------------------------------------------------- the reader
class ClientHelloReader:
    """Accumulate the client's first bytes until they hold one complete ClientHello."""

    def __init__(self, max_size: int = 16384 * 4):
        # The limit on the ClientHello *message*.  Its 24-bit length field could announce
        # 16 MiB; without a cap a client would make the proxy buffer that much per
        # connection before any check (memory exhaustion).  64 KiB covers today's largest
        # real hellos (post-quantum key shares add ~1.2 KiB) many times over.
        self.max_size = max_size
        self._raw = bytearray()
        self._offset = 0                  # bytes of _raw consumed as whole records
        self._handshake = bytearray()     # handshake bytes collected from those records
        self._result: ClientHello | None = None
        self._error: TLSParseError | None = None
        self._eof = False

    @property
    def raw(self) -> bytes:
        """Every byte fed so far, to be replayed to the origin unchanged."""
        return bytes(self._raw)

    def feed(self, data: bytes) -> None:
        """Append bytes read from the client."""
        if self._eof:
            raise RuntimeError("feed() after feed_eof()")
        self._raw += data

    @property
    def eof(self) -> bool:
        """Did the client close its side (``feed_eof``)?"""
        return self._eof

    def feed_eof(self) -> None:
        """The client closed its side.  If the hello is not complete by then, it never
        will be: ``next_event`` raises ``TLSParseError`` instead of asking for more."""
        self._eof = True

    def next_event(self) -> ClientHello | Literal[_Sentinel.NEED_DATA]:
        if self._error is not None:
            raise self._error
        if self._result is None:
            try:
                self._result = self._advance()
                if self._result is None and self._eof:
                    raise TLSParseError(f"the client closed the connection after {len(self._raw)} bytes,"
                                        " before its ClientHello was complete")
            except TLSParseError as error:
                self._error = error     # sticky: the stream can never become valid again
                raise
        return self._result if self._result is not None else NEED_DATA

    # The work: consume whole records; look ahead into partial ones to fail early.
    def _advance(self) -> ClientHello | None:
        raw = self._raw
        while True:
            available = len(raw) - self._offset
            self._check_record_prefix(raw[self._offset:self._offset + 2])
            if available < RECORD_HEADER_LENGTH:
                return None
            header = raw[self._offset:self._offset + RECORD_HEADER_LENGTH]
            length = check_record_header(header, max_length=MAX_PLAINTEXT_LENGTH)
            if length == 0:
                # RFC 8446 §5.1: "Implementations MUST NOT send zero-length fragments of
                # Handshake types".  Allowing them would let a client trickle empty records
                # forever; refusing them bounds the records per hello by its length.
                raise TLSParseError("record: zero-length handshake fragment", alert=10)
            start = self._offset + RECORD_HEADER_LENGTH
            if available < RECORD_HEADER_LENGTH + length:
                self._check_handshake_prefix(self._handshake + raw[start:])
                return None
            self._handshake += raw[start:start + length]
            self._offset = start + length
            hello = self._try_complete()
            if hello is not None:
                return hello

    def _check_record_prefix(self, prefix: bytes) -> None:
        if prefix and prefix[0] != ContentType.HANDSHAKE:
            where = "the first record" if self._offset == 0 else "a record inside the ClientHello"
            # RFC 8446 §5.1: handshake messages MUST NOT be interleaved with other record
            # types.  On the first byte this is also how plain HTTP sent to the TLS port
            # ("GET ..." -> 0x47) is told apart at once.
            raise TLSParseError(f"{where} has content type {prefix[0]}, not handshake (22)",
                                alert=10)
        if len(prefix) == 2 and prefix[1] != 3:
            raise TLSParseError(f"record version major byte is {prefix[1]}, not 3: not TLS"
                                " (an SSLv2-format hello?)")

    def _check_handshake_prefix(self, visible: bytes) -> None:
        if visible and visible[0] != HandshakeType.CLIENT_HELLO:
            raise TLSParseError(f"first handshake message has type {visible[0]}, not ClientHello (1)",
                                alert=10)
        if len(visible) >= 4:
            length = int.from_bytes(visible[1:4], "big")
            if length > self.max_size:
                raise TLSParseError(f"ClientHello of {length} bytes exceeds the limit of {self.max_size}")

    def _try_complete(self) -> ClientHello | None:
        self._check_handshake_prefix(self._handshake)
        if len(self._handshake) < 4:
            return None
        end = 4 + int.from_bytes(self._handshake[1:4], "big")
        if len(self._handshake) < end:
            return None
        if len(self._handshake) > end:
            # RFC 8446 §5.1: a ClientHello may precede a key change (0-RTT), so it "MUST
            # align with a record boundary"; bytes after it in the same record are an error.
            raise TLSParseError("bytes follow the ClientHello inside its last record", alert=10)
        message = bytes(self._handshake)
        return parse_client_hello_body(message[4:], message=message)


def parse_client_hello(data: bytes) -> ClientHello:
    """Parse a complete first flight (whole records); raises if it is incomplete."""
    reader = ClientHelloReader()
    reader.feed(data)
    event = reader.next_event()
    if event is NEED_DATA:
        raise TLSParseError(f"incomplete ClientHello: {len(data)} bytes are only a prefix")
    return event


# --------------------------------------------------------------------------- the body
def parse_client_hello_body(body: bytes, *, message: bytes = b"") -> ClientHello:
    """Decode the ClientHello structure (the handshake message without its 4-byte header)."""
    reader = ByteReader(body, "ClientHello")
    legacy_version = reader.u16()
    if legacy_version >> 8 != 3:
        raise TLSParseError(f"ClientHello: legacy_version 0x{legacy_version:04x} is not TLS",
                            alert=70)
    random = reader.take(32)
    session_id = reader.vector(1, maximum=32, name="legacy_session_id")
    cipher_suites = uint16_list(reader.vector(2, minimum=2, maximum=2**16 - 2, element_size=2,
                                              name="cipher_suites"))
    compression_methods = reader.vector(1, minimum=1, name="legacy_compression_methods")
    extensions: tuple[tuple[int, bytes], ...] = ()
    if reader.remaining:     # RFC 5246 §7.4.1.2: a TLS 1.2 client may send no extensions at all
        extensions = _parse_extensions(reader.vector(2, name="extensions"))
    reader.expect_end()

    decoded = dict(extensions)
    server_name = _decode_server_name(decoded[0]) if 0 in decoded else None
    alpn = _decode_alpn(decoded[16]) if 16 in decoded else ()
    versions = _decode_supported_versions(decoded[43]) if 43 in decoded else ()
    return ClientHello(legacy_version, random, session_id, cipher_suites, compression_methods,
                       extensions, server_name, alpn, versions, message)


def _parse_extensions(block: bytes) -> tuple[tuple[int, bytes], ...]:
    reader = ByteReader(block, "extensions")
    extensions: list[tuple[int, bytes]] = []
    seen: set[int] = set()
    while reader.remaining:
        ext_type = reader.u16()
        data = reader.vector(2, name=f"extension {extension_name(ext_type)}")
        if ext_type in seen:
            # RFC 8446 §4.2 / RFC 5246 §7.4.1.4: no two extensions of one type.  Two
            # server_name extensions would let the proxy route on the first while the
            # origin answers for the second.
            raise TLSParseError(f"extension {extension_name(ext_type)} appears twice", alert=47)
        seen.add(ext_type)
        extensions.append((ext_type, data))
    if ExtensionType.PRE_SHARED_KEY in seen and extensions[-1][0] != ExtensionType.PRE_SHARED_KEY:
        # RFC 8446 §4.2.11: pre_shared_key "MUST be the last extension", because its
        # binders sign the hello up to that point.
        raise TLSParseError("pre_shared_key is not the last extension", alert=47)
    return tuple(extensions)


_HOST_NAME_CHARACTERS = frozenset(string.ascii_letters + string.digits + "-_.")


def _decode_server_name(data: bytes) -> str:
    reader = ByteReader(data, "server_name")
    server_name_list = reader.vector(2, minimum=1, name="server_name_list")
    reader.expect_end()
    entries = ByteReader(server_name_list, "server_name_list")
    name_type = entries.u8()
    host_name = entries.vector(2, minimum=1, name="HostName")
    if name_type != 0 or entries.remaining:
        raise TLSParseError("server_name must hold exactly one host_name entry", alert=47)
    return validate_host_name(host_name)


def validate_host_name(host_name: bytes) -> str:
    """Apply the server-name policy of the module docstring; return the routing key."""
    if not all(chr(byte) in _HOST_NAME_CHARACTERS for byte in host_name):
        bad = next(byte for byte in host_name if chr(byte) not in _HOST_NAME_CHARACTERS)
        raise TLSParseError(f"server_name {host_name!r}: byte 0x{bad:02x} is not allowed in a host name",
                            alert=47)
    name = host_name.decode("ascii").lower()
    if name.endswith("."):
        raise TLSParseError(f"server_name {name!r} ends with a dot (RFC 6066 §3 forbids it)", alert=47)
    labels = name.split(".")
    if len(name) > 253 or any(not 1 <= len(label) <= 63 for label in labels):
        raise TLSParseError(f"server_name {name!r}: empty or over-long label (RFC 1035 §2.3.4)", alert=47)
    if labels[-1].isdigit():
        # No top-level domain is all digits (RFC 3696 §2), so this is an IPv4 literal.
        raise TLSParseError(f"server_name {name!r} is an IP address (RFC 6066 §3 forbids it)", alert=47)
    return name


def _decode_alpn(data: bytes) -> tuple[str, ...]:
    reader = ByteReader(data, "ALPN")
    name_list = reader.vector(2, minimum=2, name="protocol_name_list")
    reader.expect_end()
    names = ByteReader(name_list, "protocol_name_list")
    protocols = []
    while names.remaining:
        # RFC 7301 §3.1: "Empty strings MUST NOT be included".
        protocols.append(names.vector(1, minimum=1, name="ProtocolName").decode("latin-1"))
    return tuple(protocols)


def _decode_supported_versions(data: bytes) -> tuple[int, ...]:
    reader = ByteReader(data, "supported_versions")
    versions = reader.vector(1, minimum=2, maximum=254, element_size=2, name="versions")
    reader.expect_end()
    return uint16_list(versions)


# --------------------------------------------------------------------------- the refusal
def unrecognized_name_alert() -> bytes:
    """The record the proxy sends when no pool serves the requested name.

    RFC 6066 §3: a server that does not recognise the name may "abort the handshake
    by sending a fatal-level unrecognized_name(112) alert".  The alert is a plaintext
    record (no keys exist yet): ``15 03 03 00 02 02 70``.
    """
    return alert_record(112, level=2)
