"""Certificate chains as a client receives them, and the real tools that show them (notebook 8).

Theory of operation
-------------------
A TLS server sends a *list* of certificates (RFC 8446 §4.4.2: its own first, then
each one "SHOULD directly certify the one immediately preceding it"); the client
then *builds a path* from that leaf up to a root in its own trust store and
*validates* it (RFC 5280 §6.1).  This module looks at both halves from the
client's seat, with the tools a person would use, never with the proxy's code::

    showcerts(address, name, cafile)      openssl s_client -showcerts: the list as sent,
                                          the depth=N lines (the path OpenSSL built),
                                          its "Verify return code"
    build_path(sent, anchors)             the same search written out: for each certificate,
                                          the issuer whose subject and key identifier
                                          match (RFC 5280 §4.2.1.1), found among the
                                          certificates sent or the trust anchors
    facts(cert)                           subject, issuer, serial, fingerprint, AIA, SCTs
    curl(*args)                           curl with the environment's proxies removed;
                                          its own "curl: (N) ..." line
    serve(*args)                          ``tlsproxy serve`` as a real process (so that
                                          it can get SIGHUP); the ports it printed
    KeptAlive(address, name, ca)          one TLS connection held open across requests

Nothing here verifies a certificate itself: the verdicts are OpenSSL's, curl's and
Python's ``ssl``'s (``course.clients.client_context``).  ``build_path`` only matches
names and key identifiers, the *search* half, so that a notebook can print why a
path stops where it stops (a missing intermediate and an unknown CA stop at
different certificates, with the same error message).

Every process started here is stopped by the context manager that started it
(``serve``), or has a timeout (``showcerts``, ``curl``), and every socket has one.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtensionOID

from course import clients
from course.children import stop_child

TOOL_TIMEOUT = 20.0  # seconds for one openssl or curl run; loopback answers in milliseconds
START_TIMEOUT = 20.0  # seconds for ``tlsproxy serve`` to print its listeners
#: RFC 9162 §7.1.2: id-ce-transparencyInfo, where Certificate Transparency 2.0 puts its TransItems.
TRANSPARENCY_INFO = x509.ObjectIdentifier("1.3.101.75")
PEM_BLOCK = re.compile(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.S)

Address = tuple[str, int]


# --------------------------------------------------------------------------- one certificate
@dataclass(frozen=True)
class CertFacts:
    """What a person reads off one certificate (``openssl x509 -text`` would show the same)."""

    subject: str
    issuer: str
    serial: str  # hex, as openssl prints it
    fingerprint: str  # SHA-256 of the DER, first 16 hex digits (``course.clients.fingerprint``'s)
    is_ca: bool  # BasicConstraints cA (RFC 5280 §4.2.1.9)
    self_signed: bool  # subject == issuer: a root (or a stranger pretending to be one)
    not_after: str
    days_valid: float  # notAfter - notBefore
    names: tuple[str, ...]  # subjectAltName entries (what the name check compares)
    aia_ca_issuers: tuple[str, ...]  # RFC 5280 §4.2.2.1 id-ad-caIssuers URLs: where to fetch the issuer
    scts: int | None  # embedded SCTs (RFC 6962 §3.3), None when the extension is absent
    ct_v2: bool  # RFC 9162's transparency-information extension (§7.1.2) is present

    def row(self) -> dict:
        return {"subject": self.subject, "issuer": self.issuer, "serial": self.serial[:16],
                "fingerprint": self.fingerprint, "CA": self.is_ca}


def _name(name: x509.Name) -> str:
    """``CN=..., O=...`` in the certificate's own order (as ``openssl`` prints it)."""
    return ", ".join(attribute.rfc4514_string() for attribute in name)


def _extension(cert: x509.Certificate, oid):
    try:
        return cert.extensions.get_extension_for_oid(oid).value
    except x509.ExtensionNotFound:
        return None


