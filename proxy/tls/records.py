"""The TLS record layer and the vocabulary shared by the TLS modules (sans-IO).

Theory of operation
-------------------
TLS runs over a byte stream (TCP) but thinks in *records* (RFC 8446 §5.1, RFC 5246
§6.2).  Every record starts with the same 5-byte header::

    +--------------+-----------------------+------------------+
    | content type | legacy_record_version |      length      |
    |    1 byte    |   2 bytes (0x03 0x0N) | 2 bytes, <= 2^14 |
    +--------------+-----------------------+------------------+
    | fragment: `length` bytes                                |
    +---------------------------------------------------------+

TCP does not keep record boundaries: one ``recv()`` can return half a header, or
three records and a bit.  So a reader keeps a buffer, cuts whole records off its
front (``split_records``) and keeps the rest for the next read.  Records do not
keep *handshake message* boundaries either: one message may span several records
and one record may hold several messages (RFC 8446 §5.1), so handshake messages
are reassembled from record fragments in a second step (``HandshakeReassembler``).

This module also holds the presentation-language reader (``ByteReader``, RFC 8446
§3: big-endian integers and length-prefixed vectors) and the name tables that the
ClientHello parser, the key schedule and the handshake trace print.  It imports no
socket, ssl or threading: bytes in, values out.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Iterator

from proxy.errors import TLSParseError

RECORD_HEADER_LENGTH = 5
# RFC 8446 §5.1: "The length MUST NOT exceed 2^14 bytes.  An endpoint that receives a
# record that exceeds this length MUST terminate the connection with a
# record_overflow alert."  The cap bounds what a peer can make us buffer per record.
MAX_PLAINTEXT_LENGTH = 2**14
# RFC 8446 §5.2: a protected record may carry up to 255 bytes of expansion (padding,
# inner content type, AEAD tag) on top of the plaintext limit.
MAX_CIPHERTEXT_LENGTH = 2**14 + 256


class ContentType(IntEnum):
    """TLS record content types (RFC 8446 §5.1; heartbeat: RFC 6520)."""

    CHANGE_CIPHER_SPEC = 20
    ALERT = 21
    HANDSHAKE = 22
    APPLICATION_DATA = 23
    HEARTBEAT = 24


class HandshakeType(IntEnum):
    """Handshake message types (RFC 8446 §4, RFC 5246 §7.4)."""

    HELLO_REQUEST = 0
    CLIENT_HELLO = 1
    SERVER_HELLO = 2
    HELLO_VERIFY_REQUEST = 3
    NEW_SESSION_TICKET = 4
    END_OF_EARLY_DATA = 5
    ENCRYPTED_EXTENSIONS = 8
    CERTIFICATE = 11
    SERVER_KEY_EXCHANGE = 12
    CERTIFICATE_REQUEST = 13
    SERVER_HELLO_DONE = 14
    CERTIFICATE_VERIFY = 15
    CLIENT_KEY_EXCHANGE = 16
    FINISHED = 20
    CERTIFICATE_STATUS = 22
    KEY_UPDATE = 24
    COMPRESSED_CERTIFICATE = 25
    MESSAGE_HASH = 254


CONTENT_TYPE_NAMES: dict[int, str] = {
    20: "change_cipher_spec",
    21: "alert",
    22: "handshake",
    23: "application_data",
    24: "heartbeat",
}

# The names a student sees in Wireshark and in the RFCs' message-flow figures.
HANDSHAKE_NAMES: dict[int, str] = {
    0: "HelloRequest",
    1: "ClientHello",
    2: "ServerHello",
    3: "HelloVerifyRequest",
    4: "NewSessionTicket",
    5: "EndOfEarlyData",
    8: "EncryptedExtensions",
    11: "Certificate",
    12: "ServerKeyExchange",
    13: "CertificateRequest",
    14: "ServerHelloDone",
    15: "CertificateVerify",
    16: "ClientKeyExchange",
    20: "Finished",
    22: "CertificateStatus",
    24: "KeyUpdate",
    25: "CompressedCertificate",
    254: "MessageHash",
}

ALERT_LEVELS: dict[int, str] = {1: "warning", 2: "fatal"}

# RFC 8446 §6 (and §6.2 for which are fatal); 112 unrecognized_name is RFC 6066 §3.
ALERT_DESCRIPTIONS: dict[int, str] = {
    0: "close_notify",
    10: "unexpected_message",
    20: "bad_record_mac",
    22: "record_overflow",
    40: "handshake_failure",
    42: "bad_certificate",
    43: "unsupported_certificate",
    44: "certificate_revoked",
    45: "certificate_expired",
    46: "certificate_unknown",
    47: "illegal_parameter",
    48: "unknown_ca",
    49: "access_denied",
    50: "decode_error",
    51: "decrypt_error",
    70: "protocol_version",
    71: "insufficient_security",
    80: "internal_error",
    86: "inappropriate_fallback",
    90: "user_canceled",
    100: "no_renegotiation",
    109: "missing_extension",
    110: "unsupported_extension",
    112: "unrecognized_name",
    113: "bad_certificate_status_response",
    115: "unknown_psk_identity",
    116: "certificate_required",
    120: "no_application_protocol",
}

VERSION_NAMES: dict[int, str] = {
    0x0300: "SSL 3.0",
    0x0301: "TLS 1.0",
    0x0302: "TLS 1.1",
    0x0303: "TLS 1.2",
    0x0304: "TLS 1.3",
}


def handshake_name(msg_type: int) -> str:
    return HANDSHAKE_NAMES.get(msg_type, f"handshake_{msg_type}")


def alert_name(description: int) -> str:
    return ALERT_DESCRIPTIONS.get(description, f"alert_{description}")


def version_name(version: int) -> str:
    if is_grease(version):
        return f"GREASE(0x{version:04x})"
    return VERSION_NAMES.get(version, f"0x{version:04x}")


def is_grease(value: int) -> bool:
    """RFC 8701: 0x0A0A, 0x1A1A ... 0xFAFA are reserved values clients send at random so
    that servers that choke on unknown values are found early (protocol ossification)."""
    return value & 0x0F0F == 0x0A0A and value >> 8 == value & 0xFF


# --------------------------------------------------------------------------- byte reader
class ByteReader:
    """A cursor over bytes that reads RFC 8446 §3 presentation-language values.

    Every read checks that the bytes are there and raises ``TLSParseError``
    otherwise, so a length field can never make the parser read past its container
    (the bug class behind Heartbleed, CVE-2014-0160: a length trusted without a
    bounds check).
    """

    def __init__(self, data: bytes, what: str = "message"):
        self._data = memoryview(data)
        self._offset = 0
        self.what = what

    @property
    def remaining(self) -> int:
        return len(self._data) - self._offset

    def take(self, n: int) -> bytes:
        if n > self.remaining:
            raise TLSParseError(f"{self.what}: needs {n} more bytes, only {self.remaining} left")
        chunk = bytes(self._data[self._offset:self._offset + n])
        self._offset += n
        return chunk

    def uint(self, size: int) -> int:
        return int.from_bytes(self.take(size), "big")

    def u8(self) -> int:
        return self.uint(1)

    def u16(self) -> int:
        return self.uint(2)

    def u24(self) -> int:
        return self.uint(3)

    def vector(self, length_size: int, *, minimum: int = 0, maximum: int | None = None,
               element_size: int = 1, name: str = "vector") -> bytes:
        """``opaque name<minimum..maximum>``: a length prefix of ``length_size`` bytes,
        then that many bytes, which must be a whole number of ``element_size`` items."""
        length = self.uint(length_size)
        if length < minimum or (maximum is not None and length > maximum):
            raise TLSParseError(f"{self.what}: {name} length {length} outside {minimum}..{maximum}")
        if length % element_size:
            raise TLSParseError(
                f"{self.what}: {name} length {length} is not a multiple of {element_size}")
        return self.take(length)

    def expect_end(self) -> None:
        if self.remaining:
            raise TLSParseError(f"{self.what}: {self.remaining} unexpected trailing bytes")


def uint16_list(data: bytes) -> tuple[int, ...]:
    return tuple(int.from_bytes(data[i:i + 2], "big") for i in range(0, len(data), 2))


# --------------------------------------------------------------------------- records
@dataclass(frozen=True)
class Record:
    """One TLS record as it travels on the wire."""

    content_type: int
    legacy_version: int
    fragment: bytes

    @property
    def header(self) -> bytes:
        """The 5 header bytes: also the AEAD associated data in TLS 1.3 (RFC 8446 §5.2)."""
        return (bytes([self.content_type]) + self.legacy_version.to_bytes(2, "big")
                + len(self.fragment).to_bytes(2, "big"))

    def to_bytes(self) -> bytes:
        return self.header + self.fragment

    @property
    def type_name(self) -> str:
        return CONTENT_TYPE_NAMES.get(self.content_type, f"content_type_{self.content_type}")


def check_record_header(header: bytes, *, max_length: int = MAX_CIPHERTEXT_LENGTH) -> int:
    """Validate a 5-byte record header and return the fragment length.

    The version is checked only for its major byte 0x03: RFC 8446 §5.1 says
    legacy_record_version "MUST be ignored for all purposes", but a first byte other
    than 3 means the peer is not speaking TLS at all (plain HTTP on a TLS port starts
    with "GET ", an SSLv2-style hello with 0x80).
    """
    content_type = header[0]
    if content_type not in CONTENT_TYPE_NAMES:
        raise TLSParseError(f"record: unknown content type {content_type}"
                            f" (first bytes {bytes(header[:5])!r}; not TLS?)", alert=10)
    if header[1] != 3:
        raise TLSParseError(f"record: version 0x{header[1]:02x}{header[2]:02x} is not TLS")
    length = int.from_bytes(header[3:5], "big")
    if length > max_length:
        # RFC 8446 §5.1/§5.2: record_overflow.  Without the cap a peer could announce
        # a 64 KiB record and make us buffer it before anything is checked.
        raise TLSParseError(f"record: length {length} exceeds {max_length}", alert=22)
    return length


def split_records(data: bytes, *, max_length: int = MAX_CIPHERTEXT_LENGTH) -> tuple[list[Record], int]:
    """Cut the complete records off the front of ``data``.

    Returns the records and how many bytes they used; the caller keeps
    ``data[used:]`` (a partial record) for when more bytes arrive.
    """
    records: list[Record] = []
    offset = 0
    while len(data) - offset >= RECORD_HEADER_LENGTH:
        length = check_record_header(data[offset:offset + RECORD_HEADER_LENGTH], max_length=max_length)
        end = offset + RECORD_HEADER_LENGTH + length
        if end > len(data):
            break
        records.append(Record(data[offset], int.from_bytes(data[offset + 1:offset + 3], "big"),
                              bytes(data[offset + RECORD_HEADER_LENGTH:end])))
        offset = end
    return records, offset


def iter_records(data: bytes, *, max_length: int = MAX_CIPHERTEXT_LENGTH) -> Iterator[Record]:
    """Every record of a complete capture of one direction; a cut-off record at the end
    raises ``TLSParseError`` (a capture that stopped mid-record)."""
    records, used = split_records(data, max_length=max_length)
    yield from records
    if used != len(data):
        raise TLSParseError(f"record: {len(data) - used} bytes of an incomplete record at the end")


class HandshakeReassembler:
    """Rebuild handshake messages from the fragments of consecutive handshake records.

    Each message is ``msg_type (1) | length (3) | body``; ``feed`` takes one record's
    fragment and returns the messages it completed, each as its full bytes (header
    included, which is what transcript hashes are computed over, RFC 8446 §4.4.1).
    """

    def __init__(self, *, max_message_length: int = 2**20):
        # 1 MiB: far above any real handshake message (a long certificate chain is tens
        # of kB) and far below the 16 MiB a 24-bit length field can announce.
        self._buffer = bytearray()
        self.max_message_length = max_message_length

    @property
    def pending(self) -> int:
        """Bytes of a message still waiting for its remaining fragments."""
        return len(self._buffer)

    def feed(self, fragment: bytes) -> list[bytes]:
        self._buffer += fragment
        messages = []
        while len(self._buffer) >= 4:
            length = int.from_bytes(self._buffer[1:4], "big")
            if length > self.max_message_length:
                raise TLSParseError(f"handshake: message of {length} bytes exceeds the limit of"
                                    f" {self.max_message_length}")
            if len(self._buffer) < 4 + length:
                break
            messages.append(bytes(self._buffer[:4 + length]))
            del self._buffer[:4 + length]
        return messages


# --------------------------------------------------------------------------- alerts
def alert_record(description: int, *, level: int = 2, legacy_version: int = 0x0303) -> bytes:
    """A plaintext alert record: ``level (1) | description (1)`` in a type-21 record
    (RFC 8446 §6).  Before any keys exist, alerts travel unencrypted."""
    return Record(ContentType.ALERT, legacy_version, bytes([level, description])).to_bytes()
