"""What one captured TCP connection carries: HTTP, or TLS records, opened when keys allow.

Theory of operation
-------------------
``dissect(connection, key_log)`` looks at both byte streams of a connection and
returns a ``Dissection``:

* ``protocol``: "http" (plaintext), "tls1.2" or "tls1.3" (from the ServerHello: TLS 1.3
  is announced only in its supported_versions extension, RFC 8446 §4.2.1), or
  "tunnel+tls1.3" when a plaintext ``CONNECT`` exchange precedes the TLS (a forward
  proxy's client leg);
* ``records[sender]``: every HTTP message start or TLS record, with its stream offset
  and a name as Wireshark would show it: ``ClientHello`` (``ClientHello (PSK)`` when it
  offers a TLS 1.3 session ticket), ``HelloRetryRequest`` (a ServerHello whose random
  is the SHA-256 of "HelloRetryRequest", RFC 8446 §4.1.3), ``ChangeCipherSpec``,
  ``Application Data``.  A protected record is named by its *real* content when the
  key log opens it (``EncryptedExtensions, Certificate, CertificateVerify,
  Finished``) and by what an observer sees otherwise (``Application Data``, or
  ``Encrypted Handshake Message`` for TLS 1.2's Finished);
* ``plaintext(sender)``: the application data, decrypted (``None`` if it could not be);
* ``readable(sender)``: everything a holder of these keys can read: the plaintext bytes
  on the wire plus every record it could open (handshake messages too).

An opened record's ``detail`` is the HTTP/1.1 start line it begins with or, on an
HTTP/2 connection (the client's data opens with the connection preface, RFC 9113 §3.4),
the frames that start in it, as Wireshark names them: ``Magic (preface), SETTINGS[0]``,
``HEADERS[1]: POST /path``, ``DATA[1]`` (``h2frames.py``).

TLS 1.3 is opened with our own key schedule (``proxy.tls.keyschedule``), TLS 1.2 with
``course.capture.tls12``; both are sans-IO and so is this module.  The ladder diagram
names its arrows from ``records``; the "who sees what" table searches ``readable``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path

from course.capture import h2frames, tls12
from course.capture.flows import TCPConnection
from proxy.errors import TLSDecryptError, TLSParseError
from proxy.tls.clienthello import ClientHello, parse_client_hello
from proxy.tls.keyschedule import HELLO_RETRY_REQUEST_RANDOM, decrypt_connection
from proxy.tls.records import (
    ContentType,
    HandshakeReassembler,
    alert_name,
    handshake_name,
    iter_records,
    split_records,
)

HTTP_START = re.compile(rb"(?:[A-Z]+ \S+ HTTP/1\.[01]|HTTP/1\.[01] \d{3}[^\r\n]*)\r\n")
KeyLog = dict[bytes, dict[str, bytes]]
PRE_SHARED_KEY = 41      # RFC 8446 §4.2.11: the ClientHello offers a ticket to resume with


@dataclass(frozen=True)
class RecordView:
    """One TLS record (or HTTP message start) of one direction."""

    offset: int                    # in the sender's stream
    length: int                    # bytes on the wire
    names: tuple[str, ...]         # what it holds, e.g. ("ServerHello",) or ("Application Data",)
    protected: bool = False        # encrypted on the wire
    opened: bool = False           # ... and decrypted here with a key log
    detail: str = ""               # an opened record's HTTP start line, e.g. "POST /path HTTP/1.1"
    keys: str = ""                 # which keys protect it: "handshake" (TLS 1.3), "application", "" (none)
    span: tuple[int, int] | None = None   # an opened application-data record: its content's place in plaintext()


@dataclass
class Dissection:
    connection: TCPConnection
    protocol: str                                      # "http", "tls1.2", "tls1.3", "tunnel+tls1.x", "tcp"
    records: dict[str, list[RecordView]]
    client_hello: ClientHello | None = None
    decrypted: bool = False
    error: str | None = None                           # why the TLS was not opened
    _plaintext: dict[str, bytes] = field(default_factory=dict, repr=False)
    _opened: dict[str, bytes] = field(default_factory=dict, repr=False)

    @property
    def is_tls(self) -> bool:
        return "tls" in self.protocol

    def plaintext(self, sender: str) -> bytes | None:
        """What ``sender`` sent as application data (HTTP), or None if it stayed encrypted."""
        return self._plaintext.get(sender)

    def opened(self, sender: str) -> bytes:
        """The content of every record the keys opened (handshake messages and data)."""
        return self._opened.get(sender, b"")

    def readable(self, sender: str) -> bytes:
        """The wire bytes plus every opened record's content: what a key holder can read."""
        return self.connection.stream(sender) + self._opened.get(sender, b"")


