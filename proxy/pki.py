"""A development PKI: a root CA, an intermediate CA, and the leaf certificates the lab serves.

Theory of operation
-------------------
TLS authenticates a server by a *chain* of signatures.  The server sends its
*leaf* certificate (the one naming it) and the *intermediate* CA certificate that
signed the leaf; the client holds the *root* CA that signed the intermediate in
its trust store.  Real public CAs work this way: the root's key stays offline in a
safe, and a replaceable intermediate signs the day-to-day certificates.  For the
lab we play every part ourselves, as ``mkcert`` does, with one level more::

    generate_ca()            ──▶  ca.pem / ca.key                 root: self-signed, CA:TRUE,
         │ signs                                                   the only thing clients trust
         ▼                                                         (curl --cacert ca.pem)
    generate_intermediate()  ──▶  intermediate.pem / .key         CA:TRUE pathlen:0: signs leaves only
         │ signs
         ▼
    generate_leaf()          ──▶  NAME.pem = leaf + intermediate  what a server loads and sends
                                  NAME.leaf.pem = the leaf alone  (for the missing-intermediate lesson)
                                  NAME.key                        (SANs, 90 days, serverAuth [+ clientAuth])

Checking a chain has two halves.  *Path building* finds a sequence from the leaf
up to a trust anchor: each certificate's issuer name (and AuthorityKeyIdentifier)
points at the subject (and SubjectKeyIdentifier) of the next one up, among the
certificates the peer sent and the local trust store (RFC 4158 describes the
search).  *Path validation* (RFC 5280 §6.1) then walks that path from the anchor
down: every signature verifies, every certificate is within its validity dates,
every issuer is a CA (BasicConstraints) allowed to sign certificates (KeyUsage
keyCertSign) with no more CAs below it than its pathLenConstraint allows, and the
leaf is allowed for the purpose (ExtendedKeyUsage serverAuth, RFC 5280 §4.2.1.12)
and names the host dialled in its subjectAltName (RFC 6125 §6; RFC 2818 §3.1).

Why the server must send the intermediate: the client has only the root.  RFC 8446
§4.4.2: "The sender's certificate MUST come in the first CertificateEntry in the
list.  Each following certificate SHOULD directly certify the one immediately
preceding it", and a trust anchor "MAY be omitted".  So ``NAME.pem`` holds the leaf
followed by the intermediate: that file is what ``ssl.SSLContext.load_cert_chain``
reads as the chain to send and what nginx's ``ssl_certificate`` expects, so the
proxy and the demo origins send both without any other configuration.  A server
that sends the leaf alone fails in curl, openssl and Python ("unable to get local
issuer certificate") yet often works in a browser: browsers follow the leaf's
Authority Information Access extension (RFC 5280 §4.2.2.1, access method
id-ad-caIssuers) to download the missing issuer, or have it cached from another
site.  That is why the mistake survives a quick check in a browser;
``course.certerrors`` shows it failing everywhere else.

``write_certs`` puts everything on disk and *reuses* an existing root and
intermediate, so every certificate issued into one directory, today or next week,
chains to the same root.  ``ensure_demo_certs`` is the idempotent call the demo,
the tests and the notebooks use: fast when the files are already there, safe when
two processes race (a lock file serialises writers, and every file is written to a
temporary name and renamed into place, so a reader never sees half a PEM file).
It also upgrades a directory made by an older version of the lab, whose leaves
were signed by the root directly (and whose root had pathlen:0, so it could not
sign an intermediate): such a directory is regenerated once, root included.

The extensions are the ones a strict verifier (``cryptography``'s, OpenSSL's
``X509_V_FLAG_X509_STRICT``, browsers) demands, RFC 5280 §4.2:

* Root: BasicConstraints ``CA:TRUE`` (critical, no path length limit, like most
  public roots), KeyUsage ``keyCertSign, cRLSign`` (critical), SubjectKeyIdentifier.
* Intermediate: BasicConstraints ``CA:TRUE, pathlen:0`` (critical: it may sign
  leaves but no further CA, RFC 5280 §4.2.1.9), KeyUsage ``keyCertSign, cRLSign``
  (critical), SubjectKeyIdentifier, AuthorityKeyIdentifier (= the root's SKI,
  RFC 5280 §4.2.1.1: how path building picks the right issuer key).
* Leaf: BasicConstraints ``CA:FALSE`` (critical), KeyUsage ``digitalSignature``
  (critical; RSA adds ``keyEncipherment`` for TLS 1.2 RSA key transport),
  ExtendedKeyUsage ``serverAuth`` (and ``clientAuth`` for mutual TLS),
  subjectAltName, SubjectKeyIdentifier, AuthorityKeyIdentifier (= the intermediate's SKI).

Leaves live 90 days: Mozilla's profile recommends 90 and sslyze fails anything over
366.  Private keys are created with mode 0600 from the first byte (``os.open`` with
the mode, never a ``chmod`` afterwards, which would leave a window where the key is
world-readable).  These CAs are for a laboratory: never add the root to a trust
store you browse the real web with.
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
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from proxy.errors import ConfigError

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

CA_COMMON_NAME = "TLS Termination Lab development CA"
INTERMEDIATE_COMMON_NAME = "TLS Termination Lab intermediate CA"
ORGANIZATION = "TLS Termination Lab"
CA_DAYS = 3650  # like mkcert's CA: long enough that a course never sees it expire
INTERMEDIATE_DAYS = 1825  # shorter than the root's, as public intermediates are (never beyond it)
LEAF_DAYS = 90  # Mozilla's recommended_certificate_lifespan
BACKDATE = datetime.timedelta(hours=1)  # tolerate a little clock skew between lab hosts
RENEW_BEFORE = datetime.timedelta(days=7)  # ensure_demo_certs reissues leaves this close to expiry
LOCK_NAME = ".tlslab-pki.lock"
ROOT_STEM = "ca"  # ca.pem / ca.key
INTERMEDIATE_STEM = "intermediate"  # intermediate.pem / intermediate.key
LEAF_SUFFIX = ".leaf.pem"  # NAME.leaf.pem: the leaf without its intermediate

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
    # The CAs' own files, and NAME.leaf.pem, share the directory with the leaves.
    if name.lower() in (ROOT_STEM, INTERMEDIATE_STEM) or name.lower().endswith(".leaf"):
        raise ConfigError(f"{name!r} would overwrite the CA's files; choose another name")
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


def _ca_name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
        ]
    )


_CA_KEY_USAGE = x509.KeyUsage(
    digital_signature=False, content_commitment=False, key_encipherment=False,
    data_encipherment=False, key_agreement=False, key_cert_sign=True,
    crl_sign=True, encipher_only=False, decipher_only=False,
)


def _ski(cert: x509.Certificate) -> bytes:
    return cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest


def generate_ca(
    common_name: str = CA_COMMON_NAME, key_type: str = "ecdsa", *, path_length: int | None = None,
    days: int = CA_DAYS,
) -> tuple[x509.Certificate, PrivateKey]:
    """A self-signed root CA certificate and its key.

    ``path_length=None`` (no limit) lets it sign the intermediate; older versions of
    the lab made ``path_length=0`` roots that signed leaves directly (kept for tests
    that rebuild such a directory).
    """
    key = _new_key(key_type)
    name = _ca_name(common_name)
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(_CA_KEY_USAGE, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def generate_intermediate(
    root_cert: x509.Certificate,
    root_key: PrivateKey,
    common_name: str = INTERMEDIATE_COMMON_NAME,
    key_type: str = "ecdsa",
) -> tuple[x509.Certificate, PrivateKey]:
    """An intermediate CA signed by the root, allowed to sign leaves only (pathlen 0)."""
    key = _new_key(key_type)
    now = _now()
    not_after = min(now + datetime.timedelta(days=INTERMEDIATE_DAYS), root_cert.not_valid_after_utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_ca_name(common_name))
        .issuer_name(root_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_CA_KEY_USAGE, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(
                root_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
            ),
            critical=False,
        )
        .sign(root_key, hashes.SHA256())
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
    server: bool = True,
    not_after: datetime.datetime | None = None,
) -> tuple[x509.Certificate, PrivateKey]:
    """A leaf for ``names`` (DNS names and IP addresses), signed by ``ca_cert`` (the intermediate).

    The first name is also the subject CN (for people reading ``openssl x509``);
    clients match only the SANs (RFC 6125 §6.4.4).  ``client=True`` adds the
    clientAuth usage so the certificate also works for mutual TLS;
    ``server=False`` leaves serverAuth out (a client-only certificate, which a TLS
    client refuses from a server).  ``not_after`` (with the ``days`` before it)
    replaces "now + days": a date in the past makes an expired certificate.
    """
    if not names:
        raise ConfigError("a certificate needs at least one name")
    usages = ([ExtendedKeyUsageOID.SERVER_AUTH] if server else []) + (
        [ExtendedKeyUsageOID.CLIENT_AUTH] if client else []
    )
    if not usages:
        raise ConfigError("a certificate needs server or client authentication (or both)")
    sans = list(dict.fromkeys(_general_name(name) for name in names))  # de-duplicated, in order
    key = _new_key(key_type)
    first = sans[0].value
    common_name = first if isinstance(first, str) else str(first)
    # X.520's upper bound for a CN is 64 characters; a longer name lives in the SAN only.
    subject = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, common_name)] if len(common_name) <= 64 else []
    )
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    if not_after is None:
        not_before = _now() - BACKDATE
        not_after = min(_now() + datetime.timedelta(days=days), ca_cert.not_valid_after_utc)
    else:
        not_before = not_after - datetime.timedelta(days=days)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
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


def save_leaf(
    cert: x509.Certificate,
    key: PrivateKey,
    cert_path: str | os.PathLike[str],
    key_path: str | os.PathLike[str],
    chain: Sequence[x509.Certificate] = (),
) -> None:
    """Write a leaf as a server loads it: ``cert_path`` = leaf + ``chain``, plus ``NAME.leaf.pem``.

    The key comes first and the chain file last, so a complete ``cert_path`` means
    the key beside it belongs to it.
    """
    cert_path, key_path = Path(cert_path), Path(key_path)
    _write_atomic(key_path, _key_pem(key), 0o600)
    _write_atomic(leaf_path(cert_path), _cert_pem(cert), 0o644)
    _write_atomic(cert_path, b"".join(_cert_pem(c) for c in (cert, *chain)), 0o644)


def leaf_path(cert_path: str | os.PathLike[str]) -> Path:
    """``NAME.pem`` -> ``NAME.leaf.pem`` (the leaf without its intermediate)."""
    cert_path = Path(cert_path)
    return cert_path.with_name(cert_path.name.removesuffix(".pem") + LEAF_SUFFIX)


@contextlib.contextmanager
def _directory_lock(directory: Path) -> Iterator[None]:
    """Serialise writers in one directory (two test workers, or the demo started twice)."""
    fd = os.open(directory / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def leaf_der(path: str | os.PathLike[str]) -> bytes:
    """The DER of the first certificate of a PEM file: the leaf of a ``NAME.pem`` that holds
    leaf + intermediate, the certificate a client is shown as the peer's.

    (``ssl.PEM_cert_to_DER_cert`` takes one certificate only: given a chain, Python 3.11
    decodes garbage from it and 3.13 raises.)"""
    return _read_pem_cert(Path(path)).public_bytes(serialization.Encoding.DER)


def _read_pem_cert(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except OSError as error:
        raise ConfigError(f"{path}: cannot read ({error.strerror})") from None
    except ValueError:
        raise ConfigError(f"{path}: not a PEM certificate") from None


def _read_key(path: Path) -> PrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except OSError as error:
        raise ConfigError(f"{path}: cannot read ({error.strerror})") from None
    except (ValueError, TypeError):
        raise ConfigError(f"{path}: not an unencrypted PEM private key") from None
    if not isinstance(key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey)):
        raise ConfigError(f"{path}: unsupported key type (the lab uses ECDSA or RSA)")
    return key


def _is_one_level_root(root: x509.Certificate) -> bool:
    """A root from an older lab version: pathlen:0, so it may sign leaves but no intermediate."""
    try:
        return root.extensions.get_extension_for_class(x509.BasicConstraints).value.path_length == 0
    except x509.ExtensionNotFound:
        return True


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """Path building's question (RFC 5280 §4.2.1.1): did ``issuer``'s key sign ``cert``?"""
    try:
        aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
        cert.verify_directly_issued_by(issuer)
    except (x509.ExtensionNotFound, ValueError, TypeError, InvalidSignature):
        return False
    return aki == _ski(issuer)


@dataclass(frozen=True)
class Authority:
    """A directory's CAs: the root clients trust and the intermediate that signs leaves."""

    root: x509.Certificate
    intermediate: x509.Certificate
    intermediate_key: PrivateKey
    created: bool  # the root was created now


