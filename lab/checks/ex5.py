"""Checks for exercise 5 (parse a ClientHello for its server name).

The answer key is ``proxy.tls.clienthello``: for every byte string, the student's
``parse_sni`` must give what ``ClientHelloReader`` gives: the same server name,
``NEED_DATA`` for a valid but incomplete first flight, ``TLSParseError`` for bytes
that can never become one.  The inputs are the ClientHellos real clients sent
(``tests/fixtures/clienthello``: curl, openssl s_client, Python), one Python sends
while the check runs, those cut short or corrupted, and hand-built hellos for the
server-name policy of step 6.

One choice is left to the student: the record header's version byte.  RFC 8446
§5.1 says ``legacy_record_version`` "MUST be ignored for all purposes" (Appendix D:
"by all implementations"); the proxy refuses a major byte other than 3 anyway, as an early
"this is not TLS" test (stricter than RFC 8446; every TLS stack since SSL 3.0 sends
3 there).  A parser that ignores the byte, as the RFC says, passes with a note.
"""

from __future__ import annotations

from pathlib import Path

from lab.checks import Checklist, Fail, Reference, need, show
from lab.harness import capture_client_hello
from proxy.errors import TLSParseError
from proxy.tls.clienthello import NEED_DATA, ClientHelloReader, parse_client_hello

CHECKLIST = Checklist("Parse a ClientHello for its server name", Reference(
    forbid=("proxy.tls.clienthello", "proxy.tls.records", "course.capture", "course.handshakes", "course.clients"),
    allow=("proxy.tls.clienthello.NEED_DATA",  # the README hands out NEED_DATA and the constants
           "proxy.tls.records.ContentType", "proxy.tls.records.HandshakeType",
           "proxy.tls.records.RECORD_HEADER_LENGTH", "proxy.tls.records.MAX_PLAINTEXT_LENGTH"),
    why="the proxy's own ClientHello and record parser (proxy/tls/), the code this exercise compares you with"))

RECORD_VERSION_NOTE = ("note: you ignore the record header's version byte, as RFC 8446 §5.1 says (\"MUST be "
                       "ignored for all purposes\"); the proxy refuses a major byte other than 3, a stricter-than-RFC "
                       "early test that the bytes are TLS at all")
check = CHECKLIST.check

FIXTURES = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "clienthello"


def fixtures() -> dict[str, bytes]:
    found = {path.name: path.read_bytes() for path in sorted(FIXTURES.glob("*.bin"))}
    if not found:
        raise Fail(f"no ClientHello fixtures in {FIXTURES}: is this a full clone of the repository?")
    return found


def reference(data: bytes):
    """What the proxy makes of ``data``: a name, None, NEED_DATA or the TLSParseError."""
    reader = ClientHelloReader()
    reader.feed(data)
    try:
        event = reader.next_event()
    except TLSParseError as error:
        return error
    return NEED_DATA if event is NEED_DATA else event.server_name


def attempt(function, *args):
    try:
        return function(*args)
    except TLSParseError as error:
        return error


def describe(outcome) -> str:
    if isinstance(outcome, TLSParseError):
        return f"TLSParseError({str(outcome)[:70]!r})"
    return show(outcome, 70)


def same_as_proxy(mine, want, case: str) -> None:
    if isinstance(want, TLSParseError):
        if not isinstance(mine, TLSParseError):
            raise Fail(f"{case}: returned {describe(mine)}; the proxy refuses it: {str(want)[:90]}")
    elif isinstance(mine, TLSParseError) or mine != want:
        raise Fail(f"{case}: gave {describe(mine)}; expected {describe(want)}")


# --------------------------------------------------------------------------- building hellos
def u16(value: int) -> bytes:
    return value.to_bytes(2, "big")


def vec(length_size: int, data: bytes) -> bytes:
    return len(data).to_bytes(length_size, "big") + data


def ext(ext_type: int, data: bytes) -> bytes:
    return u16(ext_type) + vec(2, data)


def sni(*names: bytes, name_type: int = 0) -> bytes:
    return ext(0, vec(2, b"".join(bytes([name_type]) + vec(2, name) for name in names)))


def hello(*extensions: bytes, body_length_change: int = 0, no_extensions: bool = False) -> bytes:
    """A one-record first flight: TLS 1.3 offered, the given extensions.

    ``no_extensions``: an old TLS 1.2 client's hello, with no extensions block at all.
    """
    body = u16(0x0303) + bytes(range(32)) + vec(1, bytes(32)) + vec(2, b"\x13\x01\x13\x02") + vec(1, b"\x00")
    if not no_extensions:
        body += vec(2, ext(43, vec(1, u16(0x0304))) + b"".join(extensions))
    message = bytes([1]) + (len(body) + body_length_change).to_bytes(3, "big") + body
    return bytes([22]) + u16(0x0301) + vec(2, message)


def corrupt(data: bytes, offset: int, value: bytes) -> bytes:
    return data[:offset] + value + data[offset + len(value):]