def facts(cert: x509.Certificate) -> CertFacts:
    """The ``CertFacts`` of ``cert``."""
    basic = _extension(cert, ExtensionOID.BASIC_CONSTRAINTS)
    sans = _extension(cert, ExtensionOID.SUBJECT_ALTERNATIVE_NAME)
    aia = _extension(cert, ExtensionOID.AUTHORITY_INFORMATION_ACCESS)
    scts = _extension(cert, ExtensionOID.PRECERT_SIGNED_CERTIFICATE_TIMESTAMPS)
    return CertFacts(
        subject=_name(cert.subject), issuer=_name(cert.issuer), serial=f"{cert.serial_number:x}",
        fingerprint=hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest()[:16],
        is_ca=bool(basic and basic.ca), self_signed=cert.subject == cert.issuer,
        not_after=cert.not_valid_after_utc.strftime("%Y-%m-%d %H:%M UTC"),
        days_valid=(cert.not_valid_after_utc - cert.not_valid_before_utc).total_seconds() / 86400,
        names=tuple(str(getattr(n, "value", n)) for n in sans) if sans else (),
        aia_ca_issuers=tuple(d.access_location.value for d in aia or ()
                             if d.access_method == AuthorityInformationAccessOID.CA_ISSUERS),
        scts=None if scts is None else len(scts),
        ct_v2=_extension(cert, TRANSPARENCY_INFO) is not None,
    )


def pem_certificates(text: str | bytes) -> list[x509.Certificate]:
    """Every PEM certificate in ``text`` (a file's contents, or a tool's output), in order."""
    if isinstance(text, bytes):
        text = text.decode("ascii", "replace")
    return [x509.load_pem_x509_certificate(block.encode()) for block in PEM_BLOCK.findall(text)]


def read_certificates(path: str | os.PathLike[str]) -> list[x509.Certificate]:
    return pem_certificates(Path(path).read_text())


# --------------------------------------------------------------------------- path building
@dataclass(frozen=True)
class PathStep:
    cert: x509.Certificate
    found_in: str  # "sent by the server", "trust store", or "nowhere" for the last step's issuer


@dataclass
class ChainPath:
    """The path from the leaf upwards, as far as it goes, and why it stopped."""

    steps: list[PathStep]
    complete: bool  # ended at a trust anchor
    stopped_because: str

    def rows(self) -> list[dict]:
        return [{"depth": depth, "subject": _name(step.cert.subject), "issuer": _name(step.cert.issuer),
                 "found in": step.found_in} for depth, step in enumerate(self.steps)]


def _key_id(cert: x509.Certificate, oid) -> bytes | None:
    value = _extension(cert, oid)
    if value is None:
        return None
    return value.key_identifier if oid == ExtensionOID.AUTHORITY_KEY_IDENTIFIER else value.digest


def issued(child: x509.Certificate, parent: x509.Certificate) -> bool:
    """Could ``parent`` be ``child``'s issuer?  Issuer name = subject name, and the child's
    AuthorityKeyIdentifier = the parent's SubjectKeyIdentifier when both are present (RFC 5280
    §4.2.1.1, the hint path building follows).  A candidate, not a verdict: the signature is
    what a verifier then checks (§6.1.3)."""
    if child.issuer != parent.subject:
        return False
    aki = _key_id(child, ExtensionOID.AUTHORITY_KEY_IDENTIFIER)
    ski = _key_id(parent, ExtensionOID.SUBJECT_KEY_IDENTIFIER)
    return aki is None or ski is None or aki == ski