def _load_or_create_ca(directory: Path, *, replace_old: bool = False) -> Authority:
    """The directory's root and intermediate, created where missing; call with the lock held.

    A root from an older lab version (pathlen:0) cannot sign the intermediate:
    ``replace_old=True`` (the demo's directories) starts the directory's CAs again,
    otherwise that is a ConfigError, since replacing a root someone trusts is not
    ours to do quietly.  An intermediate that is missing or not signed by this root
    is issued again: leaves already written keep working, because each ``NAME.pem``
    carries the intermediate it was signed by.
    """
    root_path, root_key_path = directory / f"{ROOT_STEM}.pem", directory / f"{ROOT_STEM}.key"
    if root_path.exists() != root_key_path.exists():
        present, missing = (root_path, root_key_path) if root_path.exists() else (root_key_path, root_path)
        raise ConfigError(f"{present} exists but {missing} does not; remove {present} to start a new CA")
    root: x509.Certificate | None = None
    if root_path.exists():
        root, root_key = _read_pem_cert(root_path), _read_key(root_key_path)
        if _is_one_level_root(root):
            if not replace_old:
                raise ConfigError(
                    f"{root_path} is a one-level CA from an older version of the lab (pathlen:0, it cannot"
                    f" sign an intermediate); delete {directory} to start over"
                )
            root = None  # replaced below; its intermediate and leaves follow it
    created = root is None
    if root is None:
        root, root_key = generate_ca()
        _write_atomic(root_key_path, _key_pem(root_key), 0o600)  # key first: ca.pem marks the pair complete
        _write_atomic(root_path, _cert_pem(root), 0o644)

    path, key_path = directory / f"{INTERMEDIATE_STEM}.pem", directory / f"{INTERMEDIATE_STEM}.key"
    if path.exists() and not key_path.exists():
        raise ConfigError(f"{path} exists but {key_path} does not; remove {path} to issue a new intermediate")
    if path.exists():
        intermediate = _read_pem_cert(path)
        if _issued_by(intermediate, root):
            return Authority(root, intermediate, _read_key(key_path), created)
    intermediate, key = generate_intermediate(root, root_key)
    _write_atomic(key_path, _key_pem(key), 0o600)  # key first, again
    _write_atomic(path, _cert_pem(intermediate), 0o644)
    return Authority(root, intermediate, key, created)