def extensions_offset(data: bytes) -> int:
    """Where the 2-byte extensions length sits in a one-record first flight."""
    at = 5 + 4 + 2 + 32
    at += 1 + data[at]  # legacy_session_id
    at += 2 + int.from_bytes(data[at:at + 2], "big")  # cipher_suites
    return at + 1 + data[at]  # legacy_compression_methods


def sni_offset(data: bytes) -> int:
    """Where the server_name extension's data (its list length) starts."""
    at = extensions_offset(data) + 2
    while int.from_bytes(data[at:at + 2], "big") != 0:
        at += 4 + int.from_bytes(data[at + 2:at + 4], "big")
    return at + 4


# --------------------------------------------------------------------------- step 1
@check(1, "read_vector reads a length-prefixed vector and says where the next field starts",
       hint="RFC 8446 §3.4: the length (1, 2 or 3 bytes, big-endian) comes first; int.from_bytes(..., 'big')")
def _(student, lab):
    read_vector = need(student, "read_vector")
    cases = [((b"\x03abcXYZ", 0, 1), (b"abc", 4)), ((b"\x00\x02hi!", 0, 2), (b"hi", 4)),
             ((b"skip\x00\x00\x01Z", 4, 3), (b"Z", 8)), ((b"\x00\x00", 0, 2), (b"", 2))]
    for args, want in cases:
        got = read_vector(*args)
        if not isinstance(got, tuple) or tuple(got) != want:
            raise Fail(f"read_vector{show(args)} returned {show(got)}; expected {show(want)}")


@check(1, "read_vector raises TLSParseError when a length runs past the end",
       hint="never trust a length from the network: check it against len(data) before slicing")
def _(student, lab):
    read_vector = need(student, "read_vector")
    for args in [(b"\x05ab", 0, 1), (b"\x00", 0, 2), (b"ab\x00\x09", 2, 2), (b"", 0, 1)]:
        got = attempt(read_vector, *args)
        if not isinstance(got, TLSParseError):
            raise Fail(f"read_vector{show(args)} returned {show(got)}; expected TLSParseError")


# --------------------------------------------------------------------------- step 2
@check(2, "client_hello_body returns the ClientHello body from real clients' first flights",
       hint="5-byte record header (type 22, version, length), then the 4-byte handshake header "
            "(type 1, 24-bit length): the body is what follows")
def _(student, lab):
    body_of = need(student, "client_hello_body")
    for name, data in fixtures().items():
        want = parse_client_hello(data).message[4:]
        got = attempt(body_of, data)
        if got != want:
            raise Fail(f"{name}: returned {describe(got)} ({len(got) if isinstance(got, bytes) else '-'} bytes); "
                       f"expected the {len(want)}-byte body")


@check(2, "client_hello_body answers NEED_DATA for a first flight cut short, wherever it is cut",
       hint="TCP delivers any prefix: a short read is not an error (import NEED_DATA from proxy.tls.clienthello)")
def _(student, lab):
    body_of = need(student, "client_hello_body")
    data = fixtures()["python-ssl.bin"]
    for cut in (0, 1, 2, 4, 5, 6, 8, 9, 100, len(data) - 1):
        same_as_proxy(attempt(body_of, data[:cut]), NEED_DATA, f"the first {cut} bytes of python-ssl.bin")
    continued = hello(sni(b"www.example.test"), body_length_change=+10)  # the message goes on in a next record
    same_as_proxy(attempt(body_of, continued), NEED_DATA, "a ClientHello longer than its first record")


@check(2, "client_hello_body refuses what can never become a ClientHello",
       hint="check each header byte as soon as it arrives: content type 22, handshake type 1 (and, like the "
            "proxy, version major 3, although RFC 8446 lets you ignore that byte)")
def _(student, lab):
    body_of = need(student, "client_hello_body")
    data = fixtures()["python-ssl.bin"]
    cases = {
        "plain HTTP sent to a TLS port": b"GET / HTTP/1.1\r\nHost: www.example.test\r\n\r\n",
        "content type 23 (application_data)": corrupt(data, 0, b"\x17"),
        "record version major 0x80 (SSLv2-style)": corrupt(data, 1, b"\x80"),
        "handshake type 2 (a ServerHello)": corrupt(data, 5, b"\x02"),
        "the first byte alone, when it is wrong": b"\x47",
        "bytes after the ClientHello in its record": hello(sni(b"www.example.test"), body_length_change=-1),
    }
    note = None
    for case, bad in cases.items():
        got = attempt(body_of, bad)
        if case.startswith("record version") and got == parse_client_hello(data).message[4:]:
            note = RECORD_VERSION_NOTE  # the letter of RFC 8446: the body, record version ignored
            continue
        same_as_proxy(got, reference(bad), case)
    return note


# --------------------------------------------------------------------------- step 3
@check(3, "extensions lists (type, data) of every extension, in wire order",
       hint="skip legacy_version (2) and random (32), then three vectors: session id <1>, "
            "cipher suites <2>, compression <1>; then the extensions <2>, each type(2) + data<2>")
