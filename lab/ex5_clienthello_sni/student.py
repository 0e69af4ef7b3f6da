"""Exercise 5: parse a ClientHello for its server name (SNI).  This is your file.

Run it:             .venv/bin/python lab/ex5_clienthello_sni/student.py
Check your work:    .venv/bin/python -m lab.check 5        (or: make check LAB=5)

Read README.md in this folder first.  Write the byte parsing yourself (that is the
exercise); ``TLSParseError`` and ``NEED_DATA`` come from the ``proxy`` package, and
``proxy/tls/clienthello.py`` is the version to compare with when you are done.
"""

from __future__ import annotations

from pathlib import Path

from proxy.errors import TLSParseError  # noqa: F401  (you will need it)
from proxy.tls.clienthello import NEED_DATA  # noqa: F401

HANDSHAKE = 22  # record content type (RFC 8446 §5.1)
CLIENT_HELLO = 1  # handshake message type (RFC 8446 §4)
SERVER_NAME = 0  # extension type (RFC 6066 §3)
HOST_NAME = 0  # NameType (RFC 6066 §3)


# Step 1 ------------------------------------------------------------------------------
def read_vector(data: bytes, offset: int, length_size: int) -> tuple[bytes, int]:
    """The length-prefixed vector at ``offset`` (RFC 8446 §3.4) and the offset after it.

    ``read_vector(b"\\x03abcXYZ", 0, 1) == (b"abc", 4)``.  Raise TLSParseError if the
    length field or the vector runs past the end of ``data``.
    """
    # TODO step 1
    raise NotImplementedError("step 1: read_vector")


# Step 2 ------------------------------------------------------------------------------
def client_hello_body(data: bytes):
    """The ClientHello body from the client's first bytes; NEED_DATA if they are not all here.

    ``data`` starts with a record header (type 22, version 0x03 0x0N, 2-byte length),
    then the handshake header (type 1, 3-byte length), then the body.  Raise
    TLSParseError as soon as a byte that is there is wrong; return NEED_DATA while
    the bytes so far are a valid beginning.  (One record is enough here: see the
    README for hellos that span records.)
    """
    # TODO step 2
    raise NotImplementedError("step 2: client_hello_body")


# Step 3 ------------------------------------------------------------------------------
def extensions(body: bytes) -> list[tuple[int, bytes]]:
    """The (type, data) of each extension, in order, from a ClientHello body.

    Skip legacy_version (2 bytes) and random (32), then the vectors session id <1>,
    cipher suites <2>, compression methods <1>; then read the extensions block <2>.
    No extensions block at all is allowed (an old TLS 1.2 client): return [].
    """
    # TODO step 3
    raise NotImplementedError("step 3: extensions")


# Step 4 ------------------------------------------------------------------------------
def server_name(extension_data: bytes) -> str:
    """The host name in a server_name extension's data, lower-cased.

    ServerNameList <2> = name_type (1 byte, 0 = host_name) + HostName <2>.  Exactly
    one entry, of type host_name; hand the HostName bytes to check_host_name (step 6).
    """
    # TODO step 4
    raise NotImplementedError("step 4: server_name")


# Step 5 ------------------------------------------------------------------------------
def parse_sni(data: bytes):
    """The server name a client asked for: a str, None (no SNI), or NEED_DATA.

    Raises TLSParseError for bytes that can never become a ClientHello.
    """
    # TODO step 5: client_hello_body -> extensions -> server_name
    raise NotImplementedError("step 5: parse_sni")


# Step 6 ------------------------------------------------------------------------------
def check_host_name(host_name: bytes) -> str:
    """The routing key for ``host_name``, or TLSParseError if it is not a DNS host name.

    Until step 6 this only decodes and lower-cases.
    """
    # TODO step 6: refuse bytes other than letters, digits, "-", "_" and "."; a trailing
    # dot; empty labels; an IP address (RFC 6066 §3).
    return host_name.decode("latin-1").lower()


def demo() -> None:
    """Each step on the ClientHello Python sent for python-ssl.bin, then every fixture."""
    fixtures = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "clienthello"
    data = (fixtures / "python-ssl.bin").read_bytes()
    print("step 1:", read_vector(b"\x03abcXYZ", 0, 1))
    body = client_hello_body(data)
    print(f"step 2: a {len(body)}-byte body; the first 9 bytes alone give {client_hello_body(data[:9])!r}")
    found = extensions(body)
    print("step 3: extension types", [ext_type for ext_type, _ in found])
    print("step 4:", server_name(dict(found)[SERVER_NAME]))
    for path in sorted(fixtures.glob("*.bin")):
        print(f"step 5: {path.name:24} server_name={parse_sni(path.read_bytes())!r}")
    print("step 6:", check_host_name(b"WWW.Example.TEST"), "(try b'a.example.\\x00' and b'192.0.2.1')")


if __name__ == "__main__":
    try:
        demo()
    except NotImplementedError as todo:
        print(f"... not written yet: {todo}.  Then run: python -m lab.check 5")
