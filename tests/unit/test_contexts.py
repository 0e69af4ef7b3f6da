"""proxy/tls/contexts.py: real handshakes between server_context and client contexts.

Each test runs a complete TLS handshake over a socketpair: the server side in a
thread, the client in the test.  Nothing is mocked; what is asserted is what a peer
actually observed (the certificate it received, the version and cipher, the ALPN
protocol, whether the session was resumed, the alert it got).
"""

from __future__ import annotations

import ast
import re
import socket
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from proxy import pki
from proxy.errors import ConfigError
from proxy.tls import contexts
from proxy.tls.contexts import CertKey

WWW, API, ORIGIN = pki.DEMO_WWW, pki.DEMO_API, pki.DEMO_ORIGIN


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> pki.DemoPKI:
    directory = tmp_path_factory.mktemp("pki")
    pki.write_certs(directory, ["*.wild.test"])
    return pki.ensure_demo_certs(directory)


def pair(demo: pki.DemoPKI, name: str) -> CertKey:
    return CertKey(*demo.files(name))


@pytest.fixture(scope="module")
def server(demo) -> ssl.SSLContext:
    """www (the default), api and a wildcard, like a proxy fronting three sites."""
    return contexts.server_context([pair(demo, WWW), pair(demo, API), pair(demo, "*.wild.test")])


