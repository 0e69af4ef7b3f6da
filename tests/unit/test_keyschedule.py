"""proxy.tls.keyschedule: HKDF, the TLS 1.3 key schedule, record protection, key logs.

Checked three ways: published vectors (RFC 5869 for HKDF; RFC 8448 §3, the "Simple
1-RTT Handshake", for every secret, key and IV and for the records themselves), round
trips and tampering, and a live loopback TLS 1.3 connection between Python ssl
endpoints recorded by a byte-copying relay (``course.capture.recorder``) and decrypted
with the server's key log, once per cipher suite.
"""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import sys
import threading

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand
from hypothesis import given, settings
from hypothesis import strategies as st

from course.capture.recorder import RecordingRelay
from proxy.errors import TLSDecryptError, TLSParseError
from proxy.tls.keyschedule import (
    CIPHER_SUITES,
    TLS_AES_128_GCM_SHA256,
    TLS_AES_256_GCM_SHA384,
    TLS_CHACHA20_POLY1305_SHA256,
    RecordDecryptor,
    TrafficKeys,
    cipher_suite,
    decrypt_connection,
    decrypt_record,
    decrypt_tls13_stream,
    derive_secret,
    encrypt_record,
    finished_verify_data,
    hkdf_expand,
    hkdf_expand_label,
    hkdf_extract,
    key_schedule,
    next_traffic_secret,
    parse_key_log,
    record_nonce,
    server_hello_cipher_suite,
    traffic_keys,
    transcript_hash,
)
from proxy.tls.records import HandshakeReassembler, Record, iter_records
from tests.fakes import self_signed_localhost


