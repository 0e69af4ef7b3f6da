"""Exercise 5, reference solution: parse a ClientHello for its server name (SNI).

The student's file is ``lab/ex5_clienthello_sni/student.py``; this is the same file
with every TODO done.  Check it with ``python -m lab.check 5 --solution``.
"""

from __future__ import annotations

from pathlib import Path

from proxy.errors import TLSParseError
from proxy.tls.clienthello import NEED_DATA

HANDSHAKE = 22  # record content type (RFC 8446 §5.1)
CLIENT_HELLO = 1  # handshake message type (RFC 8446 §4)
SERVER_NAME = 0  # extension type (RFC 6066 §3)
HOST_NAME = 0  # NameType (RFC 6066 §3)
ALLOWED = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


# Step 1 ------------------------------------------------------------------------------
def read_vector(data: bytes, offset: int, length_size: int) -> tuple[bytes, int]:
    """The length-prefixed vector at ``offset`` (RFC 8446 §3.4) and the offset after it."""
    start = offset + length_size
    if start > len(data):
        raise TLSParseError(f"a {length_size}-byte length at offset {offset} runs past the end")
    length = int.from_bytes(data[offset:start], "big")
    end = start + length
    if end > len(data):
        raise TLSParseError(f"a vector of {length} bytes at offset {offset} runs past the end")
    return data[start:end], end


# Step 2 ------------------------------------------------------------------------------
def client_hello_body(data: bytes):
    """The ClientHello body from the client's first bytes; NEED_DATA if they are not all here."""
    if len(data) >= 1 and data[0] != HANDSHAKE:
        raise TLSParseError(f"record content type {data[0]}, not handshake (22)")
    if len(data) >= 2 and data[1] != 3:
        raise TLSParseError(f"record version major {data[1]}, not 3")
    if len(data) < 5:
        return NEED_DATA
    fragment_length = int.from_bytes(data[3:5], "big")
    fragment = data[5:5 + fragment_length]
    if fragment and fragment[0] != CLIENT_HELLO:
        raise TLSParseError(f"handshake type {fragment[0]}, not ClientHello (1)")
    if len(fragment) < fragment_length:
        return NEED_DATA
    body_length = int.from_bytes(fragment[1:4], "big")
    body = fragment[4:]
    if len(fragment) < 4 or len(body) < body_length:
        return NEED_DATA  # the hello continues in a next record (not handled here)
    if len(body) > body_length:
        raise TLSParseError("bytes after the ClientHello in its record")
    return body


# Step 3 ------------------------------------------------------------------------------
def extensions(body: bytes) -> list[tuple[int, bytes]]:
    """The (type, data) of each extension, in order, from a ClientHello body."""
    offset = 2 + 32  # legacy_version, random
    if offset > len(body):
        raise TLSParseError("ClientHello too short")
    _session_id, offset = read_vector(body, offset, 1)
    _cipher_suites, offset = read_vector(body, offset, 2)
    _compression_methods, offset = read_vector(body, offset, 1)
    if offset == len(body):
        return []  # a TLS 1.2 client may send no extensions at all
    block, offset = read_vector(body, offset, 2)
    if offset != len(body):
        raise TLSParseError("bytes after the extensions")
    found, at = [], 0
    while at < len(block):
        if at + 2 > len(block):
            raise TLSParseError("extension type runs past the end")
        ext_type = int.from_bytes(block[at:at + 2], "big")
        ext_data, at = read_vector(block, at + 2, 2)
        found.append((ext_type, ext_data))
    return found


# Step 4 ------------------------------------------------------------------------------
def server_name(extension_data: bytes) -> str:
    """The host name in a server_name extension's data, lower-cased."""
    name_list, end = read_vector(extension_data, 0, 2)
    if end != len(extension_data) or len(name_list) < 3:
        raise TLSParseError("malformed server_name extension")
    name_type = name_list[0]
    host_name, end = read_vector(name_list, 1, 2)
    if name_type != HOST_NAME or end != len(name_list):
        raise TLSParseError("server_name must hold exactly one host_name")
    return check_host_name(host_name)


# Step 5 ------------------------------------------------------------------------------
def parse_sni(data: bytes):
    """The server name a client asked for: a str, None (no SNI), or NEED_DATA."""
    body = client_hello_body(data)
    if body is NEED_DATA:
        return NEED_DATA
    names = [ext_data for ext_type, ext_data in extensions(body) if ext_type == SERVER_NAME]
    if len(names) > 1:
        raise TLSParseError("two server_name extensions")
    return server_name(names[0]) if names else None


# Step 6 ------------------------------------------------------------------------------
def check_host_name(host_name: bytes) -> str:
    """The routing key for ``host_name``, or TLSParseError if it is not a DNS host name."""
    if not host_name or any(chr(byte) not in ALLOWED for byte in host_name):
        raise TLSParseError(f"server_name {host_name!r} has a byte a host name cannot have")
    name = host_name.decode("ascii").lower()
    if name.endswith("."):
        raise TLSParseError("server_name ends with a dot (RFC 6066 §3)")
    labels = name.split(".")
    if any(not label for label in labels):
        raise TLSParseError("empty label in server_name")
    if labels[-1].isdigit():
        raise TLSParseError("server_name is an IP address (RFC 6066 §3)")
    return name


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
    demo()