def unverified(**versions) -> ssl.SSLContext:
    """A client that looks at whatever certificate it gets (to see the default one)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    for attribute, value in versions.items():
        setattr(context, attribute, value)
    return context


@dataclass
class Handshake:
    client: dict | None = None
    server: dict | None = None
    peer_cn: str | None = None  # the CN of the certificate the client received
    client_peer_cn: str | None = None  # the CN of the client certificate the server received
    session: ssl.SSLSession | None = None
    client_error: Exception | None = None
    server_error: Exception | None = None


def handshake(server_context, client_context, server_name=None, *, session=None) -> Handshake:
    """One connection: handshake, one byte each way (so TLS 1.3 tickets arrive), close."""
    server_sock, client_sock = socket.socketpair()
    server_sock.settimeout(5)
    client_sock.settimeout(5)
    result = Handshake()

    def serve() -> None:
        try:
            with server_context.wrap_socket(server_sock, server_side=True) as tls:
                result.server = contexts.describe(tls)
                peer = tls.getpeercert(binary_form=True)
                if peer:
                    result.client_peer_cn = common_name(peer)
                tls.recv(1)
                tls.sendall(b"y")
        except (ssl.SSLError, OSError) as error:
            result.server_error = error
        finally:
            server_sock.close()

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        with client_context.wrap_socket(client_sock, server_hostname=server_name, session=session) as tls:
            result.client = contexts.describe(tls)
            result.peer_cn = common_name(tls.getpeercert(binary_form=True))
            tls.sendall(b"x")
            tls.recv(1)  # in TLS 1.3 a client certificate is refused *after* the client's handshake
            result.session = tls.session
    except (ssl.SSLError, OSError) as error:
        result.client_error = error
    finally:
        client_sock.close()
        thread.join(10)
    return result


def common_name(der: bytes) -> str:
    cert = x509.load_der_x509_certificate(der)
    return cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value


# --------------------------------------------------------------------------- certificate per SNI
@pytest.mark.parametrize(
    "server_name, expected",
    [
        (WWW, WWW),
        (API, API),
        ("API.Example.TEST", API),  # DNS names compare case-insensitively
        ("shop.wild.test", "*.wild.test"),
        ("a.b.wild.test", WWW),  # RFC 6125 §6.4.3: a wildcard is one label; default served
        ("unknown.test", WWW),
        (None, WWW),  # no SNI at all
    ],
)
def test_sni_chooses_the_certificate(server, server_name, expected):
    result = handshake(server, unverified(), server_name)
    assert result.peer_cn == expected
    assert result.server["server_name"] == server_name


def test_sni_certificate_verifies_for_a_real_client(server, demo):
    client = contexts.client_context(ca=str(demo.ca))
    for name in (WWW, API, "x.wild.test"):
        result = handshake(server, client, name)
        assert result.client_error is None, result.client_error


def test_names_given_explicitly_override_the_sans(demo):
    context = contexts.server_context([pair(demo, WWW), CertKey(*demo.files(API), names=("other.test",))])
    assert handshake(context, unverified(), "other.test").peer_cn == API
    assert handshake(context, unverified(), API).peer_cn == WWW


# --------------------------------------------------------------------------- the Mozilla profile
def test_tls13_by_default_with_alpn_http11(server, demo):
    result = handshake(server, contexts.client_context(ca=str(demo.ca), alpn=["h2", "http/1.1"]), WWW)
    assert result.client["version"] == result.server["version"] == "TLSv1.3"
    assert result.client["alpn"] == result.server["alpn"] == "http/1.1"


def test_alpn_without_overlap_or_without_alpn(server, demo):
    assert handshake(server, contexts.client_context(ca=str(demo.ca), alpn=["h2"]), WWW).client["alpn"] is None
    no_alpn = contexts.server_context([pair(demo, WWW)], alpn=None)
    result = handshake(no_alpn, contexts.client_context(ca=str(demo.ca), alpn=["http/1.1"]), WWW)
    assert result.client["alpn"] is None


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")  # on purpose
def test_tls11_is_refused(server):
    # The client must really offer TLS 1.1: OpenSSL 3 refuses to even try it at security level 1.
    client = unverified(minimum_version=ssl.TLSVersion.TLSv1, maximum_version=ssl.TLSVersion.TLSv1_1)
    client.set_ciphers("DEFAULT:@SECLEVEL=0")
    result = handshake(server, client, WWW)
    assert "UNSUPPORTED_PROTOCOL" in str(result.server_error)
    assert "PROTOCOL_VERSION" in str(result.client_error)


@pytest.mark.parametrize("cipher", ["ECDHE-ECDSA-AES128-SHA256", "ECDHE-ECDSA-AES256-SHA", "ECDHE-ECDSA-AES256-SHA384"])
def test_tls12_cbc_suites_are_refused(server, cipher):
    client = unverified(maximum_version=ssl.TLSVersion.TLSv1_2)
    client.set_ciphers(cipher)
    result = handshake(server, client, WWW)
    assert "NO_SHARED_CIPHER" in str(result.server_error)


@pytest.mark.parametrize(
    "name, cipher",
    [
        (WWW, "ECDHE-ECDSA-AES128-GCM-SHA256"),
        (WWW, "ECDHE-ECDSA-AES256-GCM-SHA384"),
        (WWW, "ECDHE-ECDSA-CHACHA20-POLY1305"),
        (pki.DEMO_WWW_RSA, "ECDHE-RSA-AES128-GCM-SHA256"),
        (pki.DEMO_WWW_RSA, "ECDHE-RSA-CHACHA20-POLY1305"),
    ],
)
def test_tls12_ecdhe_aead_suites_are_accepted(demo, name, cipher):
    context = contexts.server_context([pair(demo, name)])
    client = unverified(maximum_version=ssl.TLSVersion.TLSv1_2)
    client.set_ciphers(cipher)
    result = handshake(context, client, name)
    assert result.client["version"] == "TLSv1.2" and result.client["cipher"] == cipher


def test_tls12_static_rsa_key_exchange_is_refused(demo):
    context = contexts.server_context([pair(demo, pki.DEMO_WWW_RSA)])
    client = unverified(maximum_version=ssl.TLSVersion.TLSv1_2)
    client.set_ciphers("AES128-GCM-SHA256")  # RSA key transport: no forward secrecy
    assert "NO_SHARED_CIPHER" in str(handshake(context, client, pki.DEMO_WWW_RSA).server_error)


def test_the_client_chooses_the_cipher(server):
    # Mozilla intermediate: ssl_prefer_server_ciphers off.  Both orders are honoured.
    for preferred, other in [
        ("ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-ECDSA-AES128-GCM-SHA256"),
        ("ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-CHACHA20-POLY1305"),
    ]:
        client = unverified(maximum_version=ssl.TLSVersion.TLSv1_2)
        client.set_ciphers(f"{preferred}:{other}")
        assert handshake(server, client, WWW).client["cipher"] == preferred


def test_renegotiation_and_compression_are_off(server):
    assert server.options & ssl.OP_NO_RENEGOTIATION
    assert server.options & ssl.OP_NO_COMPRESSION
    assert not server.options & ssl.OP_CIPHER_SERVER_PREFERENCE


def test_group_list_is_restricted_natively_on_this_machine():
    # FACTS.md: CPython 3.11 + OpenSSL 3.0 here; the ctypes path must work, not the fallback.
    assert contexts.key_exchange_groups() == ("X25519", "P-256", "P-384")


@pytest.mark.parametrize(
    "group, accepted",
    [("X25519", True), ("prime256v1", True), ("secp384r1", True), ("X448", False), ("secp521r1", False)],
)
def test_key_exchange_groups_tls13(server, group, accepted):
    client = unverified(minimum_version=ssl.TLSVersion.TLSv1_3)
    client.set_ecdh_curve(group)  # the client offers this one group only
    result = handshake(server, client, API)
    if accepted:
        assert result.client["version"] == "TLSv1.3" and result.peer_cn == API
    else:
        assert "NO_SUITABLE_KEY_SHARE" in str(result.server_error)


def test_key_exchange_groups_tls12(demo):
    # In TLS 1.2 the curve of an ECDSA certificate must also be in the client's list
    # (RFC 8422 §5.1), so the RSA certificate shows the key-exchange policy on its own.
    context = contexts.server_context([pair(demo, pki.DEMO_WWW_RSA)])
    for group, accepted in [("X25519", True), ("secp384r1", True), ("secp521r1", False), ("X448", False)]:
        client = unverified(maximum_version=ssl.TLSVersion.TLSv1_2)
        client.set_ecdh_curve(group)
        result = handshake(context, client, pki.DEMO_WWW_RSA)
        assert (result.server_error is None) == accepted, (group, result.server_error)


def test_client_hello_groups_reader():
    client = unverified()
    client.set_ecdh_curve("secp384r1")
    outgoing = ssl.MemoryBIO()
    sslobj = client.wrap_bio(ssl.MemoryBIO(), outgoing)
    with pytest.raises(ssl.SSLWantReadError):
        sslobj.do_handshake()
    assert contexts._client_hello_groups(outgoing.read()) == (0x0018,)


# --------------------------------------------------------------------------- resumption
@pytest.mark.parametrize("version", ["1.3", "1.2"])
@pytest.mark.parametrize("name", [WWW, API])  # API: resumed through the SNI-switched context
def test_session_resumption(demo, version, name):
    server = contexts.server_context([pair(demo, WWW), pair(demo, API)])
    client = contexts.client_context(ca=str(demo.ca), max_version=version)
    first = handshake(server, client, name)
    assert first.client["session_reused"] is False and first.session is not None
    second = handshake(server, client, name, session=first.session)
    assert second.client_error is None and second.server_error is None
    assert second.client["session_reused"] and second.server["session_reused"]
    assert second.client["version"] == f"TLSv{version}"
    assert second.peer_cn == name  # the resumed session keeps the SNI-chosen identity
    assert server.session_stats()["hits"] >= 1  # counted on the default (session) context


def test_no_session_tickets_means_no_tls13_resumption(demo):
    server = contexts.server_context([pair(demo, WWW)], session_tickets=False)
    client = contexts.client_context(ca=str(demo.ca))
    first = handshake(server, client, WWW)
    second = handshake(server, client, WWW, session=first.session)
    assert second.client["session_reused"] is False


# --------------------------------------------------------------------------- mutual TLS
@pytest.fixture(scope="module")
def mtls_server(demo) -> ssl.SSLContext:
    return contexts.server_context([pair(demo, ORIGIN), pair(demo, API)], client_ca=str(demo.ca))


@pytest.mark.parametrize("server_name", [ORIGIN, API])
def test_mutual_tls_with_the_proxy_client_certificate(mtls_server, demo, server_name):
    client = contexts.client_context(ca=str(demo.ca), cert=str(demo.client_cert), key=str(demo.client_key))
    result = handshake(mtls_server, client, server_name)
    assert result.client_error is None and result.server_error is None
    assert result.client_peer_cn == pki.DEMO_CLIENT


def test_mutual_tls_refuses_a_client_without_certificate(mtls_server, demo):
    result = handshake(mtls_server, contexts.client_context(ca=str(demo.ca)), ORIGIN)
    assert "PEER_DID_NOT_RETURN_A_CERTIFICATE" in str(result.server_error)
    assert result.client_error is not None  # TLS 1.3: the alert reaches the client on its first read


def test_mutual_tls_refuses_a_server_only_certificate(mtls_server, demo):
    # www's certificate has no clientAuth usage; OpenSSL checks the "sslclient" purpose.
    client = contexts.client_context(ca=str(demo.ca), cert=str(demo.www_cert), key=str(demo.www_key))
    result = handshake(mtls_server, client, ORIGIN)
    assert "CERTIFICATE_VERIFY_FAILED" in str(result.server_error)


# --------------------------------------------------------------------------- client side
def test_client_verifies_ip_addresses_and_names(demo):
    server = contexts.server_context([pair(demo, ORIGIN)])
    client = contexts.client_context(ca=str(demo.ca))
    for name in (ORIGIN, "127.0.0.1", "::1", "localhost"):
        assert handshake(server, client, name).client_error is None, name
    mismatch = handshake(server, client, "127.0.0.2")
    assert "IP address mismatch" in str(mismatch.client_error)


def test_client_refuses_a_certificate_from_another_ca(demo, tmp_path):
    other = pki.write_certs(tmp_path, ["x.test"])
    server = contexts.server_context([pair(demo, WWW)])
    result = handshake(server, contexts.client_context(ca=str(other.ca)), WWW)
    assert "CERTIFICATE_VERIFY_FAILED" in str(result.client_error)
    assert handshake(server, contexts.client_context(verify=False), WWW).client_error is None


# --------------------------------------------------------------------------- key log
def test_keylog_file_gets_the_secrets_of_both_versions(demo, tmp_path):
    keylog = tmp_path / "keys.log"
    server = contexts.server_context([pair(demo, WWW), pair(demo, API)], keylog=str(keylog))
    handshake(server, unverified(), API)  # through the SNI-switched context
    text = keylog.read_text()
    assert "CLIENT_HANDSHAKE_TRAFFIC_SECRET" in text and "SERVER_TRAFFIC_SECRET_0" in text
    handshake(server, unverified(maximum_version=ssl.TLSVersion.TLSv1_2), WWW)
    assert "CLIENT_RANDOM" in keylog.read_text()


def test_keylog_from_sslkeylogfile_unless_disabled(demo, tmp_path, monkeypatch):
    keylog = tmp_path / "env.log"
    monkeypatch.setenv("SSLKEYLOGFILE", str(keylog))
    handshake(contexts.server_context([pair(demo, WWW)]), unverified(), WWW)
    assert keylog.read_text().count("\n") >= 5  # five TLS 1.3 secrets per connection
    keylog.unlink()
    handshake(contexts.server_context([pair(demo, WWW)], keylog=""), unverified(), WWW)
    assert not keylog.exists()


# --------------------------------------------------------------------------- the message callback follows SNI
def test_message_callback_set_on_the_default_context_sees_switched_connections(demo):
    server = contexts.server_context([pair(demo, WWW), pair(demo, API)])
    written: list[int] = []

    def record(conn, direction, version, content_type, msg_type, data):
        if direction == "write" and int(content_type) == 22 and data:  # handshake messages
            written.append(data[0])

    server._msg_callback = record
    handshake(server, unverified(), API)
    # ServerHello (2), then after the switch: EncryptedExtensions (8), Certificate (11),
    # CertificateVerify (15), Finished (20).
    assert {2, 8, 11, 15, 20} <= set(written)


# --------------------------------------------------------------------------- configuration errors
def test_mismatched_key_names_the_files(demo):
    with pytest.raises(ConfigError) as error:
        contexts.server_context([CertKey(str(demo.www_cert), str(demo.api_key))])
    message = str(error.value)
    assert str(demo.api_key) in message and "does not belong" in message and "\n" not in message


def test_missing_and_garbage_files(demo, tmp_path):
    missing = tmp_path / "nope.pem"
    with pytest.raises(ConfigError, match=f"certificate file {missing}: not found"):
        contexts.server_context([CertKey(str(missing), str(demo.www_key))])
    garbage = tmp_path / "garbage.key"
    garbage.write_text("-----BEGIN PRIVATE KEY-----\nnot base64\n-----END PRIVATE KEY-----\n")
    with pytest.raises(ConfigError, match=f"private key file {garbage}: no valid PEM private key"):
        contexts.server_context([CertKey(str(demo.www_cert), str(garbage))])
    with pytest.raises(ConfigError, match=f"certificate file {garbage}: no valid PEM certificate"):
        contexts.server_context([CertKey(str(garbage), str(demo.www_key))])
    with pytest.raises(ConfigError, match="client CA file"):
        contexts.server_context([pair(demo, WWW)], client_ca=str(missing))


def test_encrypted_key_is_refused_without_prompting(demo, tmp_path):
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(Path(demo.www_key).read_bytes(), password=None)
    encrypted = tmp_path / "encrypted.key"
    encrypted.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    with pytest.raises(ConfigError, match="encrypted"):
        contexts.server_context([CertKey(str(demo.www_cert), str(encrypted))])


def test_versions_are_checked():
    with pytest.raises(ConfigError, match="RFC 8996"):
        contexts.client_context(min_version="1.1")
    with pytest.raises(ConfigError, match="above"):
        contexts.client_context(min_version="1.3", max_version="1.2")
    with pytest.raises(ConfigError, match="at least one certificate"):
        contexts.server_context([])


def test_tls12_only_server(demo):
    server = contexts.server_context([pair(demo, WWW)], max_version="1.2")
    assert handshake(server, unverified(), WWW).client["version"] == "TLSv1.2"


def test_keylog_set_after_building_also_covers_switched_connections(demo, tmp_path):
    server = contexts.server_context([pair(demo, WWW), pair(demo, API)], keylog="")
    keylog = tmp_path / "late.log"
    server.keylog_filename = str(keylog)
    handshake(server, unverified(), API)
    assert "SERVER_TRAFFIC_SECRET_0" in keylog.read_text()


# --------------------------------------------------------------------------- who else builds a context
REPO = Path(__file__).resolve().parents[2]
BUILDERS = {"SSLContext", "create_default_context", "_create_unverified_context"}


def context_builders(package: str) -> set[str]:
    """The modules under ``package`` that build an SSLContext with plain ``ssl``."""
    found = set()
    for path in sorted((REPO / package).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            called = (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                      and isinstance(node.func.value, ast.Name) and node.func.value.id == "ssl"
                      and node.func.attr in BUILDERS)
            imported = (isinstance(node, ast.ImportFrom) and node.module == "ssl"
                        and any(alias.name in BUILDERS for alias in node.names))
            if called or imported:
                found.add(".".join(path.relative_to(REPO).with_suffix("").parts))
    return found


def test_the_proxy_builds_its_contexts_here_and_the_docstring_names_every_other_builder():
    """The module docstring's promise, checked against the tree in both directions."""
    assert context_builders("proxy") == {"proxy.tls.contexts"}
    exceptions = contexts.__doc__.partition("Two kinds of context do not")[2]
    named = set(re.findall(r"``(course(?:\.\w+)+)``", exceptions))
    assert context_builders("course") == named