def h(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", "").replace("\n", ""))


SHA256 = TLS_AES_128_GCM_SHA256


# --------------------------------------------------------------------------- RFC 5869
@pytest.mark.parametrize("ikm,salt,info,length,prk,okm", [
    # RFC 5869 A.1 (basic, SHA-256)
    ("0b" * 22, "000102030405060708090a0b0c", "f0f1f2f3f4f5f6f7f8f9", 42,
     "077709362c2e32df0ddc3f0dc47bba6390b6c73bb50f9c3122ec844ad7c2b3e5",
     "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"),
    # RFC 5869 A.3 (zero-length salt and info, SHA-256)
    ("0b" * 22, "", "", 42,
     "19ef24a32c717b167f33a91d6f648bdf96596776afdb6377ac434c1c293ccb04",
     "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8"),
], ids=["A.1", "A.3"])
def test_hkdf_rfc5869_vectors(ikm, salt, info, length, prk, okm):
    assert hkdf_extract(h(salt), h(ikm), SHA256) == h(prk)
    assert hkdf_expand(h(prk), h(info), length, SHA256) == h(okm)


@settings(max_examples=50, deadline=None)
@given(st.binary(min_size=48, max_size=48), st.binary(max_size=40), st.integers(1, 255))
def test_hkdf_expand_matches_cryptography_for_sha384(prk, info, length):
    reference = HKDFExpand(hashes.SHA384(), length, info).derive(prk)
    assert hkdf_expand(prk, info, length, TLS_AES_256_GCM_SHA384) == reference


def test_hkdf_expand_label_builds_the_rfc8448_info():
    # RFC 8448 §3: 'key info (13 octets): 00 10 09 74 6c 73 31 33 20 6b 65 79 00', i.e.
    # HKDF-Expand-Label(secret, "key", "", 16) == HKDF-Expand(secret, that info, 16).
    secret = h(RFC8448["s_hs_traffic"])
    assert hkdf_expand_label(secret, "key", b"", 16, SHA256) == hkdf_expand(
        secret, h("00 10 09 74 6c 73 31 33 20 6b 65 79 00"), 16, SHA256)


# --------------------------------------------------------------------------- RFC 8448 §3
# Values from RFC 8448 §3 (Simple 1-RTT Handshake, TLS_AES_128_GCM_SHA256, x25519).
# Each one is also checked against the others below: the transcript hashes against
# the messages, the keys against records that only open with the right key.
RFC8448 = {
    "client_private": "49 af 42 ba 7f 79 94 85 2d 71 3e f2 78 4b cb ca a7 91 1d e2 6a dc 56 42 cb 63 45 40 e7 ea 50 05",
    "server_public": "c9 82 88 76 11 20 95 fe 66 76 2b db f7 c6 72 e1 56 d6 cc 25 3b 83 3d f1 dd 69 b1 b0 4e 75 1f 0f",
    "shared_secret": "8b d4 05 4f b5 5b 9d 63 fd fb ac f9 f0 4b 9f 0d 35 e6 d6 3f 53 75 63 ef d4 62 72 90 0f 89 49 2d",
    "early_secret": "33 ad 0a 1c 60 7e c0 3b 09 e6 cd 98 93 68 0c e2 10 ad f3 00 aa 1f 26 60 e1 b2 2e 10 f1 70 f9 2a",
    "derived_for_handshake":
        "6f 26 15 a1 08 c7 02 c5 67 8f 54 fc 9d ba b6 97 16 c0 76 18 9c 48 25 0c eb ea c3 57 6c 36 11 ba",
    "handshake_secret": "1d c8 26 e9 36 06 aa 6f dc 0a ad c1 2f 74 1b 01 04 6a a6 b9 9f 69 1e d2 21 a9 f0 ca 04 3f be ac",
    "hello_hash": "86 0c 06 ed c0 78 58 ee 8e 78 f0 e7 42 8c 58 ed d6 b4 3f 2c a3 e6 e9 5f 02 ed 06 3c f0 e1 ca d8",
    "c_hs_traffic": "b3 ed db 12 6e 06 7f 35 a7 80 b3 ab f4 5e 2d 8f 3b 1a 95 07 38 f5 2e 96 00 74 6a 0e 27 a5 5a 21",
    "s_hs_traffic": "b6 7b 7d 69 0c c1 6c 4e 75 e5 42 13 cb 2d 37 b4 e9 c9 12 bc de d9 10 5d 42 be fd 59 d3 91 ad 38",
    "derived_for_master":
        "43 de 77 e0 c7 77 13 85 9a 94 4d b9 db 25 90 b5 31 90 a6 5b 3e e2 e4 f1 2d d7 a0 bb 7c e2 54 b4",
    "master_secret": "18 df 06 84 3d 13 a0 8b f2 a4 49 84 4c 5f 8a 47 80 01 bc 4d 4c 62 79 84 d5 a4 1d a8 d0 40 29 19",
    "server_finished_hash":
        "96 08 10 2a 0f 1c cc 6d b6 25 0b 7b 7e 41 7b 1a 00 0e aa da 3d aa e4 77 7a 76 86 c9 ff 83 df 13",
    "c_ap_traffic": "9e 40 64 6c e7 9a 7f 9d c0 5a f8 88 9b ce 65 52 87 5a fa 0b 06 df 00 87 f7 92 eb b7 c1 75 04 a5",
    "s_ap_traffic": "a1 1a f9 f0 55 31 f8 56 ad 47 11 6b 45 a9 50 32 82 04 b4 f4 4b fb 6b 3a 4b 4f 1f 3f cb 63 16 43",
    "exporter": "fe 22 f8 81 17 6e da 18 eb 8f 44 52 9e 67 92 c5 0c 9a 3f 89 45 2f 68 d8 ae 31 1b 43 09 d3 cf 50",
    "resumption": "7d f2 35 f2 03 1d 2a 05 12 87 d0 2b 02 41 b0 bf da f8 6c c8 56 23 1f 2d 5a ba 46 c4 34 ec 19 6c",
    "s_hs_key": "3f ce 51 60 09 c2 17 27 d0 f2 e4 e8 6e e4 03 bc",
    "s_hs_iv": "5d 31 3e b2 67 12 76 ee 13 00 0b 30",
    "c_hs_key": "db fa a6 93 d1 76 2c 5b 66 6a f5 d9 50 25 8d 01",
    "c_hs_iv": "5b d3 c7 1b 83 6e 0b 76 bb 73 26 5f",
    "s_ap_key": "9f 02 28 3b 6c 9c 07 ef c2 6b b9 f2 ac 92 e3 56",
    "s_ap_iv": "cf 78 2b 88 dd 83 54 9a ad f1 e9 84",
    "c_ap_key": "17 42 2d da 59 6e d5 d9 ac d8 90 e3 c6 3f 50 51",
    "c_ap_iv": "5b 78 92 3d ee 08 57 90 33 e5 23 d9",
}
RFC8448_CLIENT_HELLO = h(
    "010000c00303cb34ecb1e78163ba1c38c6dacb196a6dffa21a8d9912ec18a2ef6283024dece700000613011303130201"
    "0000910000000b0009000006736572766572ff01000100000a00140012001d0017001800190100010101020103010400"
    "230000003300260024001d002099381de560e4bd43d23d8e435a7dbafeb3c06e51c13cae4d5413691e529aaf2c002b00"
    "03020304000d0020001e040305030603020308040805080604010501060102010402050206020202002d00020101001c"
    "00024001")
RFC8448_SERVER_HELLO_RECORD = h(
    "160303005a020000560303a6af06a4121860dc5e6e60249cd34c95930c8ac5cb1434dac155772ed3e2692800130100002e"
    "00330024001d0020c9828876112095fe66762bdbf7c672e156d6cc253b833df1dd69b1b04e751f0f002b00020304")
RFC8448_SERVER_FLIGHT_RECORD = h("""
    17030302a2d1ff334a56f5bff6594a07cc87b580233f500f45e489e7f33af35edf7869fcf40aa40aa2b8ea73f848a7ca
    07612ef9f945cb960b4068905123ea78b111b429ba9191cd05d2a389280f526134aadc7fc78c4b729df828b5ecf7b13b
    d9aefb0e57f271585b8ea9bb355c7c79020716cfb9b1183ef3ab20e37d57a6b9d7477609aee6e122a4cf51427325250c
    7d0e509289444c9b3a648f1d71035d2ed65b0e3cdd0cbae8bf2d0b227812cbb360987255cc744110c453baa4fcd61092
    8d809810e4b7ed1a8fd991f06aa6248204797e36a6a73b70a2559c09ead686945ba246ab66e5edd8044b4c6de3fcf2a8
    9441ac66272fd8fb330ef8190579b3684596c960bd596eea520a56a8d650f563aad27409960dca63d3e688611ea5e22f
    4415cf9538d51a200c27034272968a264ed6540c84838d89f72c24461aad6d26f59ecaba9acbbb317b66d902f4f292a3
    6ac1b639c637ce343117b659622245317b49eeda0c6258f100d7d961ffb138647e92ea330faeea6dfa31c7a84dc3bd7e
    1b7a6c7178af36879018e3f252107f243d243dc7339d5684c8b0378bf30244da8c87c843f5e56eb4c5e8280a2b48052c
    f93b16499a66db7cca71e4599426f7d461e66f99882bd89fc50800becca62d6c74116dbd2972fda1fa80f85df881edbe
    5a37668936b335583b599186dc5c6918a396fa48a181d6b6fa4f9d62d513afbb992f2b992f67f8afe67f76913fa388cb
    5630c8ca01e0c65d11c66a1e2ac4c85977b7c7a6999bbf10dc35ae69f5515614636c0b9b68c19ed2e31c0b3b66763038
    ebba42f3b38edc0399f3a9f23faa63978c317fc9fa66a73f60f0504de93b5b845e275592c12335ee340bbc4fddd50278
    4016e4b3be7ef04dda49f4b440a30cb5d2af939828fd4ae3794e44f94df5a631ede42c1719bfdabf0253fe5175be898e
    750edc53370d2b""")
RFC8448_CLIENT_FINISHED_RECORD = h(
    "170303003575ec4dc238cce60b298044a71e219c56cc77b0517fe9b93c7a4bfc44d87f38f80338ac98fc46deb384bd1c"
    "aeacab6867d726c40546")
RFC8448_NEW_SESSION_TICKET_RECORD = h("""
    17030300de3a6b8f90414a97d6959c3487680de5134a2b240e6cffac116e95d41d6af8f6b580dcf3d11d63c758db289a
    015940252f55713e061dc13e078891a38efbcf5753ad8ef170ad3c7353d16d9da773b9ca7f2b9fa1b6c0d4a3d03f75e0
    9c30ba1e62972ac46f75f7b981be63439b2999ce13064615139891d5
    e4c5b406f16e3fc181a77ca475840025db2f0a77
    f81b5ab05b94c01346755f69232c86519d86cbeeac87aac347d143f9605d64f650db4d023e70e952ca49fe5137121c74
    bc2697687e248746d6df353005f3bce18696129c8153556b3b6c6779b37bf15985684f""")
RFC8448_CLIENT_APPLICATION_RECORD = h(
    "1703030043a23f7054b62c94d0affafe8228ba55cbefacea42f914aa66bcab3f2b9819a8a5b46b395bd54a9a20441e2b"
    "62974e1f5a6292a2977014bd1e3deae63aeebb21694915e4")
RFC8448_SERVER_APPLICATION_RECORD = h(
    "17030300432e937e11ef4ac740e538ad36005fc4a46932fc3225d05f82aa1b36e30efaf97d90e6dffc602dcb501a59a8"
    "fcc49c4bf2e5f0a21c0047c2abf332540dd032e167c2955d")
RFC8448_CLIENT_ALERT_RECORD = h("1703030013c9872760655666b74d7ff1153efd6db6d0b0e3")
RFC8448_SERVER_ALERT_RECORD = h("1703030013b58fd67166ebf599d24720cfbe7efa7a8864a9")


def one_record(data: bytes) -> Record:
    [record] = list(iter_records(data))
    return record


def test_rfc8448_shared_secret_and_transcript():
    client = X25519PrivateKey.from_private_bytes(h(RFC8448["client_private"]))
    shared = client.exchange(X25519PublicKey.from_public_bytes(h(RFC8448["server_public"])))
    assert shared == h(RFC8448["shared_secret"])
    server_hello = one_record(RFC8448_SERVER_HELLO_RECORD).fragment
    assert transcript_hash(SHA256, RFC8448_CLIENT_HELLO, server_hello) == h(RFC8448["hello_hash"])
    assert server_hello_cipher_suite(RFC8448_SERVER_HELLO_RECORD) == 0x1301


def test_rfc8448_key_schedule_step_by_step():
    schedule = key_schedule(SHA256, h(RFC8448["shared_secret"]), h(RFC8448["hello_hash"]),
                            h(RFC8448["server_finished_hash"]))
    expected = {
        "early_secret": "early_secret", "derived_for_handshake": "derived_for_handshake",
        "handshake_secret": "handshake_secret", "client_handshake_traffic_secret": "c_hs_traffic",
        "server_handshake_traffic_secret": "s_hs_traffic", "derived_for_master": "derived_for_master",
        "master_secret": "master_secret", "client_application_traffic_secret_0": "c_ap_traffic",
        "server_application_traffic_secret_0": "s_ap_traffic", "exporter_master_secret": "exporter",
    }
    assert [name for name, _ in schedule.steps()] == list(expected)
    for name, key in expected.items():
        assert getattr(schedule, name) == h(RFC8448[key]), name
    assert "master_secret" in schedule.format() and RFC8448["master_secret"].replace(" ", "") in schedule.format()


@pytest.mark.parametrize("secret,key,iv", [
    ("s_hs_traffic", "s_hs_key", "s_hs_iv"), ("c_hs_traffic", "c_hs_key", "c_hs_iv"),
    ("s_ap_traffic", "s_ap_key", "s_ap_iv"), ("c_ap_traffic", "c_ap_key", "c_ap_iv"),
])
def test_rfc8448_traffic_keys(secret, key, iv):
    assert traffic_keys(SHA256, h(RFC8448[secret])) == TrafficKeys(h(RFC8448[key]), h(RFC8448[iv]))


def test_rfc8448_whole_conversation_decrypts_and_verifies():
    server_hs = RecordDecryptor(SHA256, h(RFC8448["s_hs_traffic"]))
    client_hs = RecordDecryptor(SHA256, h(RFC8448["c_hs_traffic"]))
    server_ap = RecordDecryptor(SHA256, h(RFC8448["s_ap_traffic"]))
    client_ap = RecordDecryptor(SHA256, h(RFC8448["c_ap_traffic"]))
    server_hello = one_record(RFC8448_SERVER_HELLO_RECORD).fragment

    # The server's one protected handshake record: EE, Certificate, CertificateVerify, Finished.
    flight = server_hs.decrypt(one_record(RFC8448_SERVER_FLIGHT_RECORD))
    assert (flight.content_type, len(flight.content), flight.padding_length) == (22, 657, 0)
    messages = HandshakeReassembler().feed(flight.content)
    assert [m[0] for m in messages] == [8, 11, 15, 20]
    encrypted_extensions, certificate, certificate_verify, server_finished = messages
    # The transcript through the server Finished is the hash the RFC gives for "c ap traffic".
    assert transcript_hash(SHA256, RFC8448_CLIENT_HELLO, server_hello, *messages) == h(
        RFC8448["server_finished_hash"])
    # The server's Finished is the HMAC our key schedule predicts (RFC 8446 §4.4.4).
    before_finished = transcript_hash(SHA256, RFC8448_CLIENT_HELLO, server_hello, encrypted_extensions,
                                      certificate, certificate_verify)
    assert server_finished[4:] == finished_verify_data(SHA256, h(RFC8448["s_hs_traffic"]), before_finished)

    client_finished_inner = client_hs.decrypt(one_record(RFC8448_CLIENT_FINISHED_RECORD))
    client_finished = client_finished_inner.content
    assert client_finished[0] == 20 and client_finished_inner.content_type == 22
    assert client_finished[4:] == finished_verify_data(SHA256, h(RFC8448["c_hs_traffic"]),
                                                       h(RFC8448["server_finished_hash"]))
    client_finished_hash = transcript_hash(SHA256, RFC8448_CLIENT_HELLO, server_hello, *messages, client_finished)
    schedule = key_schedule(SHA256, h(RFC8448["shared_secret"]), h(RFC8448["hello_hash"]),
                            h(RFC8448["server_finished_hash"]), client_finished_hash=client_finished_hash)
    assert schedule.resumption_master_secret == h(RFC8448["resumption"])

    ticket = server_ap.decrypt(one_record(RFC8448_NEW_SESSION_TICKET_RECORD))
    assert ticket.content_type == 22 and ticket.content[0] == 4          # NewSessionTicket
    # Both sides then send 50 bytes 00..31 and a close_notify alert.
    client_data = client_ap.decrypt(one_record(RFC8448_CLIENT_APPLICATION_RECORD))
    server_data = server_ap.decrypt(one_record(RFC8448_SERVER_APPLICATION_RECORD))
    assert client_data.content_type == server_data.content_type == 23
    assert client_data.content == server_data.content == bytes(range(50))
    assert client_ap.decrypt(one_record(RFC8448_CLIENT_ALERT_RECORD)).content == b"\x01\x00"
    server_alert = server_ap.decrypt(one_record(RFC8448_SERVER_ALERT_RECORD))
    assert (server_alert.content_type, server_alert.content) == (21, b"\x01\x00")
    assert server_ap.sequence_number == 3 and client_ap.sequence_number == 2


def test_rfc8448_streams_switch_keys_after_finished():
    server_stream = RFC8448_SERVER_HELLO_RECORD + RFC8448_SERVER_FLIGHT_RECORD + RFC8448_NEW_SESSION_TICKET_RECORD \
        + RFC8448_SERVER_APPLICATION_RECORD + RFC8448_SERVER_ALERT_RECORD
    records = list(decrypt_tls13_stream(SHA256, server_stream, h(RFC8448["s_hs_traffic"]),
                                        h(RFC8448["s_ap_traffic"])))
    assert [(r.keys, r.content_type) for r in records] == [
        ("plaintext", 22), ("handshake", 22), ("application", 22), ("application", 23), ("application", 21)]
    assert records[1].handshake_messages == (8, 11, 15, 20)


def test_wrong_key_or_sequence_number_or_altered_header_fail_authentication():
    record = one_record(RFC8448_CLIENT_APPLICATION_RECORD)
    keys = traffic_keys(SHA256, h(RFC8448["c_ap_traffic"]))
    with pytest.raises(TLSDecryptError, match="did not authenticate"):
        decrypt_record(SHA256, keys, 1, record)                              # wrong sequence number
    with pytest.raises(TLSDecryptError):
        decrypt_record(SHA256, traffic_keys(SHA256, h(RFC8448["s_ap_traffic"])), 0, record)
    with pytest.raises(TLSDecryptError):                                     # header is associated data
        decrypt_record(SHA256, keys, 0, Record(23, 0x0301, record.fragment))
    flipped = bytearray(record.fragment)
    flipped[10] ^= 1
    with pytest.raises(TLSDecryptError) as error:
        decrypt_record(SHA256, keys, 0, Record(23, 0x0303, bytes(flipped)))
    assert error.value.alert == 20                                           # bad_record_mac


# --------------------------------------------------------------------------- record layer
def test_record_nonce_is_iv_xor_padded_sequence_number():
    iv = bytes(range(12))
    assert record_nonce(iv, 0) == iv
    assert record_nonce(iv, 5) == bytes(range(11)) + bytes([11 ^ 5])
    assert record_nonce(iv, 0x0102) == bytes(range(10)) + bytes([10 ^ 1, 11 ^ 2])
    with pytest.raises(TLSParseError):
        record_nonce(iv, 2**64 - 1)


@pytest.mark.parametrize("suite", list(CIPHER_SUITES.values()), ids=lambda s: s.name)
def test_seal_and_open_each_suite_with_padding(suite):
    keys = traffic_keys(suite, bytes(range(suite.hash_length)))
    assert len(keys.key) == suite.key_length and len(keys.iv) == 12
    content = b"GET / HTTP/1.1\r\n\r\n"
    record = one_record(encrypt_record(suite, keys, 7, 23, content, padding_length=100))
    # On the wire: content, 1 type byte, 100 padding bytes, 16-byte tag; the type says 23.
    assert record.content_type == 23 and len(record.fragment) == len(content) + 1 + 100 + 16
    opened = decrypt_record(suite, keys, 7, record)
    assert (opened.content_type, opened.content, opened.padding_length) == (23, content, 100)
    # The content itself may end in zero bytes: only what follows the type byte is padding.
    opened = decrypt_record(suite, keys, 8, one_record(encrypt_record(suite, keys, 8, 23, b"ab\x00\x00", padding_length=3)))
    assert (opened.content, opened.padding_length) == (b"ab\x00\x00", 3)


def test_records_that_hold_no_content_type_or_are_not_protected_are_refused():
    keys = traffic_keys(SHA256, bytes(32))
    all_padding = encrypt_record(SHA256, keys, 0, 0, b"", padding_length=5)   # type byte 0 = padding
    with pytest.raises(TLSParseError, match="only padding") as error:
        decrypt_record(SHA256, keys, 0, one_record(all_padding))
    assert error.value.alert == 10
    with pytest.raises(TLSParseError, match="application_data"):
        decrypt_record(SHA256, keys, 0, Record(22, 0x0303, bytes(40)))


def test_key_update_ratchets_the_application_keys():
    suite = TLS_CHACHA20_POLY1305_SHA256
    hs_secret, ap_secret = bytes([1]) * 32, bytes([2]) * 32
    hs, ap = traffic_keys(suite, hs_secret), traffic_keys(suite, ap_secret)
    updated_secret = next_traffic_secret(suite, ap_secret)
    assert updated_secret == hkdf_expand_label(ap_secret, "traffic upd", b"", 32, suite)
    updated = traffic_keys(suite, updated_secret)
    finished = b"\x14\x00\x00\x20" + bytes(32)
    key_update = b"\x18\x00\x00\x01\x00"                                 # update_not_requested
    stream = (bytes.fromhex("140303000101")                             # middlebox-compat CCS
              + encrypt_record(suite, hs, 0, 22, finished)
              + encrypt_record(suite, ap, 0, 23, b"before")
              + encrypt_record(suite, ap, 1, 22, key_update)
              + encrypt_record(suite, updated, 0, 23, b"after"))
    records = list(decrypt_tls13_stream(suite, stream, hs_secret, ap_secret))
    assert [(r.keys, r.content_type, r.content) for r in records] == [
        ("plaintext", 20, b"\x01"), ("handshake", 22, finished), ("application", 23, b"before"),
        ("application", 22, key_update), ("application+1", 23, b"after")]


def test_derive_secret_is_expand_label_over_a_transcript_hash():
    secret = h(RFC8448["handshake_secret"])
    assert derive_secret(secret, "c hs traffic", h(RFC8448["hello_hash"]), SHA256) == h(RFC8448["c_hs_traffic"])
    assert cipher_suite("TLS_AES_256_GCM_SHA384") is cipher_suite(0x1302) is TLS_AES_256_GCM_SHA384
    assert TLS_AES_256_GCM_SHA384.hash_length == 48
    with pytest.raises(TLSParseError):
        cipher_suite(0xC02F)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300), st.integers(0, 3))