def load_authority(directory: str | os.PathLike[str]) -> Authority:
    """The root and intermediate of a directory made by ``write_certs``/``ensure_demo_certs``.

    For lessons that issue special leaves (``course.certerrors``) with
    ``generate_leaf(authority.intermediate, authority.intermediate_key, ...)``.
    """
    directory = Path(directory)
    with _directory_lock(directory):
        return _load_or_create_ca(directory)


class IssuedCerts(dict[str, tuple[Path, Path]]):
    """``write_certs``'s answer: name -> (cert path, key path), plus what happened.

    ``written`` lists names issued now, ``kept`` names whose files already existed
    and were left alone (pass ``overwrite=True`` to reissue them).
    """

    def __init__(self, ca: Path, ca_created: bool) -> None:
        super().__init__()
        self.ca = ca
        self.intermediate = ca.with_name(f"{INTERMEDIATE_STEM}.pem")
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
    """Issue ``NAME.pem`` + ``NAME.key`` for each name into ``directory`` (CAs reused or created).

    Each certificate carries its own name plus ``extra_sans``.  ``NAME.pem`` holds
    the leaf followed by the intermediate (the chain a server sends),
    ``NAME.leaf.pem`` the leaf alone; the root is in ``ca.pem``.  Existing pairs
    are kept unless ``overwrite``; the root is never replaced (delete the
    directory to start over).
    """
    if not names:
        raise ConfigError("name at least one certificate to issue")
    if key_type not in ("ecdsa", "rsa"):
        raise ConfigError(f"unknown key type {key_type!r} (use 'ecdsa' or 'rsa')")
    for name in [*names, *extra_sans]:
        _general_name(name)  # fail before writing anything
    for name in names:
        file_stem(name)
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(f"{directory}: cannot create directory ({error.strerror})") from None
    with _directory_lock(directory):
        authority = _load_or_create_ca(directory)
        return _issue_locked(directory, authority, names, key_type, overwrite, extra_sans, client)