def split_http_prefix(data: bytes) -> int:
    """Length of a plaintext HTTP head (a CONNECT request, or its 2xx reply) at the start
    of a stream that continues as TLS; 0 if the stream does not start with one."""
    if HTTP_START.match(data) and b"\r\n\r\n" in data:
        end = data.index(b"\r\n\r\n") + 4
        if data[end:end + 1] == b"\x16" or end == len(data):
            return end
    return 0


def _negotiated(server_tls: bytes) -> str:
    """"tls1.3" or "tls1.2", from the ServerHello's supported_versions extension."""
    for record in split_records(server_tls)[0]:
        if record.content_type == ContentType.HANDSHAKE:
            message = HandshakeReassembler().feed(record.fragment)
            if message and message[0][0] == 2:
                _, _, extensions = tls12.parse_hello(message[0])
                return "tls1.3" if 43 in extensions else "tls1.2"
    return "tls1.2"


def dissect(connection: TCPConnection, key_log: KeyLog | None = None, *,
            server_rsa_key: bytes | None = None) -> Dissection:
    client, server = connection.stream("client"), connection.stream("server")
    client_prefix, server_prefix = split_http_prefix(client), split_http_prefix(server)
    if client[client_prefix:client_prefix + 1] != b"\x16":
        return _dissect_http(connection, client, server)
    protocol = _negotiated(server[server_prefix:])
    result = Dissection(connection, ("tunnel+" if client_prefix else "") + protocol,
                        {"client": _http_views(client[:client_prefix]), "server": _http_views(server[:server_prefix])})
    try:
        result.client_hello = parse_client_hello(client[client_prefix:])
    except TLSParseError:
        pass
    offers_psk = result.client_hello is not None and result.client_hello.extension(PRE_SHARED_KEY) is not None
    tls_client, tls_server = client[client_prefix:], server[server_prefix:]
    try:
        if protocol == "tls1.3":
            opened = _open_tls13(tls_client, tls_server, key_log or {})
        else:
            opened = _open_tls12(tls_client, tls_server, key_log, server_rsa_key)
        result.decrypted = True
    except (TLSDecryptError, TLSParseError, KeyError, ValueError) as error:
        result.error = str(error)
        opened = {"client": _sealed_views(tls_client, protocol), "server": _sealed_views(tls_server, protocol)}
    for sender, prefix in (("client", client_prefix), ("server", server_prefix)):
        views, plaintext, contents = opened[sender]
        for view in views:
            if offers_psk and view.names == ("ClientHello",):
                view = replace(view, names=("ClientHello (PSK)",))    # a TLS 1.3 resumption attempt
            result.records[sender].append(replace(view, offset=view.offset + prefix))
        if result.decrypted:
            result._plaintext[sender] = plaintext
            result._opened[sender] = contents
    if result.decrypted and h2frames.is_http2(result._plaintext.get("client", b"")):
        _name_http2_frames(result)
    return result


def _name_http2_frames(result: Dissection) -> None:
    """Label each opened application-data record of an HTTP/2 connection by its frames."""
    for sender in ("client", "server"):
        frames = h2frames.split_frames(result._plaintext[sender])
        result.records[sender] = [replace(view, detail=h2frames.record_detail(frames, *view.span))
                                  if view.span is not None else view for view in result.records[sender]]


def _dissect_http(connection: TCPConnection, client: bytes, server: bytes) -> Dissection:
    protocol = "http" if HTTP_START.match(client) or not client else "tcp"
    result = Dissection(connection, protocol, {"client": _http_views(client), "server": _http_views(server)},
                        decrypted=True)
    result._plaintext = {"client": client, "server": server}
    return result


def _http_views(data: bytes) -> list[RecordView]:
    views = []
    for match in HTTP_START.finditer(data):
        if match.start() == 0 or data[match.start() - 1:match.start()] == b"\n":   # at a line start
            views.append(RecordView(match.start(), len(match.group()), (match.group().decode("latin-1").strip(),)))
    return views


def message_name(message: bytes) -> str:
    """A handshake message's name (``message`` starts with its 4-byte header).

    RFC 8446 §4.1.3: a HelloRetryRequest *is* a ServerHello on the wire (type 2), told
    apart only by its random, the SHA-256 of "HelloRetryRequest"; it asks the client for
    another ClientHello with a key share the server accepts (§4.1.4)."""
    if message[:1] == b"\x02" and message[6:38] == HELLO_RETRY_REQUEST_RANDOM:
        return "HelloRetryRequest"
    return handshake_name(message[0])


def _names(content_type: int, content: bytes, message_types: list[int | str]) -> tuple[str, ...]:
    if content_type == ContentType.HANDSHAKE:
        return (tuple(t if isinstance(t, str) else handshake_name(t) for t in message_types)
                or ("(part of a handshake message)",))
    if content_type == ContentType.ALERT and len(content) >= 2:
        return (f"Alert({alert_name(content[1])})",)
    if content_type == ContentType.CHANGE_CIPHER_SPEC:
        return ("ChangeCipherSpec",)
    if content_type == ContentType.APPLICATION_DATA:
        return ("Application Data",)
    return (f"content type {content_type}",)