def test_garbage_gives_only_typed_errors(data, seq):
    """Random records never escape as anything but TLSParseError (TLSDecryptError included)."""
    keys = traffic_keys(SHA256, bytes(32))
    for attempt in (lambda: decrypt_record(SHA256, keys, seq, Record(23, 0x0303, data)),
                    lambda: list(decrypt_tls13_stream(SHA256, data, bytes(32), bytes(32))),
                    lambda: server_hello_cipher_suite(data),
                    lambda: decrypt_connection(data, data, {})):
        try:
            attempt()
        except TLSParseError:
            pass


def test_decrypt_connection_needs_the_connections_secrets():
    client_flight = bytes.fromhex("16030100c4") + RFC8448_CLIENT_HELLO
    server_flight = RFC8448_SERVER_HELLO_RECORD + RFC8448_SERVER_FLIGHT_RECORD
    with pytest.raises(TLSParseError, match="no key log entry for client random cb34ecb1"):
        decrypt_connection(client_flight, server_flight, {})
    client_random = RFC8448_CLIENT_HELLO[6:38]
    with pytest.raises(TLSParseError, match="lacks CLIENT_HANDSHAKE_TRAFFIC_SECRET"):
        decrypt_connection(client_flight, server_flight, {client_random: {}})
    log = {client_random: {"CLIENT_HANDSHAKE_TRAFFIC_SECRET": h(RFC8448["c_hs_traffic"]),
                           "SERVER_HANDSHAKE_TRAFFIC_SECRET": h(RFC8448["s_hs_traffic"]),
                           "CLIENT_TRAFFIC_SECRET_0": h(RFC8448["c_ap_traffic"]),
                           "SERVER_TRAFFIC_SECRET_0": h(RFC8448["s_ap_traffic"])}}
    connection = decrypt_connection(client_flight + RFC8448_CLIENT_FINISHED_RECORD + RFC8448_CLIENT_APPLICATION_RECORD,
                                    server_flight + RFC8448_NEW_SESSION_TICKET_RECORD
                                    + RFC8448_SERVER_APPLICATION_RECORD, log)
    assert connection.suite is TLS_AES_128_GCM_SHA256
    assert connection.application_data("client") == connection.application_data("server") == bytes(range(50))