def _issue_locked(
    directory: Path, authority: Authority, names: Sequence[str], key_type: str, overwrite: bool,
    extra_sans: Sequence[str], client: bool,
) -> IssuedCerts:
    """``write_certs`` with the directory lock held."""
    issued = IssuedCerts(directory / f"{ROOT_STEM}.pem", authority.created)
    for name in names:
        cert_path, key_path = _pair(directory, name)
        issued[name] = (cert_path, key_path)
        if not overwrite and (cert_path.exists() or key_path.exists()):
            if not (cert_path.exists() and key_path.exists()):
                raise ConfigError(f"{cert_path} or {key_path} is missing; use --force to reissue both")
            issued.kept.append(name)
            continue
        cert, key = generate_leaf(
            authority.intermediate, authority.intermediate_key, [name, *extra_sans], key_type=key_type, client=client
        )
        save_leaf(cert, key, cert_path, key_path, chain=[authority.intermediate])
        issued.written.append(name)
    return issued


def _pair(directory: Path, name: str) -> tuple[Path, Path]:
    stem = file_stem(name)
    return directory / f"{stem}.pem", directory / f"{stem}.key"


# --------------------------------------------------------------------------- the demo's certificates
@dataclass(frozen=True)
class DemoPKI:
    """Paths of the demo's CAs and certificates (see ``ensure_demo_certs``).

    ``ca`` is the root alone (what clients trust); each ``*_cert`` is a chain file,
    leaf + intermediate (what servers load).
    """

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
    intermediate: Path  # the intermediate CA alone (it is also in every *_cert file)

    def files(self, name: str) -> tuple[str, str]:
        """(cert chain, key) paths by certificate name, e.g. ``files("api.example.test")``."""
        cert, key = _pair(self.directory, name)
        return str(cert), str(key)

    def leaf(self, name: str) -> str:
        """The path of ``NAME.leaf.pem``: the leaf without its intermediate."""
        return str(leaf_path(_pair(self.directory, name)[0]))