def build_path(sent: Sequence[x509.Certificate], anchors: Sequence[x509.Certificate]) -> ChainPath:
    """Walk up from ``sent[0]``: each issuer taken from the trust anchors first, then from the
    certificates sent (OpenSSL's order too: a trusted copy wins), until a trust anchor is reached
    or no candidate is left.  Bounded by the number of certificates there are."""
    steps = [PathStep(sent[0], "sent by the server")]
    pool = [(c, "trust store") for c in anchors] + [(c, "sent by the server") for c in sent[1:]]
    for _ in range(len(pool) + 1):
        current = steps[-1].cert
        if any(current == anchor for anchor in anchors):
            return ChainPath(steps, True, f"reached a trust anchor: {_name(current.subject)}")
        candidate = next(((c, where) for c, where in pool if issued(current, c) and c != current), None)
        if candidate is None:
            return ChainPath(steps, False, f"no certificate sent or trusted has the subject {_name(current.issuer)}, "
                                           f"the issuer of {_name(current.subject)}")
        steps.append(PathStep(*candidate))
    return ChainPath(steps, False, "a loop in the issuers")


# --------------------------------------------------------------------------- openssl s_client
@dataclass
class ShowCerts:
    """One ``openssl s_client -showcerts`` run."""

    command: list[str]
    returncode: int
    sent: list[x509.Certificate]  # the certificates the server sent, in its order
    depths: list[tuple[int, str, str]]  # (depth, subject, its "verify error:..." and "verify return:N" lines)
    verify: str  # its "Verify return code: N (text)" line, the verdict
    stdout: str = field(repr=False)
    stderr: str = field(repr=False)

    @property
    def ok(self) -> bool:
        return self.verify == "Verify return code: 0 (ok)"


def _tool(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/bin")
    if found is None:
        raise FileNotFoundError(f"{name} is not installed (apt-get install {name})")
    return found


def showcerts(address: Address, server_name: str, cafile: str | os.PathLike[str], *,
              proxy: Address | None = None) -> ShowCerts:
    """``openssl s_client -showcerts`` to ``address`` for ``server_name``, trusting ``cafile``
    alone; through an HTTP proxy's CONNECT when ``proxy`` is given (``-proxy``).
    ``-verify_hostname`` makes it check the name too (without it, it checks the chain only)."""
    host, port = address
    command = [_tool("openssl"), "s_client", "-connect", f"{host}:{port}", "-servername", server_name,
               "-verify_hostname", server_name, "-CAfile", str(cafile), "-showcerts"]
    if proxy is not None:
        command += ["-proxy", f"{proxy[0]}:{proxy[1]}"]
    run = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=TOOL_TIMEOUT)
    chain_text = run.stdout.split("Certificate chain", 1)[-1].split("Server certificate", 1)[0]
    depths: list[tuple[int, str, str]] = []
    for line in run.stderr.splitlines():
        found = re.match(r"depth=(\d+) (.*)", line)
        if found:
            depths.append((int(found.group(1)), found.group(2), ""))
        elif depths and line.startswith("verify "):  # "verify error:num=20:..." and "verify return:1"
            depth, subject, verdict = depths[-1]
            depths[-1] = (depth, subject, f"{verdict}; {line.strip()}" if verdict else line.strip())
    verify = next((line.strip() for line in run.stdout.splitlines() if "Verify return code" in line), "")
    return ShowCerts(command, run.returncode, pem_certificates(chain_text), depths, verify, run.stdout, run.stderr)


# --------------------------------------------------------------------------- curl
@dataclass
class CurlRun:
    command: list[str]
    returncode: int  # curl's exit code (60: the peer's certificate could not be verified; 90: pin mismatch)
    stdout: str
    stderr: str

    @property
    def error(self) -> str:
        """curl's own error line (``curl: (60) SSL certificate problem: ...``), or ""."""
        return next((line.strip() for line in self.stderr.splitlines() if line.startswith("curl: (")), "")

    def verbose(self, label: str) -> list[str]:
        """The values of ``*  label: value`` lines of ``curl -v`` (e.g. "issuer", "subject")."""
        return [m.group(1).strip() for m in re.finditer(rf"^\*\s+{re.escape(label)}: (.*)$", self.stderr, re.M)]

    def headers(self) -> list[str]:
        """The response header lines ``curl -v`` received (``< ...``), every response of the run."""
        return [line[2:].rstrip() for line in self.stderr.splitlines() if line.startswith("< ")]