# --------------------------------------------------------------------------- key log
def test_parse_key_log_groups_secrets_by_client_random():
    a, b = "aa" * 32, "bb" * 32
    text = f"""# SSL/TLS secrets log file, generated by OpenSSL
SERVER_HANDSHAKE_TRAFFIC_SECRET {a} {"01" * 32}
CLIENT_HANDSHAKE_TRAFFIC_SECRET {a} {"02" * 32}
EXPORTER_SECRET {a} {"03" * 32}
SERVER_TRAFFIC_SECRET_0 {a} {"04" * 32}
CLIENT_TRAFFIC_SECRET_0 {a} {"05" * 32}
CLIENT_RANDOM {b} {"06" * 48}
RSA 0011223344556677 {"07" * 48}

"""
    log = parse_key_log(text)
    assert set(log) == {bytes.fromhex(a), bytes.fromhex(b)}
    assert log[bytes.fromhex(a)]["CLIENT_TRAFFIC_SECRET_0"] == bytes([5]) * 32
    assert sorted(log[bytes.fromhex(a)]) == sorted([
        "SERVER_HANDSHAKE_TRAFFIC_SECRET", "CLIENT_HANDSHAKE_TRAFFIC_SECRET", "EXPORTER_SECRET",
        "SERVER_TRAFFIC_SECRET_0", "CLIENT_TRAFFIC_SECRET_0"])
    assert log[bytes.fromhex(b)] == {"CLIENT_RANDOM": bytes([6]) * 48}     # TLS 1.2 master secret
    assert parse_key_log(text.encode()) == log


