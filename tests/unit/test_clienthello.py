"""proxy.tls.clienthello: bytes in, ClientHello / NEED_DATA / TLSParseError out.

Real hellos (tests/fixtures/clienthello, captured from curl, openssl s_client and
Python's ssl), the RFC 8448 hello, hand-built hellos for every refusal, and
hypothesis fuzzing that holds the reader to its three possible outcomes.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy.errors import ProtocolError, TLSParseError
from proxy.tls.clienthello import (
    NEED_DATA,
    ClientHello,
    ClientHelloReader,
    cipher_suite_name,
    extension_name,
    parse_client_hello,
    unrecognized_name_alert,
)
from tests.tools import require_tool

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "clienthello"


def _load_capture_module():
    spec = importlib.util.spec_from_file_location("clienthello_capture", FIXTURES / "capture.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module           # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


capture = _load_capture_module()
FIXTURE_NAMES = sorted(capture.CLIENTS)
FIXTURE_BYTES = {name: (FIXTURES / name).read_bytes() for name in FIXTURE_NAMES}


# --------------------------------------------------------------------------- builders
def u16(value: int) -> bytes:
    return value.to_bytes(2, "big")


def vec(length_size: int, data: bytes) -> bytes:
    return len(data).to_bytes(length_size, "big") + data


def ext(ext_type: int, data: bytes) -> bytes:
    return u16(ext_type) + vec(2, data)


def sni_ext(*names: bytes, name_type: int = 0) -> bytes:
    return ext(0, vec(2, b"".join(bytes([name_type]) + vec(2, name) for name in names)))


def alpn_ext(*protocols: bytes) -> bytes:
    return ext(16, vec(2, b"".join(vec(1, p) for p in protocols)))


def versions_ext(*versions: int) -> bytes:
    return ext(43, vec(1, b"".join(u16(v) for v in versions)))


def hello_body(*, legacy_version: int = 0x0303, random: bytes = bytes(range(32)),
               session_id: bytes = b"", cipher_suites: bytes = b"\x13\x01\x13\x02",
               compression: bytes = b"\x00", extensions: bytes | None = b"") -> bytes:
    body = u16(legacy_version) + random + vec(1, session_id) + vec(2, cipher_suites) + vec(1, compression)
    return body if extensions is None else body + vec(2, extensions)


def handshake(body: bytes, msg_type: int = 1) -> bytes:
    return bytes([msg_type]) + len(body).to_bytes(3, "big") + body


def records(message: bytes, cuts: list[int] | tuple[int, ...] = (), *, content_type: int = 22,
            version: int = 0x0301) -> bytes:
    """Frame ``message`` into records, starting a new record at each offset in ``cuts``."""
    bounds = [0, *sorted(set(cuts)), len(message)]
    return b"".join(bytes([content_type]) + u16(version) + vec(2, message[a:b])
                    for a, b in zip(bounds, bounds[1:]) if b > a)


def hello(*extensions: bytes, **fields) -> bytes:
    """A complete one-record first flight with the given extensions."""
    return records(handshake(hello_body(extensions=b"".join(extensions), **fields)))


def drive(chunks) -> object:
    """Feed chunks one by one like a socket loop; the first non-NEED_DATA event, or NEED_DATA."""
    reader = ClientHelloReader()
    for chunk in chunks:
        reader.feed(chunk)
        event = reader.next_event()
        if event is not NEED_DATA:
            return event
    return NEED_DATA


def outcome(chunks) -> object:
    """Like ``drive`` but turns TLSParseError into a value; any other exception escapes."""
    try:
        return drive(chunks)
    except TLSParseError as error:
        return error


def segments(data: bytes, cuts) -> list[bytes]:
    bounds = [0, *sorted(set(c for c in cuts if 0 < c < len(data))), len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:])]


# --------------------------------------------------------------------------- real clients
@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_fixture_decodes_to_what_its_client_sent(name):
    expected = capture.CLIENTS[name]
    hello_ = parse_client_hello(FIXTURE_BYTES[name])
    assert hello_.server_name == expected.server_name
    assert hello_.alpn == expected.alpn
    assert hello_.offers_tls13 is expected.offers_tls13
    assert hello_.legacy_version == 0x0303            # RFC 8446 §4.1.2: frozen at TLS 1.2
    assert hello_.compression_methods == b"\x00"
    assert len(hello_.random) == 32
    if expected.offers_tls13:
        assert hello_.supported_versions[0] == 0x0304
        assert 0x1301 in hello_.cipher_suites and hello_.highest_version == 0x0304
    else:
        assert hello_.supported_versions == () and hello_.highest_version == 0x0303
    # The whole message is kept and is exactly the record's payload.
    assert hello_.message == FIXTURE_BYTES[name][5:]
    assert [t for t, _ in hello_.extensions] == list(hello_.extension_types)


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_every_proper_prefix_needs_data_and_every_split_gives_the_same_hello(name):
    data = FIXTURE_BYTES[name]
    whole = parse_client_hello(data)
    for end in range(len(data)):
        reader = ClientHelloReader()
        reader.feed(data[:end])
        assert reader.next_event() is NEED_DATA, f"prefix of {end} bytes"
    # One byte per TCP segment, asking for an event after each (the proxy's loop).
    reader = ClientHelloReader()
    for i in range(len(data)):
        assert reader.next_event() is NEED_DATA
        reader.feed(data[i:i + 1])
    assert reader.next_event() == whole
    assert reader.raw == data


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_hello_split_across_two_records_at_every_point(name):
    message = FIXTURE_BYTES[name][5:]
    whole = parse_client_hello(FIXTURE_BYTES[name])
    for cut in range(1, len(message)):
        assert parse_client_hello(records(message, [cut])) == whole, f"cut at {cut}"


def test_hello_in_one_byte_records_fed_one_byte_at_a_time():
    message = FIXTURE_BYTES["openssl-s_client.bin"][5:]
    data = records(message, range(1, len(message)))
    assert len(data) == 6 * len(message)
    assert drive([data[i:i + 1] for i in range(len(data))]) == parse_client_hello(
        FIXTURE_BYTES["openssl-s_client.bin"])


def test_rfc8448_client_hello():
    # RFC 8448 §3, "{client} construct a ClientHello handshake message" (196 octets).
    message = bytes.fromhex(
        "010000c00303cb34ecb1e78163ba1c38c6dacb196a6dffa21a8d9912ec18a2ef6283024dece700000613011303130201"
        "0000910000000b0009000006736572766572ff01000100000a00140012001d0017001800190100010101020103010400"
        "230000003300260024001d002099381de560e4bd43d23d8e435a7dbafeb3c06e51c13cae4d5413691e529aaf2c002b00"
        "03020304000d0020001e040305030603020308040805080604010501060102010402050206020202002d00020101001c"
        "00024001")
    assert len(message) == 196
    hello_ = parse_client_hello(records(message))
    assert hello_.server_name == "server"
    assert hello_.cipher_suites == (0x1301, 0x1303, 0x1302)
    assert hello_.cipher_suite_names() == ["TLS_AES_128_GCM_SHA256", "TLS_CHACHA20_POLY1305_SHA256",
                                           "TLS_AES_256_GCM_SHA384"]
    assert hello_.supported_versions == (0x0304,) and hello_.offers_tls13
    assert hello_.alpn == ()
    assert hello_.session_id == b""
    assert hello_.random.hex().startswith("cb34ecb1e78163ba")
    assert hello_.extension_names() == [
        "server_name", "renegotiation_info", "supported_groups", "session_ticket", "key_share",
        "supported_versions", "signature_algorithms", "psk_key_exchange_modes", "record_size_limit"]


# --------------------------------------------------------------------------- accepted edge cases
def test_server_name_is_lower_cased_and_may_hold_underscores():
    assert parse_client_hello(hello(sni_ext(b"WWW.Example.COM"))).server_name == "www.example.com"
    assert parse_client_hello(hello(sni_ext(b"a_b.example"))).server_name == "a_b.example"
    assert parse_client_hello(hello(sni_ext(b"xn--bcher-kva.example"))).server_name == "xn--bcher-kva.example"


def test_tls12_hello_without_any_extensions():
    # RFC 5246 §7.4.1.2: the extensions block may be absent altogether.
    hello_ = parse_client_hello(records(handshake(hello_body(extensions=None))))
    assert hello_.extensions == () and hello_.server_name is None
    assert not hello_.offers_tls13 and hello_.highest_version == 0x0303


def test_grease_values_are_named_and_skipped_for_the_highest_version():
    hello_ = parse_client_hello(hello(versions_ext(0x7A7A, 0x0304, 0x0303), ext(0x1A1A, b"")))
    assert hello_.highest_version == 0x0304
    assert extension_name(0x1A1A) == "GREASE(0x1a1a)" and cipher_suite_name(0xDADA) == "GREASE(0xdada)"
    assert extension_name(0x4444) == "extension_17476"


def test_a_hello_larger_than_one_record_spans_records():
    padding = ext(21, bytes(20000))                      # RFC 7685 padding, 20 kB
    message = handshake(hello_body(extensions=sni_ext(b"big.example") + padding))
    data = records(message, [16384])
    assert parse_client_hello(data).server_name == "big.example"
    with pytest.raises(TLSParseError, match="exceeds the limit"):
        reader = ClientHelloReader(max_size=16384)
        reader.feed(data[:9])                             # only the two headers are needed
        reader.next_event()


def test_bytes_after_the_hello_records_are_kept_in_raw_but_not_parsed():
    data = hello(sni_ext(b"a.example"))
    change_cipher_spec = bytes.fromhex("140303000101")
    reader = ClientHelloReader()
    reader.feed(data + change_cipher_spec)
    assert reader.next_event().server_name == "a.example"
    reader.feed(b"early")                                  # after the hello: still recorded
    assert reader.raw == data + change_cipher_spec + b"early"
    assert reader.next_event().server_name == "a.example"


def test_unrecognized_name_alert_record():
    # RFC 6066 §3: fatal(2) unrecognized_name(112) in a plaintext alert record (type 21).
    assert unrecognized_name_alert() == bytes.fromhex("15030300020270")


def test_describe_names_what_a_passive_observer_sees():
    text = parse_client_hello(FIXTURE_BYTES["curl-tls13-h2.bin"]).describe()
    assert "curl.example" in text and "h2, http/1.1" in text and "TLS 1.3" in text


# --------------------------------------------------------------------------- refusals
GOOD_BODY = hello_body(extensions=sni_ext(b"ok.example"))
CORRUPT = [
    # id, bytes, what the message says, alert
    ("plain-http", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "content type 71", 10),
    ("sslv2-hello", bytes.fromhex("802b0100020012"), "content type 128", 10),
    ("alert-record-first", bytes.fromhex("15030100020228"), "content type 21", 10),
    ("record-version-not-tls", b"\x16\x04\x00" + vec(2, handshake(GOOD_BODY)), "not TLS", 50),
    ("record-overflow", b"\x16\x03\x01\x40\x01" + bytes(16385), "exceeds 16384", 22),
    ("zero-length-record", b"\x16\x03\x01\x00\x00" + records(handshake(GOOD_BODY)), "zero-length", 10),
    ("server-hello-type", records(handshake(GOOD_BODY, msg_type=2)), "not ClientHello", 10),
    ("oversized-hello", records(b"\x01\x01\x00\x01" + bytes(100)), "exceeds the limit", 50),
    ("interleaved-app-data", records(handshake(GOOD_BODY)[:20]) + b"\x17\x03\x03\x00\x01x"
     + records(handshake(GOOD_BODY)[20:]), "content type 23", 10),
    ("trailing-bytes-in-record", records(handshake(GOOD_BODY) + b"\x00"), "follow the ClientHello", 10),
    ("hello-too-short", records(handshake(b"\x03\x03" + bytes(10))), "needs 32 more", 50),
    ("legacy-version-not-tls", records(handshake(hello_body(legacy_version=0x0200))), "not TLS", 70),
    ("session-id-33", records(handshake(hello_body(session_id=bytes(33)))), "legacy_session_id", 50),
    ("odd-cipher-suites", records(handshake(hello_body(cipher_suites=b"\x13\x01\x13"))), "multiple of 2", 50),
    ("no-cipher-suites", records(handshake(hello_body(cipher_suites=b""))), "cipher_suites length 0", 50),
    ("no-compression", records(handshake(hello_body(compression=b""))), "compression", 50),
    ("extensions-overrun", records(handshake(hello_body(extensions=None) + b"\x00\x10\x00\x00")),
     "needs 16 more", 50),
    ("extension-data-overrun", records(handshake(hello_body(extensions=None) + vec(2, b"\x00\x00\x00\x09ab"))),
     "needs 9 more", 50),
    ("bytes-after-extensions", records(handshake(hello_body(extensions=b"") + b"\x00")), "trailing", 50),
    ("duplicate-server-name", hello(sni_ext(b"a.example"), sni_ext(b"b.example")), "appears twice", 47),
    ("duplicate-unknown-extension", hello(ext(0x4444, b""), ext(0x4444, b"x")), "appears twice", 47),
    ("psk-not-last", hello(ext(41, b"\x00"), sni_ext(b"a.example")), "pre_shared_key", 47),
    ("sni-trailing-dot", hello(sni_ext(b"admin.example.")), "ends with a dot", 47),
    ("sni-nul-byte", hello(sni_ext(b"bank.example\x00.evil.example")), "byte 0x00", 47),
    ("sni-utf8", hello(sni_ext("bücher.example".encode())), "byte 0xc3", 47),
    ("sni-space", hello(sni_ext(b"a b.example")), "byte 0x20", 47),
    ("sni-ipv4-literal", hello(sni_ext(b"127.0.0.1")), "IP address", 47),
    ("sni-empty-label", hello(sni_ext(b"a..example")), "label", 47),
    ("sni-leading-dot", hello(sni_ext(b".example")), "label", 47),
    ("sni-long-label", hello(sni_ext(b"a" * 64 + b".example")), "label", 47),
    ("sni-two-names", hello(sni_ext(b"a.example", b"b.example")), "exactly one", 47),
    ("sni-other-name-type", hello(sni_ext(b"a.example", name_type=1)), "exactly one", 47),
    ("sni-empty-host-name", hello(sni_ext(b"")), "HostName length 0", 50),
    ("sni-empty-list", hello(ext(0, b"\x00\x00")), "server_name_list length 0", 50),
    ("sni-empty-extension", hello(ext(0, b"")), "needs 2 more", 50),
    ("sni-list-overrun", hello(ext(0, b"\x00\x09\x00\x00\x01a")), "needs 9 more", 50),
    ("alpn-empty-protocol", hello(alpn_ext(b"h2", b"")), "ProtocolName length 0", 50),
    ("alpn-trailing-byte", hello(ext(16, vec(2, vec(1, b"h2")) + b"\x00")), "trailing", 50),
    ("versions-odd-length", hello(ext(43, b"\x03\x03\x04\x03")), "multiple of 2", 50),
    ("versions-empty", hello(ext(43, b"\x00")), "versions length 0", 50),
]


@pytest.mark.parametrize("data,message,alert", [c[1:] for c in CORRUPT], ids=[c[0] for c in CORRUPT])
def test_malformed_first_flight_is_refused_with_a_typed_error(data, message, alert):
    with pytest.raises(TLSParseError, match=message) as whole:
        parse_client_hello(data)
    assert whole.value.alert == alert
    assert isinstance(whole.value, ProtocolError) and whole.value.close
    # Byte by byte, the same refusal (never a ClientHello first), and it is sticky.
    reader = ClientHelloReader()
    with pytest.raises(TLSParseError, match=message):
        for i in range(len(data)):
            reader.feed(data[i:i + 1])
            assert reader.next_event() is NEED_DATA
    with pytest.raises(TLSParseError, match=message):
        reader.next_event()


def test_refusal_comes_as_early_as_the_bytes_allow():
    # Plain HTTP fails on its first byte; a ServerHello on its sixth; an announced
    # 16 MiB hello on its ninth, long before 16 MiB are buffered.
    for data, needed in [(b"G", 1), (b"\x16\x03\x01\x00\x10\x02", 6), (b"\x16\x03\x01\x40\x00\x01\xff\xff\xff", 9)]:
        reader = ClientHelloReader()
        reader.feed(data[:needed - 1])
        assert reader.next_event() is NEED_DATA
        reader.feed(data[needed - 1:needed])
        with pytest.raises(TLSParseError):
            reader.next_event()


def test_eof_before_the_hello_is_complete_is_an_error_not_a_wait():
    for data in (b"", FIXTURE_BYTES["python-ssl.bin"][:100]):
        reader = ClientHelloReader()
        reader.feed(data)
        assert reader.next_event() is NEED_DATA
        reader.feed_eof()
        with pytest.raises(TLSParseError, match=f"closed the connection after {len(data)} bytes"):
            reader.next_event()
        with pytest.raises(RuntimeError):
            reader.feed(b"more")
    reader = ClientHelloReader()                       # EOF after a whole hello changes nothing
    reader.feed(FIXTURE_BYTES["python-ssl.bin"])
    reader.feed_eof()
    assert reader.next_event().server_name == "python.example"


def test_parse_client_hello_refuses_an_incomplete_flight():
    with pytest.raises(TLSParseError, match="incomplete"):
        parse_client_hello(FIXTURE_BYTES["python-ssl.bin"][:-1])


# --------------------------------------------------------------------------- property tests
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
fixture_data = st.sampled_from([FIXTURE_BYTES[name] for name in FIXTURE_NAMES])


def assert_allowed(result, data: bytes) -> None:
    assert result is NEED_DATA or isinstance(result, (ClientHello, TLSParseError)), repr(result)


@FUZZ
@given(st.binary(max_size=600), st.lists(st.integers(0, 600), max_size=8))
def test_random_bytes_give_only_the_three_outcomes(data, cuts):
    assert_allowed(outcome(segments(data, cuts)), data)


@FUZZ
@given(st.binary(max_size=400))
def test_random_bytes_behind_a_handshake_header_give_only_the_three_outcomes(body):
    data = records(handshake(body))
    assert_allowed(outcome([data]), data)


@FUZZ
@given(fixture_data, st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=6),
       st.lists(st.integers(0, 600), max_size=6))
def test_mutated_real_hellos_give_only_the_three_outcomes(data, flips, cuts):
    mutated = bytearray(data)
    for position, value in flips:
        mutated[position % len(mutated)] = value
    result = outcome(segments(bytes(mutated), cuts))
    assert_allowed(result, bytes(mutated))
    # Splitting never changes the verdict.
    whole = outcome([bytes(mutated)])
    assert type(result) is type(whole) and (not isinstance(whole, ClientHello) or whole == result)


@FUZZ
@given(fixture_data, st.integers(0, 10**6), st.integers(1, 40), st.binary(max_size=40))
def test_spliced_real_hellos_give_only_the_three_outcomes(data, position, delete, insert):
    position %= len(data)
    mutated = data[:position] + insert + data[position + delete:]
    assert_allowed(outcome([mutated]), mutated)


@FUZZ
@given(fixture_data, st.lists(st.integers(1, 600), max_size=12), st.lists(st.integers(1, 600), max_size=12))
def test_any_record_and_segment_split_gives_the_same_hello(data, record_cuts, tcp_cuts):
    message = data[5:]
    reframed = records(message, [c for c in record_cuts if c < len(message)])
    assert drive(segments(reframed, tcp_cuts)) == parse_client_hello(data)


label = st.text("abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=20)
host_names = st.lists(label, min_size=1, max_size=4).map(".".join).filter(lambda n: not n.split(".")[-1].isdigit())
protocols = st.lists(st.binary(min_size=1, max_size=12), max_size=4)


@FUZZ
@given(host_names, protocols, st.lists(st.sampled_from([0x0304, 0x0303, 0x0302, 0x2A2A]), min_size=1, max_size=4))
def test_built_hellos_round_trip(host_name, alpn, versions):
    extensions = [sni_ext(host_name.encode()), versions_ext(*versions)]
    if alpn:
        extensions.append(alpn_ext(*alpn))
    hello_ = parse_client_hello(hello(*extensions))
    assert hello_.server_name == host_name
    assert hello_.alpn == tuple(p.decode("latin-1") for p in alpn)
    assert hello_.supported_versions == tuple(versions)
    assert hello_.offers_tls13 is (0x0304 in versions)


# --------------------------------------------------------------------------- live capture
@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_live_capture_from_the_real_client(name):
    """The capture script still works with today's tools, and the parser still reads them."""
    client = capture.CLIENTS[name]
    if client.tool != "python":
        require_tool(client.tool)
    data = capture.capture_first_flight(client.run)
    hello_ = parse_client_hello(data)
    assert (hello_.server_name, hello_.alpn, hello_.offers_tls13) == (
        client.server_name, client.alpn, client.offers_tls13)