# name -> (extra SANs, key type, clientAuth?)
DEMO_CERTS: dict[str, tuple[tuple[str, ...], str, bool]] = {
    DEMO_WWW: ((), "ecdsa", False),
    DEMO_API: ((), "ecdsa", False),
    DEMO_ORIGIN: (("127.0.0.1", "::1", "localhost"), "ecdsa", False),
    DEMO_CLIENT: ((), "ecdsa", True),
    DEMO_WWW_RSA: ((), "rsa", False),
}


def _load_chain(path: Path) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(path.read_bytes())


def _stale_demo_names(directory: Path) -> list[str]:
    """Demo names whose files are missing, expire soon, or do not chain leaf -> intermediate -> root.

    A directory from an older lab version (leaves signed by a pathlen:0 root, no
    intermediate.pem) is stale as a whole.
    """
    try:
        root = x509.load_pem_x509_certificate((directory / f"{ROOT_STEM}.pem").read_bytes())
        intermediate = x509.load_pem_x509_certificate((directory / f"{INTERMEDIATE_STEM}.pem").read_bytes())
        keys_present = all((directory / f"{stem}.key").exists() for stem in (ROOT_STEM, INTERMEDIATE_STEM))
    except (OSError, ValueError):
        return list(DEMO_CERTS)
    if not keys_present or _is_one_level_root(root) or not _issued_by(intermediate, root):
        return list(DEMO_CERTS)
    stale = []
    deadline = _now() + RENEW_BEFORE
    for name in DEMO_CERTS:
        cert_path, key_path = _pair(directory, name)
        try:
            chain = _load_chain(cert_path)
            fresh = (
                len(chain) == 2  # leaf, then the intermediate; never the root (RFC 8446 §4.4.2)
                and chain[1] == intermediate
                and _issued_by(chain[0], intermediate)  # a leaf signed by the root is stale
                and chain[0].not_valid_after_utc > deadline
                and _load_chain(leaf_path(cert_path)) == chain[:1]
            )
        except (OSError, ValueError):
            fresh = False
        if not (fresh and key_path.exists()):
            stale.append(name)
    return stale


