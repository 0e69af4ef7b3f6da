"""The forward-secrecy lesson: the server's private key alone decrypts static RSA, not ECDHE.

Theory of operation
-------------------
Two TLS 1.2 sessions to the same server, with the same RSA certificate
("www-rsa.example.test" from ``proxy/pki.py``), are captured and *no key log is
written*.  Then the only secret handed to the three decryptors (``decrypt.py``) is the
server's long-term RSA private key, as an attacker who recorded the traffic and
later stole (or subpoenaed) the key would have it:

* ``AES128-GCM-SHA256`` (``TLS_RSA_WITH_AES_128_GCM_SHA256``): static RSA key exchange.
  The pre-master secret crossed the wire encrypted to the certificate's key, so the
  key opens it and everything follows: all three methods read the request.
* ``ECDHE-RSA-AES128-GCM-SHA256``: the secret came from an ephemeral elliptic-curve
  Diffie-Hellman exchange; the RSA key only signed it.  Nothing decrypts: that is
  forward secrecy.  TLS 1.3 has no static RSA at all (RFC 8446 §1.2), and Mozilla's
  intermediate profile, which ``proxy/tls/contexts.py`` follows, has no such suite.

!!! The server context below is deliberately insecure.  It is built here, with plain
``ssl``, only for this lesson, and never by the proxy: every context the proxy uses
comes from ``proxy.tls.contexts``, which does not offer static RSA.
"""

from __future__ import annotations

import datetime
import json
import shutil
import socket
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path

from course.capture.bundle import EXAMPLES
from course.capture.decrypt import CrossCheck, cross_check
from course.capture.sniff import Capture

STATIC_RSA = "AES128-GCM-SHA256"             # RSA key exchange: no forward secrecy
ECDHE_RSA = "ECDHE-RSA-AES128-GCM-SHA256"    # the same cipher and MAC, ephemeral key exchange
SESSIONS = {"static-rsa": STATIC_RSA, "ecdhe": ECDHE_RSA}
SERVER_NAME = "www-rsa.example.test"
KEY_FILE = "www-rsa.example.test.key"
REQUEST = b"GET /account/statement?id=path-marker-7 HTTP/1.1\r\nHost: www-rsa.example.test\r\nConnection: close\r\n\r\n"
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 17\r\nConnection: close\r\n\r\nbalance: 1,234.56"
TIMEOUT = 10.0


def insecure_lesson_server_context(cert: str, key: str, cipher: str) -> ssl.SSLContext:
    """INSECURE, FOR THE FORWARD-SECRECY LESSON ONLY: TLS 1.2 with exactly ``cipher``,
    which may be a static-RSA suite.  Never use this for anything else."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = context.maximum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(cipher)
    context.load_cert_chain(cert, key)
    return context


def _serve_once(listener: socket.socket, context: ssl.SSLContext) -> None:
    connection, _ = listener.accept()
    connection.settimeout(TIMEOUT)
    with context.wrap_socket(connection, server_side=True) as tls:
        request = b""
        while b"\r\n\r\n" not in request:
            chunk = tls.recv(4096)
            if not chunk:
                return
            request += chunk
        tls.sendall(RESPONSE)
        try:
            tls.unwrap()
        except (OSError, ssl.SSLError):
            pass


def _session(cipher: str, pki, pcap: Path) -> str:
    """One captured TLS 1.2 session with ``cipher``; returns the cipher OpenSSL reports."""
    cert, key = pki.files(SERVER_NAME)
    server_context = insecure_lesson_server_context(cert, key, cipher)
    client_context = ssl.create_default_context(cafile=str(pki.ca))
    client_context.maximum_version = ssl.TLSVersion.TLSv1_2
    client_context.set_ciphers(cipher)
    client_context.keylog_filename = None          # the lesson: no key log, only the server's key
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(TIMEOUT)
        server = threading.Thread(target=_serve_once, args=(listener, server_context), daemon=True)
        server.start()
        with Capture.loopback(pcap, ports=[listener.getsockname()[1]]):
            raw = socket.create_connection(listener.getsockname(), timeout=TIMEOUT)
            with client_context.wrap_socket(raw, server_hostname=SERVER_NAME) as tls:
                negotiated = tls.cipher()[0]
                tls.sendall(REQUEST)
                while tls.recv(4096):
                    pass
            server.join(TIMEOUT)
    return negotiated


def capture_lesson(out: str | Path, *, pki=None) -> Path:
    """Capture the two sessions into ``out`` (with the server's key); return ``out``."""
    import tempfile

    from proxy.pki import ensure_demo_certs

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="tlslab-pki-") as scratch:
        pki = pki or ensure_demo_certs(scratch)
        negotiated = {name: _session(cipher, pki, out / f"{name}.pcap") for name, cipher in SESSIONS.items()}
        shutil.copyfile(pki.files(SERVER_NAME)[1], out / KEY_FILE)
        shutil.copyfile(pki.files(SERVER_NAME)[0], out / "www-rsa.example.test.pem")
    (out / "metadata.json").write_text(json.dumps({
        "lesson": "forward-secrecy",
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": f"tlsproxy capture --lesson forward-secrecy --out {out}",
        "sessions": {name: {"pcap": f"{name}.pcap", "cipher": negotiated[name]} for name in SESSIONS},
        "server_key": KEY_FILE,
        "note": "a throwaway demo key from a development CA; no key log was written",
    }, indent=1) + "\n")
    return out


@dataclass
class LessonResult:
    checks: dict[str, CrossCheck]     # "static-rsa" / "ecdhe" -> the three methods, server key only

    def decrypted(self, session: str) -> bool:
        return self.checks[session].agree

    def format(self) -> str:
        lines = ["Forward secrecy: two TLS 1.2 sessions, decrypted with the server's RSA private key alone"]
        for name, check in self.checks.items():
            verdict = "DECRYPTED with the server's key" if check.agree else "not decryptable with the server's key"
            lines += ["", f"== {name} ({SESSIONS[name]}): {verdict}", check.format()]
        lines += ["", "The static-RSA session was readable by anyone holding the server's key, for as long as "
                  "the recording exists; the ECDHE session is not, because its secret never left the two "
                  "endpoints' memory (forward secrecy)."]
        return "\n".join(lines)


def analyse_lesson(directory: str | Path) -> LessonResult:
    directory = Path(directory)
    metadata = json.loads((directory / "metadata.json").read_text())
    key = directory / metadata["server_key"]
    return LessonResult({name: cross_check(directory / info["pcap"], None, server_rsa_key=key)
                         for name, info in metadata["sessions"].items()})


def example_lesson() -> Path:
    """The bundled capture of this lesson, for machines that cannot capture."""
    return EXAMPLES / "forward-secrecy"
