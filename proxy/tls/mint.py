"""Certificates minted on the fly, for the intercepting forward proxy (lab only).

Theory of operation
-------------------
An intercepting proxy (``proxy.modes.intercept``) answers a client's ``CONNECT
host:port`` itself and then plays ``host`` in a TLS handshake.  It needs, for every
host a client asks for, a certificate that the client will accept for that name.
No real CA would issue one, so the proxy carries its own CA, the *interception CA*,
and the client is made to trust it (installed in its trust store, or ``curl
--cacert``).  This module is that CA's signing desk::

    Minter.context_for("www.example.test")
        │ cached?  ── yes ──▶ the SSLContext made for it before (LRU, 256 hosts)
        ▼ no
    mint_leaf(ca, "www.example.test")          a fresh ECDSA P-256 key and a leaf:
        │                                      SAN dNSName (iPAddress for an IP literal),
        │                                      EKU serverAuth, 1 day, AKI = the CA's SKI
        ▼
    contexts.server_context([leaf])            the proxy's one TLS policy (Mozilla intermediate)

The leaf carries what a strict verifier (OpenSSL's ``X509_V_FLAG_X509_STRICT``,
CPython 3.13's default context, browsers) demands, the same set as ``proxy.pki``'s
leaves (RFC 5280 §4.2): BasicConstraints ``CA:FALSE`` and KeyUsage
``digitalSignature`` (both critical), ExtendedKeyUsage ``serverAuth``
(§4.2.1.12), subjectAltName (§4.2.1.6; clients match only the SAN, never the CN:
RFC 9110 §4.3.4, RFC 9525), SubjectKeyIdentifier and AuthorityKeyIdentifier
(§4.2.1.1: how path building finds the interception CA's key).  It lives one day
(backdated an hour for clock skew, never past the CA's own end): a minted
certificate is disposable, and a context is minted again once half of that day
is gone.

Why a cache: minting costs a key generation and a signature (0.4 ms on the lab's
machine), but the client's handshake also needs a new ``SSLContext`` with that
certificate and key loaded (about 4 ms in all), and a browser opens many
connections to one host.  The cache is an
``OrderedDict`` used as an LRU, bounded (``capacity``, 256 by default: a client
naming endless hosts must not grow the proxy's memory without limit), under one
lock.  Minting is done outside the lock, so a slow mint never blocks a cached
lookup; two threads that miss at the same moment may both mint, and the later one
takes the context the earlier one stored (every client of a host sees one
certificate).

Python's ``ssl`` loads certificates only from files (``load_cert_chain`` takes
paths), so each leaf and its key are written to a private temporary directory
(mode 0700, the key 0600 from creation), loaded, and deleted at once.

The interception CA itself (``python -m proxy.tls.mint --make-ca DIR``) is
``CA:TRUE, pathlen:0`` (it signs leaves, never another CA, RFC 5280 §4.2.1.9),
named "TLS Lab Interception CA — lab only" so that whoever inspects a certificate
chain sees at once what issued it.  Whoever holds its key can impersonate every
site to every client that trusts it: never install it in a browser or system
store you use for anything else.
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import os
import ssl
import sys
import tempfile
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from proxy.errors import ConfigError
from proxy.pki import generate_ca
from proxy.tls import contexts

CA_COMMON_NAME = "TLS Lab Interception CA \u2014 lab only"
CA_DAYS = 90  # a lab CA: short-lived, so a forgotten copy in a trust store soon stops working
LEAF_LIFETIME = datetime.timedelta(days=1)
BACKDATE = datetime.timedelta(hours=1)  # tolerate a little clock skew
CAPACITY = 256  # contexts kept: far more hosts than a lab visits, a bound against a client that names endless ones
CA_CERT_FILE, CA_KEY_FILE = "intercept-ca.pem", "intercept-ca.key"

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


# --------------------------------------------------------------------------- the CA
@dataclass(frozen=True)
class InterceptionCA:
    """The interception CA: its certificate (and the file it came from) and its key."""

    cert: x509.Certificate
    key: PrivateKey
    cert_path: str

    @property
    def ski(self) -> x509.SubjectKeyIdentifier:
        try:
            return self.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        except x509.ExtensionNotFound:  # RFC 5280 §4.2.1.2 wants one; derive it as most CAs do
            return x509.SubjectKeyIdentifier.from_public_key(self.cert.public_key())


def load_ca(cert_path: str, key_path: str) -> InterceptionCA:
    """Load and check an interception CA: a CA certificate, and the key that belongs to it."""
    try:
        cert = x509.load_pem_x509_certificate(Path(cert_path).read_bytes())
    except OSError as error:
        raise ConfigError(f"interception CA certificate {cert_path}: cannot read ({error.strerror})") from None
    except ValueError:
        raise ConfigError(f"interception CA certificate {cert_path}: no valid PEM certificate in it") from None
    try:
        key = serialization.load_pem_private_key(Path(key_path).read_bytes(), password=None)
    except OSError as error:
        raise ConfigError(f"interception CA key {key_path}: cannot read ({error.strerror})") from None
    except (ValueError, TypeError):
        raise ConfigError(f"interception CA key {key_path}: no unencrypted PEM private key in it") from None
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    if constraints is None or not constraints.ca:
        raise ConfigError(f"interception CA certificate {cert_path} is not a CA (BasicConstraints CA:TRUE); "
                          f"make one with: python -m proxy.tls.mint --make-ca DIR")
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    if (key.public_key().public_bytes(serialization.Encoding.DER, public)
            != cert.public_key().public_bytes(serialization.Encoding.DER, public)):
        raise ConfigError(f"interception CA key {key_path} does not belong to the certificate in {cert_path}")
    return InterceptionCA(cert, key, str(cert_path))


def make_ca(directory: str | os.PathLike[str], *, days: int = CA_DAYS) -> tuple[Path, Path]:
    """Write a new lab interception CA to ``directory``; returns (certificate, key) paths."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    # The demo PKI's root builder (proxy.pki), with pathlen 0: it signs leaves, never another CA.
    cert, key = generate_ca(CA_COMMON_NAME, "ecdsa", path_length=0, days=days)
    cert_path, key_path = directory / CA_CERT_FILE, directory / CA_KEY_FILE
    for path in (cert_path, key_path):
        if path.exists():  # replacing a CA would silently break every client that trusts the old one
            raise ConfigError(f"{path} exists already: remove it first to make a new interception CA")
    _write_new(key_path, _key_pem(key), 0o600)
    _write_new(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return cert_path, key_path


# --------------------------------------------------------------------------- one leaf
def subject_alt_name(host: str) -> x509.GeneralName:
    """The SAN for ``host``: an iPAddress for an IP literal (RFC 9110 §4.3.5's IP-ID), else a dNSName."""
    try:
        return x509.IPAddress(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        pass
    try:
        name = host.rstrip(".").encode("idna").decode("ascii").lower()  # U-label -> A-label
    except UnicodeError:
        raise ValueError(f"{host[:80]!r} is not a DNS name or an IP address") from None
    if not name or len(name) > 253 or any(not label or len(label) > 63 for label in name.split(".")):
        raise ValueError(f"{host[:80]!r} is not a DNS name or an IP address")
    return x509.DNSName(name)


def mint_leaf(ca: InterceptionCA, host: str, *, now: datetime.datetime | None = None,
              lifetime: datetime.timedelta = LEAF_LIFETIME) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A leaf certificate for ``host`` signed by the interception CA, and its new key."""
    san = subject_alt_name(host)
    key = ec.generate_private_key(ec.SECP256R1())
    now = now or _now()
    common_name = str(san.value)
    # X.520's upper bound for a CN is 64 characters; a longer name lives in the SAN only,
    # and RFC 5280 §4.2.1.6 then wants the SAN extension critical (the subject is empty).
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)] if len(common_name) <= 64 else [])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(min(now + lifetime, ca.cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName([san]), critical=len(subject) == 0)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca.ski), critical=False)
        .sign(ca.key, hashes.SHA256())
    )
    return cert, key


# --------------------------------------------------------------------------- the cache
@dataclass
class _Minted:
    context: ssl.SSLContext
    cert: x509.Certificate
    renew_at: datetime.datetime


class Minter:
    """Server contexts for any host, signed by one interception CA; an LRU cache, thread-safe."""

    def __init__(self, ca: InterceptionCA, *, capacity: int = CAPACITY, keylog: str | None = None,
                 lifetime: datetime.timedelta = LEAF_LIFETIME):
        if capacity < 1:
            raise ValueError("the cache needs room for at least one host")
        self.ca = ca
        self.capacity = capacity
        self.keylog = keylog
        self.lifetime = lifetime
        self.cache: OrderedDict[str, _Minted] = OrderedDict()
        self.lock = threading.Lock()
        self.minted = 0  # leaves signed (misses)
        self.hits = 0

    def context_for(self, host: str) -> ssl.SSLContext:
        """The server context presenting a certificate for ``host`` (ValueError for a bad name)."""
        return self._entry(host).context

    def certificate_for(self, host: str) -> x509.Certificate:
        """The leaf ``context_for(host)`` presents."""
        return self._entry(host).cert

    def _entry(self, host: str) -> _Minted:
        name = str(subject_alt_name(host).value)  # one cache key per name, however it was spelt
        now = _now()
        with self.lock:
            entry = self.cache.get(name)
            if entry is not None and now < entry.renew_at:
                self.cache.move_to_end(name)
                self.hits += 1
                return entry
        fresh = self._mint(name, now)
        with self.lock:
            entry = self.cache.get(name)
            if entry is None or entry.renew_at <= now:  # nobody minted it meanwhile
                entry = self.cache[name] = fresh
                self.minted += 1
            self.cache.move_to_end(name)
            while len(self.cache) > self.capacity:
                self.cache.popitem(last=False)  # the least recently used
            return entry

    def _mint(self, name: str, now: datetime.datetime) -> _Minted:
        cert, key = mint_leaf(self.ca, name, now=now, lifetime=self.lifetime)
        # The leaf alone: the interception CA is a trust anchor, which "MAY be omitted" from the
        # chain (RFC 8446 §4.4.2); a client that has it needs nothing more, one that lacks it
        # fails with "unable to get local issuer certificate", the lesson's symptom.
        chain = cert.public_bytes(serialization.Encoding.PEM)
        with tempfile.TemporaryDirectory(prefix="tlslab-mint-") as directory:  # mode 0700
            cert_path, key_path = Path(directory, "leaf.pem"), Path(directory, "leaf.key")
            _write_new(key_path, _key_pem(key), 0o600)
            _write_new(cert_path, chain, 0o600)
            context = contexts.server_context([contexts.CertKey(str(cert_path), str(key_path), names=(name,))],
                                              keylog=self.keylog)
        _refuse_other_server_names(context, name)
        return _Minted(context, cert, now + self.lifetime / 2)


def _refuse_other_server_names(context: ssl.SSLContext, name: str) -> None:
    """Fail the handshake when the ClientHello's SNI names another host than the CONNECT did.

    The certificate is minted for the CONNECT's host; a client asking (in its SNI) for a
    different name would get a certificate that does not match it, so the handshake
    ends with the ``unrecognized_name`` alert (RFC 6066 §3) instead, and the proxy
    never connects one name's tunnel to another name's TLS session.
    """
    inner = context.sni_callback  # contexts.server_context's: records the SNI for describe()

    def check(sslobj, server_name, ctx):
        if inner is not None:
            inner(sslobj, server_name, ctx)
        if server_name and server_name.lower().rstrip(".") != name:
            return ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME
        return None

    context.sni_callback = check


# --------------------------------------------------------------------------- files
def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _write_new(path: Path, data: bytes, mode: int) -> None:
    """Create the new file ``path`` with ``mode`` from its first byte (a key is never readable by others)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    with os.fdopen(fd, "wb") as file:
        file.write(data)


# --------------------------------------------------------------------------- python -m proxy.tls.mint
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m proxy.tls.mint",
                                     description="Make the lab's interception CA (proxy/modes/intercept.py).")
    parser.add_argument("--make-ca", metavar="DIR", required=True,
                        help=f"write DIR/{CA_CERT_FILE} and DIR/{CA_KEY_FILE} (the key mode 0600)")
    parser.add_argument("--days", type=int, default=CA_DAYS, help="validity of the CA (default %(default)s)")
    args = parser.parse_args(argv)
    try:
        cert_path, key_path = make_ca(args.make_ca, days=args.days)
    except ConfigError as error:
        print(f"python -m proxy.tls.mint: {error}", file=sys.stderr)
        return 2
    print(f"{cert_path}\n{key_path}")
    print("WARNING: whoever holds this key can impersonate any site to a client that trusts the CA. "
          "Trust it only in a lab client (curl --cacert), never in your browser or system store.",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