def _(student, lab):
    extensions = need(student, "extensions")
    samples = {**fixtures(), "a TLS 1.2 hello with no extensions block": hello(no_extensions=True)}
    for name, data in samples.items():
        parsed = parse_client_hello(data)
        got = extensions(parsed.message[4:])
        if not isinstance(got, (list, tuple)) or [tuple(e) for e in got] != list(parsed.extensions):
            raise Fail(f"{name}: got {show(got)}; expected {len(parsed.extensions)} extensions, types "
                       f"{[t for t, _ in parsed.extensions]}")


# --------------------------------------------------------------------------- step 4
@check(4, "server_name decodes the host name from the server_name extension, lower-cased",
       hint="RFC 6066 §3: ServerNameList <2> holding name_type (1 byte, 0 = host_name) and HostName <2>")
def _(student, lab):
    server_name = need(student, "server_name")
    for name, data in fixtures().items():
        parsed = parse_client_hello(data)
        if parsed.server_name is None:
            continue
        same_as_proxy(attempt(server_name, parsed.extension(0)), parsed.server_name, name)


# --------------------------------------------------------------------------- step 5
@check(5, "parse_sni gives the name curl, openssl and Python asked for (None when there is none)",
       hint="steps 2-4 chained: the body, its extensions, the one of type 0")
def _(student, lab):
    parse_sni = need(student, "parse_sni")
    samples = {**fixtures(), "a TLS 1.2 hello with no extensions block": hello(no_extensions=True)}
    for name, data in samples.items():
        same_as_proxy(attempt(parse_sni, data), reference(data), name)


@check(5, "parse_sni reads the ClientHello your Python sends right now on a loopback socket",
       hint="the same parse as for the fixtures; this one asks for 'Lab.Example.Test'")
def _(student, lab):
    parse_sni = need(student, "parse_sni")
    for asked in ("Lab.Example.Test", None):
        data = capture_client_hello(asked)
        same_as_proxy(attempt(parse_sni, data), reference(data), f"Python's hello for {asked!r}")


@check(5, "parse_sni answers NEED_DATA for every prefix of a hello, fed as a socket would",
       hint="the proxy calls it after every recv(): only the whole hello may give a name")
def _(student, lab):
    parse_sni = need(student, "parse_sni")
    data = fixtures()["curl-tls13-h2.bin"]
    for cut in range(len(data)):
        same_as_proxy(attempt(parse_sni, data[:cut]), NEED_DATA, f"the first {cut} of {len(data)} bytes")
    same_as_proxy(attempt(parse_sni, data), reference(data), "all of it")


@check(5, "parse_sni refuses lengths that run past their container",
       hint="every length is attacker-controlled: step 1's read_vector must be the only way you slice")
def _(student, lab):
    parse_sni = need(student, "parse_sni")
    data = fixtures()["python-ssl.bin"]
    ext_at, sni_at = extensions_offset(data), sni_offset(data)
    cases = {
        "extensions length 0xffff": corrupt(data, ext_at, b"\xff\xff"),
        "server_name list length too long": corrupt(data, sni_at, u16(int.from_bytes(data[sni_at:sni_at + 2],
                                                                                     "big") + 1)),
        "host name length too long": corrupt(data, sni_at + 3, b"\x7f\xff"),
    }
    for case, bad in cases.items():
        same_as_proxy(attempt(parse_sni, bad), reference(bad), case)


# --------------------------------------------------------------------------- step 6
@check(6, "parse_sni applies the proxy's server-name policy (NUL, trailing dot, IP, two names ...)",
       hint="README step 6: the name is a routing key; refuse anything that is not one DNS host name "
            "(RFC 6066 §3, the 2009 null-prefix attack)")
def _(student, lab):
    parse_sni = need(student, "parse_sni")
    cases = {
        "an upper-case name": hello(sni(b"WWW.Example.TEST")),
        "an IDN as an A-label": hello(sni(b"xn--bcher-kva.example")),
        "a NUL inside the name": hello(sni(b"bank.example\x00.evil.example")),
        "a trailing dot": hello(sni(b"www.example.test.")),
        "an IPv4 literal": hello(sni(b"192.0.2.1")),
        "an empty host name": hello(sni(b"")),
        "an empty label": hello(sni(b"www..example.test")),
        "two host names in one list": hello(sni(b"a.example.test", b"b.example.test")),
        "name_type 1 (not host_name)": hello(sni(b"www.example.test", name_type=1)),
        "two server_name extensions": hello(sni(b"a.example.test"), sni(b"b.example.test")),
        "a space in the name": hello(sni(b"www example.test")),
    }
    note = None
    for case, data in cases.items():
        got = attempt(parse_sni, data)
        if case.startswith("name_type 1") and got is None:
            # RFC 6066 §3 leaves room for future name types ("MUST begin with a 16-bit length
            # field") and lets TLS treat names as opaque: skipping one is permitted.
            note = ("note: you skip a server name of another name_type, which RFC 6066 §3 leaves room for; the "
                    "proxy refuses it (stricter than the RFC: no other type was ever defined, and OpenSSL "
                    "refuses too)")
            continue
        same_as_proxy(got, reference(data), case)
    return note