@pytest.mark.parametrize("line,message", [
    ("CLIENT_RANDOM aa", "expected LABEL"),
    ("CLIENT_RANDOM zz 00", "not hex"),
    ("CLIENT_RANDOM aabb 00", "client random has 2 bytes"),
])
def test_parse_key_log_names_the_bad_line(line, message):
    with pytest.raises(ValueError, match=f"line 2: {message}"):
        parse_key_log("# header\n" + line + "\n")


# --------------------------------------------------------------------------- live TLS 1.3


CLIENT_PROGRAM = r"""
import socket, ssl, sys
port, ca, size = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
context.load_verify_locations(ca)
context.minimum_version = ssl.TLSVersion.TLSv1_3
request = b"POST /upload HTTP/1.1\r\nHost: localhost\r\nContent-Length: %d\r\n\r\n" % size + bytes(i % 251 for i in range(size))
with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
    with context.wrap_socket(raw, server_hostname="localhost") as tls:
        tls.sendall(request)
        cipher = tls.cipher()[0]
        response = b""
        while chunk := tls.recv(65536):
            response += chunk
print(cipher, len(response))
"""

OPENSSL_CONF_TEMPLATE = """openssl_conf = openssl_init
[openssl_init]
ssl_conf = ssl_module
[ssl_module]
system_default = tls_defaults
[tls_defaults]
Ciphersuites = {suite}
"""


