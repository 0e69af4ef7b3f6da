"""A development certificate authority and the leaf certificates the lab serves.

Theory of operation
-------------------
TLS authenticates a server by a chain of signatures: the server sends its *leaf*
certificate, the leaf is signed by a *CA* the client already trusts, and the client
checks the signature, the validity dates and that the name it dialled appears in
the leaf's subjectAltName (RFC 6125 §6; RFC 2818 §3.1).  For the lab we play every
part ourselves, as ``mkcert`` does::

    generate_ca()  ──▶  ca.pem / ca.key        (self-signed; clients get --cacert ca.pem)
         │ signs
         ▼
    generate_leaf()  ──▶  NAME.pem / NAME.key  (SANs, 90 days, serverAuth [+ clientAuth])

``write_certs`` puts both on disk and *reuses* an existing ``ca.pem`` so that every
certificate issued into one directory, today or next week, chains to the same CA.
``ensure_demo_certs`` is the idempotent call the demo, the tests and the notebooks
use: fast when the files are already there, safe when two processes race (a lock
file serialises writers, and every file is written to a temporary name and renamed
into place, so a reader never sees half a PEM file).

The extensions are the ones a strict verifier (``cryptography``'s, OpenSSL's
``X509_V_FLAG_X509_STRICT``, browsers) demands, RFC 5280 §4.2:

* CA: BasicConstraints ``CA:TRUE, pathlen:0`` (critical), KeyUsage
  ``keyCertSign, cRLSign`` (critical), SubjectKeyIdentifier.
* Leaf: BasicConstraints ``CA:FALSE`` (critical), KeyUsage ``digitalSignature``
  (critical; RSA adds ``keyEncipherment`` for TLS 1.2 RSA key transport),
  ExtendedKeyUsage ``serverAuth`` (and ``clientAuth`` for mutual TLS),
  subjectAltName, SubjectKeyIdentifier, AuthorityKeyIdentifier.

Leaves live 90 days: Mozilla's profile recommends 90 and sslyze fails anything over
366.  Private keys are created with mode 0600 from the first byte (``os.open`` with
the mode, never a ``chmod`` afterwards, which would leave a window where the key is
world-readable).  This CA is for a laboratory: never add it to a trust store you
browse the real web with.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime
import fcntl
import hashlib
import ipaddress
import os
import re
import secrets
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from proxy.errors import ConfigError

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

CA_COMMON_NAME = "TLS Termination Lab development CA"
ORGANIZATION = "TLS Termination Lab"
CA_DAYS = 3650  # like mkcert's CA: long enough that a course never sees it expire
LEAF_DAYS = 90  # Mozilla's recommended_certificate_lifespan
BACKDATE = datetime.timedelta(hours=1)  # tolerate a little clock skew between lab hosts
RENEW_BEFORE = datetime.timedelta(days=7)  # ensure_demo_certs reissues leaves this close to expiry
LOCK_NAME = ".tlslab-pki.lock"

# The demo's names (".test" is reserved for testing, RFC 6761 §6.2).
DEMO_WWW = "www.example.test"
DEMO_API = "api.example.test"
DEMO_ORIGIN = "origin.example.test"
DEMO_CLIENT = "proxy-client"
DEMO_WWW_RSA = "www-rsa.example.test"

# One DNS label: letters, digits, hyphens, not starting or ending with a hyphen (RFC 1123 §2.1).
_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)\Z")


# --------------------------------------------------------------------------- names
def _general_name(name: str) -> x509.GeneralName:
    """An IP literal becomes an iPAddress SAN, anything else a (validated) dNSName."""
    try:
        return x509.IPAddress(ipaddress.ip_address(name.strip("[]")))
    except ValueError:
        pass
    wildcard = name.startswith("*.")
    host = name[2:] if wildcard else name
    try:
        host = host.rstrip(".").encode("idna").decode("ascii").lower()  # U-label -> A-label
    except UnicodeError:
        raise ConfigError(f"{name!r} is not a valid DNS name or IP address") from None
    labels = host.split(".")
    if len(host) > 253 or not all(_LABEL.match(label) for label in labels):
        raise ConfigError(f"{name!r} is not a valid DNS name or IP address")
    # RFC 6125 §6.4.3: a wildcard stands for exactly one whole left-most label; "*.test"
    # would cover a whole top-level domain, which no client accepts.
    if wildcard and len(labels) < 2:
        raise ConfigError(f"{name!r}: a wildcard needs at least two labels after '*.'")
    return x509.DNSName(("*." if wildcard else "") + host)


def file_stem(name: str) -> str:
    """The file name (without .pem/.key) for ``name``: '*.a.test' -> '_wildcard.a.test'."""
    if "/" in name or "\0" in name or name in ("", ".", ".."):
        raise ConfigError(f"{name!r} cannot be used as a certificate file name")
    return "_wildcard." + name[2:] if name.startswith("*.") else name


# --------------------------------------------------------------------------- keys and certificates
def _new_key(key_type: str) -> PrivateKey:
    if key_type == "ecdsa":
        return ec.generate_private_key(ec.SECP256R1())  # P-256: Mozilla's certificate_curves
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    raise ConfigError(f"unknown key type {key_type!r} (use 'ecdsa' or 'rsa')")


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def generate_ca(
    common_name: str = CA_COMMON_NAME, key_type: str = "ecdsa"
) -> tuple[x509.Certificate, PrivateKey]:
    """A self-signed CA certificate and its key, allowed to sign leaves only (pathlen 0)."""
    key = _new_key(key_type)
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
        ]
    )
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def generate_leaf(
    ca_cert: x509.Certificate,
    ca_key: PrivateKey,
    names: Sequence[str],
    *,
    key_type: str = "ecdsa",
    days: int = LEAF_DAYS,
    client: bool = False,
) -> tuple[x509.Certificate, PrivateKey]:
    """A leaf for ``names`` (DNS names and IP addresses), signed by the CA.

    The first name is also the subject CN (for people reading ``openssl x509``);
    clients match only the SANs (RFC 6125 §6.4.4).  ``client=True`` adds the
    clientAuth usage so the certificate also works for mutual TLS.
    """
    if not names:
        raise ConfigError("a certificate needs at least one name")
    sans = list(dict.fromkeys(_general_name(name) for name in names))  # de-duplicated, in order
    key = _new_key(key_type)
    first = sans[0].value
    common_name = first if isinstance(first, str) else str(first)
    # X.520's upper bound for a CN is 64 characters; a longer name lives in the SAN only.
    subject = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, common_name)] if len(common_name) <= 64 else []
    )
    usages = [ExtendedKeyUsageOID.SERVER_AUTH] + ([ExtendedKeyUsageOID.CLIENT_AUTH] if client else [])
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    now = _now()
    not_after = min(now + datetime.timedelta(days=days), ca_cert.not_valid_after_utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False,
                key_encipherment=isinstance(key, rsa.RSAPrivateKey),
                data_encipherment=False, key_agreement=False, key_cert_sign=False,
                crl_sign=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        # RFC 5280 §4.2.1.6: with an empty subject the SAN extension MUST be critical.
        .add_extension(x509.SubjectAlternativeName(sans), critical=len(subject) == 0)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key


# --------------------------------------------------------------------------- files
def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    """Write ``data`` to a fresh temporary file created with ``mode``, then rename it over ``path``.

    ``os.open(..., O_EXCL, mode)`` gives the file its permissions at creation, so a
    private key is never readable by others, not even for a moment; ``os.replace``
    is atomic, so a concurrent reader sees the old file or the new one, never a mix.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def _directory_lock(directory: Path) -> Iterator[None]:
    """Serialise writers in one directory (two test workers, or the demo started twice)."""
    fd = os.open(directory / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _read_pem_cert(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except OSError as error:
        raise ConfigError(f"{path}: cannot read ({error.strerror})") from None
    except ValueError:
        raise ConfigError(f"{path}: not a PEM certificate") from None


def _load_or_create_ca(directory: Path) -> tuple[x509.Certificate, PrivateKey, bool]:
    """The directory's CA (certificate, key, created?); call with the directory lock held."""
    cert_path, key_path = directory / "ca.pem", directory / "ca.key"
    if cert_path.exists() != key_path.exists():
        present, missing = (cert_path, key_path) if cert_path.exists() else (key_path, cert_path)
        raise ConfigError(f"{present} exists but {missing} does not; remove {present} to start a new CA")
    if cert_path.exists():
        cert = _read_pem_cert(cert_path)
        try:
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        except (ValueError, TypeError):
            raise ConfigError(f"{key_path}: not an unencrypted PEM private key") from None
        if not isinstance(key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey)):
            raise ConfigError(f"{key_path}: unsupported key type (the lab uses ECDSA or RSA)")
        return cert, key, False
    cert, key = generate_ca()
    _write_atomic(key_path, _key_pem(key), 0o600)  # key first: ca.pem marks the pair complete
    _write_atomic(cert_path, _cert_pem(cert), 0o644)
    return cert, key, True


class IssuedCerts(dict[str, tuple[Path, Path]]):
    """``write_certs``'s answer: name -> (cert path, key path), plus what happened.

    ``written`` lists names issued now, ``kept`` names whose files already existed
    and were left alone (pass ``overwrite=True`` to reissue them).
    """

    def __init__(self, ca: Path, ca_created: bool) -> None:
        super().__init__()
        self.ca = ca
        self.ca_created = ca_created
        self.written: list[str] = []
        self.kept: list[str] = []


def write_certs(
    directory: str | os.PathLike[str],
    names: Sequence[str],
    *,
    key_type: str = "ecdsa",
    overwrite: bool = False,
    extra_sans: Sequence[str] = (),
    client: bool = False,
) -> IssuedCerts:
    """Issue ``NAME.pem`` + ``NAME.key`` for each name into ``directory`` (CA reused or created).

    Each certificate carries its own name plus ``extra_sans``.  ``NAME.pem`` holds
    the leaf only; the CA is in ``ca.pem``.  Existing pairs are kept unless
    ``overwrite``; the CA is never replaced (delete the directory to start over).
    """
    if not names:
        raise ConfigError("name at least one certificate to issue")
    if key_type not in ("ecdsa", "rsa"):
        raise ConfigError(f"unknown key type {key_type!r} (use 'ecdsa' or 'rsa')")
    for name in [*names, *extra_sans]:
        _general_name(name)  # fail before writing anything
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(f"{directory}: cannot create directory ({error.strerror})") from None
    with _directory_lock(directory):
        return _issue_locked(directory, names, key_type, overwrite, extra_sans, client)


def _issue_locked(
    directory: Path, names: Sequence[str], key_type: str, overwrite: bool, extra_sans: Sequence[str], client: bool
) -> IssuedCerts:
    """``write_certs`` with the directory lock held."""
    ca_cert, ca_key, ca_created = _load_or_create_ca(directory)
    issued = IssuedCerts(directory / "ca.pem", ca_created)
    for name in names:
        cert_path, key_path = _pair(directory, name)
        issued[name] = (cert_path, key_path)
        if not overwrite and (cert_path.exists() or key_path.exists()):
            if not (cert_path.exists() and key_path.exists()):
                raise ConfigError(f"{cert_path} or {key_path} is missing; use --force to reissue both")
            issued.kept.append(name)
            continue
        cert, key = generate_leaf(ca_cert, ca_key, [name, *extra_sans], key_type=key_type, client=client)
        _write_atomic(key_path, _key_pem(key), 0o600)
        _write_atomic(cert_path, _cert_pem(cert), 0o644)
        issued.written.append(name)
    return issued


def _pair(directory: Path, name: str) -> tuple[Path, Path]:
    stem = file_stem(name)
    return directory / f"{stem}.pem", directory / f"{stem}.key"


# --------------------------------------------------------------------------- the demo's certificates
@dataclass(frozen=True)
class DemoPKI:
    """Paths of the demo's CA and certificates (see ``ensure_demo_certs``)."""

    directory: Path
    ca: Path
    www_cert: Path
    www_key: Path
    api_cert: Path
    api_key: Path
    origin_cert: Path  # also 127.0.0.1, ::1 and localhost: origins are dialled by address
    origin_key: Path
    client_cert: Path  # clientAuth: the proxy's identity for mutual TLS to origins
    client_key: Path
    www_rsa_cert: Path  # the same role with RSA-2048, to compare handshake costs
    www_rsa_key: Path

    def files(self, name: str) -> tuple[str, str]:
        """(cert, key) paths by certificate name, e.g. ``files("api.example.test")``."""
        cert, key = _pair(self.directory, name)
        return str(cert), str(key)


# name -> (extra SANs, key type, clientAuth?)
DEMO_CERTS: dict[str, tuple[tuple[str, ...], str, bool]] = {
    DEMO_WWW: ((), "ecdsa", False),
    DEMO_API: ((), "ecdsa", False),
    DEMO_ORIGIN: (("127.0.0.1", "::1", "localhost"), "ecdsa", False),
    DEMO_CLIENT: ((), "ecdsa", True),
    DEMO_WWW_RSA: ((), "rsa", False),
}


def _stale_demo_names(directory: Path) -> list[str]:
    """Demo names whose files are missing, expire soon, or were signed by another CA."""
    try:
        ca = x509.load_pem_x509_certificate((directory / "ca.pem").read_bytes())
        if not (directory / "ca.key").exists():
            return list(DEMO_CERTS)
        ca_ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    except (OSError, ValueError, x509.ExtensionNotFound):
        return list(DEMO_CERTS)
    stale = []
    deadline = _now() + RENEW_BEFORE
    for name in DEMO_CERTS:
        cert_path, key_path = _pair(directory, name)
        try:
            leaf = x509.load_pem_x509_certificate(cert_path.read_bytes())
            aki = leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
            fresh = leaf.not_valid_after_utc > deadline and aki.key_identifier == ca_ski
        except (OSError, ValueError, x509.ExtensionNotFound):
            fresh = False
        if not (fresh and key_path.exists()):
            stale.append(name)
    return stale


def ensure_demo_certs(directory: str | os.PathLike[str]) -> DemoPKI:
    """Make sure the demo's CA and five certificates exist in ``directory``; return their paths.

    Idempotent: when every file is present, fresh and from the directory's CA it
    only reads the certificates (a few milliseconds).  Otherwise it takes the
    directory lock, looks again (another process may have just done the work) and
    issues only what is missing or stale.
    """
    directory = Path(directory)
    if _stale_demo_names(directory):
        directory.mkdir(parents=True, exist_ok=True)
        with _directory_lock(directory):
            if not (directory / "ca.pem").exists():
                # A key without its certificate is a crash between the two writes: start again.
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(directory / "ca.key")
            for name in _stale_demo_names(directory):  # again: another process may have done it
                extra, key_type, client = DEMO_CERTS[name]
                _issue_locked(directory, [name], key_type, True, extra, client)
    www, api, origin = _pair(directory, DEMO_WWW), _pair(directory, DEMO_API), _pair(directory, DEMO_ORIGIN)
    client, www_rsa = _pair(directory, DEMO_CLIENT), _pair(directory, DEMO_WWW_RSA)
    return DemoPKI(
        directory=directory, ca=directory / "ca.pem",
        www_cert=www[0], www_key=www[1], api_cert=api[0], api_key=api[1],
        origin_cert=origin[0], origin_key=origin[1], client_cert=client[0], client_key=client[1],
        www_rsa_cert=www_rsa[0], www_rsa_key=www_rsa[1],
    )


def spki_sha256_base64(cert_path: str | os.PathLike[str]) -> str:
    """base64(SHA-256(SubjectPublicKeyInfo)) of a PEM certificate.

    The pin format of HPKP (RFC 7469 §2.4) and of Chromium's
    ``--ignore-certificate-errors-spki-list``.
    """
    cert = _read_pem_cert(Path(cert_path))
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(hashlib.sha256(spki).digest()).decode("ascii")


# --------------------------------------------------------------------------- tlsproxy certs
def configure_cli(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("names", nargs="+", metavar="NAME", help="DNS name or IP address; one certificate each")
    parser.add_argument("--dir", default="certs", help="where ca.pem and NAME.pem/.key go (default: certs)")
    parser.add_argument("--rsa", action="store_true", help="RSA-2048 keys instead of ECDSA P-256")
    parser.add_argument("--force", action="store_true", help="reissue certificates that already exist")
    parser.add_argument(
        "--san", action="append", default=[], metavar="NAME", help="extra SAN for every certificate (repeatable)"
    )
    parser.add_argument("--client", action="store_true", help="also allow client authentication (mutual TLS)")


def run_cli(args: argparse.Namespace) -> int:
    issued = write_certs(
        args.dir,
        args.names,
        key_type="rsa" if args.rsa else "ecdsa",
        overwrite=args.force,
        extra_sans=args.san,
        client=args.client,
    )
    print(f"{'created' if issued.ca_created else 'reusing'} CA  {issued.ca}  (key {issued.ca.with_suffix('.key')})")
    for name, (cert_path, key_path) in issued.items():
        if name in issued.kept:
            print(f"kept     {cert_path}  (exists; --force reissues it)")
        else:
            print(f"wrote    {cert_path}  {key_path}  (mode 0600)")
    first_cert = next(iter(issued.values()))[0]
    print("\ninspect:  openssl x509 -in", first_cert, "-noout -text")
    print("verify:   openssl verify -CAfile", issued.ca, first_cert)
    print("trust it: curl --cacert", issued.ca, "https://NAME:PORT/")
    return 0