def ensure_demo_certs(directory: str | os.PathLike[str]) -> DemoPKI:
    """Make sure the demo's CAs and five certificates exist in ``directory``; return their paths.

    Idempotent: when every file is present, fresh and chains to the directory's
    CAs it only reads the certificates (a few milliseconds).  Otherwise it takes the
    directory lock, looks again (another process may have just done the work) and
    issues only what is missing or stale; an older one-level directory gets a new
    root, intermediate and leaves, once.
    """
    directory = Path(directory)
    if _stale_demo_names(directory):
        directory.mkdir(parents=True, exist_ok=True)
        with _directory_lock(directory):
            if not (directory / f"{ROOT_STEM}.pem").exists():
                # A key without its certificate is a crash between the two writes: start again.
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(directory / f"{ROOT_STEM}.key")
            if _stale_demo_names(directory):  # again: another process may have done it
                authority = _load_or_create_ca(directory, replace_old=True)
                for name in _stale_demo_names(directory):  # after a new intermediate: every leaf
                    extra, key_type, client = DEMO_CERTS[name]
                    _issue_locked(directory, authority, [name], key_type, True, extra, client)
    www, api, origin = _pair(directory, DEMO_WWW), _pair(directory, DEMO_API), _pair(directory, DEMO_ORIGIN)
    client, www_rsa = _pair(directory, DEMO_CLIENT), _pair(directory, DEMO_WWW_RSA)
    return DemoPKI(
        directory=directory, ca=directory / f"{ROOT_STEM}.pem",
        www_cert=www[0], www_key=www[1], api_cert=api[0], api_key=api[1],
        origin_cert=origin[0], origin_key=origin[1], client_cert=client[0], client_key=client[1],
        www_rsa_cert=www_rsa[0], www_rsa_key=www_rsa[1],
        intermediate=directory / f"{INTERMEDIATE_STEM}.pem",
    )


def spki_sha256_base64(cert_path: str | os.PathLike[str]) -> str:
    """base64(SHA-256(SubjectPublicKeyInfo)) of a PEM certificate (the first one in a chain file).

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
    parser.add_argument(
        "--dir", default="certs", help="where ca.pem, intermediate.pem and NAME.pem/.key go (default: certs)"
    )
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
    print(f"intermediate  {issued.intermediate}  (signs the leaves; servers send it after the leaf)")
    for name, (cert_path, key_path) in issued.items():
        if name in issued.kept:
            print(f"kept     {cert_path}  (exists; --force reissues it)")
        else:
            print(f"wrote    {cert_path} (leaf + intermediate)  {key_path}  (mode 0600)")
    first_cert = next(iter(issued.values()))[0]
    print("\ninspect:  openssl x509 -in", first_cert, "-noout -text")
    print("verify:   openssl verify -CAfile", issued.ca, "-untrusted", issued.intermediate, first_cert)
    print("trust it: curl --cacert", issued.ca, "https://NAME:PORT/")
    return 0