def curl(*args: str, timeout: float = TOOL_TIMEOUT) -> CurlRun:
    """``curl -sS ARGS`` with no proxy inherited from the environment (``http_proxy`` and friends)."""
    command = [_tool("curl"), "-sS", *args]
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    run = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
    return CurlRun(command, run.returncode, run.stdout, run.stderr)


# --------------------------------------------------------------------------- tlsproxy serve, as a process
class ServeProcess:
    """A running ``tlsproxy serve``: its stderr lines (banner and access log) and its listeners."""

    def __init__(self, process: subprocess.Popen):
        self.process = process
        self.lines: list[str] = []
        self.listeners: list[tuple[str, str, int]] = []  # (mode, host, port), as it printed them
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, name="serve-stderr", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in iter(self.process.stderr.readline, ""):
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                found = re.match(r"tlsproxy: (\w+) listening on \[?([^\]\s]+?)\]?:(\d+)$", line.strip())
                if found:
                    self.listeners.append((found.group(1), found.group(2), int(found.group(3))))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def wait_for(self, pattern: str, *, count: int = 1, timeout: float = 10.0) -> list[str]:
        """The stderr lines matching ``pattern`` (a regex), once ``count`` are there; fails after ``timeout``."""
        def matching() -> list[str]:
            return [line for line in self.lines if re.search(pattern, line)]

        with self._changed:
            self._changed.wait_for(lambda: len(matching()) >= count or self.process.poll() is not None, timeout)
            found = matching()
        if len(found) < count:
            tail = "\n".join(self.lines[-8:])
            raise TimeoutError(f"tlsproxy printed no {count} line(s) matching {pattern!r}; last lines:\n{tail}")
        return found

    def port(self, mode: str) -> int:
        """The port of its first listener in ``mode`` ("terminate", "redirect", "forward")."""
        return next(port for m, _, port in self.listeners if m == mode)

    def reload(self) -> str:
        """Send SIGHUP (reload the certificates) and return the line it answers with."""
        before = len(self.wait_for(r"certificates reloaded|reload failed", count=0))
        self.process.send_signal(signal.SIGHUP)
        return self.wait_for(r"certificates reloaded|reload failed", count=before + 1)[-1]

    @property
    def pid(self) -> int:
        return self.process.pid


@contextmanager
def serve(*args: str, listeners: int = 1) -> Iterator[ServeProcess]:
    """``tlsproxy serve ARGS`` (``python -m course.cli serve``, what the ``tlsproxy`` command runs),
    once it has printed ``listeners`` "listening on" lines; SIGTERM (then SIGKILL) on exit."""
    process = subprocess.Popen([sys.executable, "-m", "course.cli", "serve", *args], stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        served = ServeProcess(process)
        deadline = time.monotonic() + START_TIMEOUT
        served.wait_for(r"listening on", count=listeners, timeout=max(0.1, deadline - time.monotonic()))
        yield served
    finally:
        stop_child(process)


# --------------------------------------------------------------------------- one kept-alive connection
class KeptAlive:
    """One verified TLS connection, kept open for several requests (HTTP/1.1 keep-alive)."""

    def __init__(self, address: Address, server_name: str, ca: str | os.PathLike[str], *,
                 timeout: float = clients.TIMEOUT):
        self.server_name = server_name
        self.tls, _ = clients.tls_connect(address, server_name, clients.client_context(ca), timeout=timeout)
        self.certificate = x509.load_der_x509_certificate(self.tls.getpeercert(binary_form=True))
        self.requests = 0
        self.http = http.client.HTTPConnection(server_name, address[1], timeout=timeout)
        self.http.sock = self.tls  # http.client over the TLS socket we made (SNI and verification ours)

    def get(self, path: str = "/") -> int:
        """One request on this same connection; the response status."""
        self.http.request("GET", path, headers={"Host": self.server_name})
        response = self.http.getresponse()
        response.read()
        self.requests += 1
        return response.status

    def close(self) -> None:
        clients.close_politely(self.tls)

    def __enter__(self) -> "KeptAlive":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
