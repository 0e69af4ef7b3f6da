"""server_context seen from outside: openssl s_client and sslyze against a live listener.

A tiny threaded TLS accept loop (below) serves ``server_context`` on 127.0.0.1 port 0:
the real proxy server lives in proxy/server.py; this test checks the TLS policy on
its own, with the two tools an operator would point at a real site.
"""

from __future__ import annotations

import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path

import pytest

from proxy import pki
from proxy.tls import contexts
from tests.tools import require_tool

WWW, API = pki.DEMO_WWW, pki.DEMO_API
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n"


class TinyTLSServer:
    """Accept, handshake, answer one fixed HTTP response, close; one thread per connection.

    Bounded: at most ``max_connections`` handshakes at once (sslyze opens several in
    parallel), every socket has a timeout, and ``stop()`` joins the accept thread.
    """

    def __init__(self, context: ssl.SSLContext, max_connections: int = 32):
        self.context = context
        self.listener = socket.create_server(("127.0.0.1", 0), backlog=128)
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        self.slots = threading.BoundedSemaphore(max_connections)
        self.stopping = threading.Event()
        self.handshakes = 0
        self.thread = threading.Thread(target=self._accept_loop, name="tiny-tls-accept", daemon=True)

    def __enter__(self) -> "TinyTLSServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopping.set()
        self.thread.join(5)
        self.listener.close()

    def _accept_loop(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.slots.acquire()
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(5)
            with self.context.wrap_socket(conn, server_side=True) as tls:
                self.handshakes += 1
                request = b""
                while b"\r\n\r\n" not in request and len(request) < 65536:
                    chunk = tls.recv(4096)
                    if not chunk:
                        break
                    request += chunk
                tls.sendall(RESPONSE)
        except (ssl.SSLError, OSError):
            pass  # scanners hang up on purpose and offer what we refuse: expected
        finally:
            conn.close()
            self.slots.release()


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> pki.DemoPKI:
    return pki.ensure_demo_certs(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def listener(demo):
    context = contexts.server_context([contexts.CertKey(*demo.files(WWW)), contexts.CertKey(*demo.files(API))])
    with TinyTLSServer(context) as server:
        yield server


def s_client(port: int, ca: Path, *args: str) -> subprocess.CompletedProcess:
    openssl = require_tool("openssl")
    command = [openssl, "s_client", "-connect", f"127.0.0.1:{port}", "-CAfile", str(ca), "-brief", *args]
    return subprocess.run(command, input=b"", capture_output=True, timeout=30)


# --------------------------------------------------------------------------- openssl s_client
@pytest.mark.parametrize("server_name", [WWW, API])
def test_s_client_sees_the_sni_certificate_over_tls13(listener, demo, server_name):
    result = s_client(listener.port, demo.ca, "-servername", server_name, "-verify_return_error")
    out = result.stdout.decode() + result.stderr.decode()
    assert result.returncode == 0, out
    assert "Protocol version: TLSv1.3" in out
    assert f"Peer certificate: CN = {server_name}" in out
    assert "Verification: OK" in out


def test_s_client_tls11_fails(listener, demo):
    # SECLEVEL=0 so that OpenSSL 3 really sends a TLS 1.1 ClientHello: the server refuses it.
    result = s_client(listener.port, demo.ca, "-servername", WWW, "-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0")
    assert result.returncode != 0
    assert b"alert protocol version" in result.stdout + result.stderr


def test_s_client_tls12_cbc_fails_and_aead_works(listener, demo):
    refused = s_client(listener.port, demo.ca, "-servername", WWW, "-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-SHA256")
    assert refused.returncode != 0 and b"handshake failure" in refused.stdout + refused.stderr
    accepted = s_client(
        listener.port, demo.ca, "-servername", WWW, "-tls1_2", "-cipher", "ECDHE-ECDSA-CHACHA20-POLY1305"
    )
    assert accepted.returncode == 0
    assert b"Ciphersuite: ECDHE-ECDSA-CHACHA20-POLY1305" in accepted.stdout + accepted.stderr


def test_s_client_groups(listener, demo):
    refused = s_client(listener.port, demo.ca, "-servername", WWW, "-groups", "X448:secp521r1")
    assert refused.returncode != 0
    # X448 first: the client's key share is useless, the server asks again for P-256
    # (HelloRetryRequest, RFC 8446 §4.1.4), and the SNI choice survives the second hello.
    retried = s_client(listener.port, demo.ca, "-servername", API, "-groups", "X448:P-256", "-verify_return_error")
    out = retried.stdout + retried.stderr
    assert retried.returncode == 0, out
    assert b"Peer certificate: CN = api.example.test" in out and b"Server Temp Key: ECDH, prime256v1" in out


# --------------------------------------------------------------------------- sslyze
# sslyze's own bundled trust stores hold a certificate with a negative serial number.
@pytest.mark.filterwarnings("ignore:Parsed a serial number:cryptography.utils.CryptographyDeprecationWarning")
def test_sslyze_mozilla_intermediate_compliant(demo):
    sslyze = pytest.importorskip("sslyze")
    from sslyze.mozilla_tls_profile.tls_config_checker import (
        SCAN_COMMANDS_NEEDED_BY_MOZILLA_CHECKER,
        MozillaTlsConfiguration,
        ServerNotCompliantWithTlsConfiguration,
        TlsConfigurationEnum,
        check_server_against_tls_configuration,
    )

    # The default certificate is ECDSA (www); the RSA one is scanned too, as a second site.
    context = contexts.server_context(
        [contexts.CertKey(*demo.files(WWW)), contexts.CertKey(*demo.files(pki.DEMO_WWW_RSA))]
    )
    with TinyTLSServer(context) as server:
        requests = [
            sslyze.ServerScanRequest(
                server_location=sslyze.ServerNetworkLocation(name, server.port, ip_address="127.0.0.1"),
                network_configuration=sslyze.ServerNetworkConfiguration(
                    tls_server_name_indication=name, network_timeout=5, network_max_retries=1
                ),
                scan_commands=SCAN_COMMANDS_NEEDED_BY_MOZILLA_CHECKER,
                scan_commands_extra_arguments=sslyze.ScanCommandsExtraArguments(
                    certificate_info=sslyze.CertificateInfoExtraArgument(custom_ca_file=Path(demo.ca))
                ),
            )
            for name in (WWW, pki.DEMO_WWW_RSA)
        ]
        scanner = sslyze.Scanner(per_server_concurrent_connections_limit=8)
        started = time.monotonic()
        scanner.queue_scans(requests)
        results = list(scanner.get_results())
        elapsed = time.monotonic() - started
    assert elapsed < 50, f"sslyze took {elapsed:.0f} s"

    profile = MozillaTlsConfiguration.get(TlsConfigurationEnum.MOZILLA_INTERMEDIATE)
    for result in results:
        completed = sslyze.ServerConnectivityStatusEnum.COMPLETED
        assert result.connectivity_status == completed, result.connectivity_error_trace
        try:
            check_server_against_tls_configuration(result, profile)
        except ServerNotCompliantWithTlsConfiguration as error:
            pytest.fail(f"{result.server_location.hostname}: {error.issues}")
        # What sslyze saw, spelled out: only X25519, P-256, P-384; only TLS 1.2 and 1.3.
        curves = {curve.name for curve in result.scan_result.elliptic_curves.result.supported_curves}
        assert curves == {"X25519", "secp256r1", "secp384r1"}  # sslyze says secp256r1 for P-256
        assert not result.scan_result.tls_1_1_cipher_suites.result.accepted_cipher_suites
        assert result.scan_result.tls_1_3_cipher_suites.result.accepted_cipher_suites
        deployment = result.scan_result.certificate_info.result.certificate_deployments[0]
        assert deployment.verified_certificate_chain  # trusted through the lab CA
        leaf = deployment.received_certificate_chain[0]
        assert leaf.subject.rfc4514_string() == f"CN={result.server_location.hostname}"  # SNI chose it