@pytest.mark.parametrize("suite", list(CIPHER_SUITES.values()), ids=lambda s: s.name)
def test_live_tls13_connection_decrypts_with_the_key_log(tmp_path, suite):
    """Python ssl client (in a subprocess, its TLS 1.3 suite forced with OPENSSL_CONF) ->
    relay -> Python ssl server with keylog_filename.  The recorded bytes decrypt to
    exactly the request and the response."""
    pem = self_signed_localhost(tmp_path)
    keylog = tmp_path / "keys.log"
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(pem)
    server_context.minimum_version = ssl.TLSVersion.TLSv1_3
    server_context.keylog_filename = str(keylog)
    size = 40_000                                          # several records each way
    request = (b"POST /upload HTTP/1.1\r\nHost: localhost\r\nContent-Length: %d\r\n\r\n" % size
               + bytes(i % 251 for i in range(size)))
    response = b"HTTP/1.1 200 OK\r\nContent-Length: 30000\r\n\r\n" + bytes(30000)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)
    seen: dict[str, object] = {}

    def serve() -> None:
        conn, _ = listener.accept()
        with server_context.wrap_socket(conn, server_side=True) as tls:
            tls.settimeout(10)
            received = b""
            while len(received) < len(request):
                received += tls.recv(65536)
            seen["request"], seen["cipher"] = received, tls.cipher()[0]
            tls.sendall(response)
            try:
                tls.unwrap()                                # close_notify, so the client sees a clean EOF
            except (ssl.SSLError, OSError):
                pass

    server_thread = threading.Thread(target=serve, daemon=True)
    server_thread.start()
    relay = RecordingRelay(listener.getsockname())
    conf = tmp_path / "openssl.cnf"
    conf.write_text(OPENSSL_CONF_TEMPLATE.format(suite=suite.name))
    result = subprocess.run([sys.executable, "-c", CLIENT_PROGRAM, str(relay.port), str(pem), str(size)],
                            env={**os.environ, "OPENSSL_CONF": str(conf)}, capture_output=True, timeout=30)
    server_thread.join(10)
    relay.thread.join(10)
    listener.close()
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout.decode().split() == [suite.name, str(len(response))]
    assert seen["cipher"] == suite.name and seen["request"] == request

    connection = decrypt_connection(bytes(relay.client_to_server), bytes(relay.server_to_client),
                                    parse_key_log(keylog.read_text()))
    assert connection.suite is suite
    assert connection.application_data("client") == request
    assert connection.application_data("server") == response
    # The shape of the conversation, as RFC 8446 §2 draws it.
    client_kinds = [(r.keys, r.content_type) for r in connection.client_records]
    assert client_kinds[:3] == [("plaintext", 22), ("plaintext", 20), ("handshake", 22)]   # CH, CCS, Finished
    server_messages = [m for r in connection.server_records if r.keys == "handshake" for m in r.handshake_messages]
    assert server_messages == [8, 11, 15, 20]              # EE, Certificate, CertificateVerify, Finished
    tickets = [m for r in connection.server_records if r.keys == "application" for m in r.handshake_messages]
    assert tickets == [4, 4]                               # two NewSessionTickets (OpenSSL's default)
    last = connection.server_records[-1]                   # the server's unwrap(): close_notify
    assert (last.keys, last.content_type, last.content) == ("application", 21, b"\x01\x00")
    # Any flipped byte in a protected record is caught.
    tampered = bytearray(relay.client_to_server)
    tampered[-3] ^= 0x40
    with pytest.raises(TLSDecryptError):
        decrypt_connection(bytes(tampered), bytes(relay.server_to_client), parse_key_log(keylog.read_text()))