def _detail(content_type: int, content: bytes) -> str:
    """The HTTP start line an opened application-data record begins with, if any."""
    match = HTTP_START.match(content) if content_type == ContentType.APPLICATION_DATA else None
    return match.group().decode("latin-1").strip() if match else ""


def _message_types(reassembler: HandshakeReassembler, record) -> list[str]:
    """Names of the handshake messages a plaintext handshake record completes."""
    if record.content_type != ContentType.HANDSHAKE:
        return []
    return [message_name(message) for message in reassembler.feed(record.fragment)]


def _sealed_views(data: bytes, protocol: str) -> tuple[list[RecordView], bytes, bytes]:
    """Record names as an observer without keys sees them."""
    views, offset, after_ccs = [], 0, False
    reassembler = HandshakeReassembler()
    records, _ = split_records(data)
    for record in records:
        protected = (record.content_type == ContentType.APPLICATION_DATA
                     or (protocol == "tls1.2" and after_ccs))
        if not protected:
            names = _names(record.content_type, record.fragment, _message_types(reassembler, record))
        elif record.content_type == ContentType.HANDSHAKE:
            names = ("Encrypted Handshake Message",)
        elif record.content_type == ContentType.ALERT:
            names = ("Encrypted Alert",)
        else:
            names = ("Application Data",)
        after_ccs = after_ccs or record.content_type == ContentType.CHANGE_CIPHER_SPEC
        views.append(RecordView(offset, 5 + len(record.fragment), names, protected,
                                keys="application" if protected else ""))
        offset += 5 + len(record.fragment)
    return views, b"", b""


def _open_tls13(client: bytes, server: bytes, key_log: KeyLog) -> dict:
    connection = decrypt_connection(client, server, key_log)
    opened = {}
    for sender, stream_records in (("client", connection.client_records), ("server", connection.server_records)):
        views, offset, plaintext, contents = [], 0, b"", b""
        reassembler = HandshakeReassembler()
        for item in stream_records:
            protected = item.keys != "plaintext"
            types = list(item.handshake_messages) if protected else _message_types(reassembler, item.record)
            data = protected and item.content_type == ContentType.APPLICATION_DATA
            views.append(RecordView(offset, len(item.record.to_bytes()),
                                    _names(item.content_type, item.content, types), protected, protected,
                                    _detail(item.content_type, item.content) if protected else "",
                                    item.keys.split("+")[0] if protected else "",
                                    (len(plaintext), len(plaintext) + len(item.content)) if data else None))
            offset += len(item.record.to_bytes())
            if protected:
                contents += item.content
                if data:
                    plaintext += item.content
        opened[sender] = (views, plaintext, contents)
    return opened


def _open_tls12(client: bytes, server: bytes, key_log: KeyLog | None, server_rsa_key: bytes | None) -> dict:
    connection = tls12.decrypt_connection12(client, server, key_log=key_log, server_private_key=server_rsa_key)
    opened = {}
    for sender, records in (("client", connection.client_records), ("server", connection.server_records)):
        views, offset, plaintext, contents = [], 0, b"", b""
        reassembler, wire = HandshakeReassembler(), list(iter_records(client if sender == "client" else server))
        for record, on_wire in zip(records, wire):
            types = ([message_name(m) for m in reassembler.feed(record.content)]
                     if record.content_type == ContentType.HANDSHAKE else [])
            size = len(on_wire.to_bytes())
            data = record.protected and record.content_type == ContentType.APPLICATION_DATA
            views.append(RecordView(offset, size, _names(record.content_type, record.content, types),
                                    record.protected, record.protected,
                                    _detail(record.content_type, record.content) if record.protected else "",
                                    "application" if record.protected else "",
                                    (len(plaintext), len(plaintext) + len(record.content)) if data else None))
            offset += size
            if record.protected:
                contents += record.content
                if data:
                    plaintext += record.content
        opened[sender] = (views, plaintext, contents)
    return opened


def dissect_all(connections: list[TCPConnection], key_log_file: str | Path | None = None, *,
                server_rsa_key_file: str | Path | None = None) -> list[Dissection]:
    """``dissect`` every connection with one key log file (and/or an RSA key file)."""
    from proxy.tls.keyschedule import parse_key_log

    key_log = parse_key_log(Path(key_log_file).read_text()) if key_log_file and Path(key_log_file).exists() else {}
    rsa_key = Path(server_rsa_key_file).read_bytes() if server_rsa_key_file else None
    return [dissect(c, key_log, server_rsa_key=rsa_key) for c in connections]
