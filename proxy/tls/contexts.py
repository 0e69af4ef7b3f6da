"""Every ``ssl.SSLContext`` the proxy itself uses is built here, and only here.

Theory of operation
-------------------
An ``SSLContext`` is OpenSSL's ``SSL_CTX``: the configuration that every connection
made from it shares (protocol versions, cipher suites, key-exchange groups,
certificates, ALPN, session ticket keys).  Keeping all of them in one module, with
keyword-only options and safe defaults (as mitmproxy's ``net/tls.py`` does), means a
student reads the proxy's whole TLS policy in one sitting, and a weak setting cannot
hide in a corner of the server code.

Nothing else in ``proxy/`` builds one: the client leg takes its context from
``server_context``, the backend leg and the health checks from ``client_context``.
The course's servers come
from here too (the demo origins, ``course.handshakes``, the lab harness), so they
speak the proxy's policy.  Two kinds of context do not, on purpose:

* The course's clients build theirs as a stock client would, with
  ``ssl.create_default_context()``: they are the other party of the conversation, an
  independent implementation, not a second copy of our policy, and that is the one
  context that reads ``SSLKEYLOGFILE``, as curl and Firefox do, which the capture
  lessons rely on.  They are ``course.clients`` (the notebooks' curl),
  ``course.capture.client`` (the lab client whose secrets decrypt the capture),
  ``course.bench.loadgen`` (the benchmark's load, one TLS version pinned, as wrk
  would be), ``course.diagrams`` (traffic for the status-page screenshot) and the
  client of ``course.capture.secrecy``.
* ``course.capture.secrecy`` also builds a TLS 1.2 static-RSA *server*, the one thing
  this module will not build: the forward-secrecy lesson shows what the server's key
  alone decrypts when a suite without forward secrecy is allowed.

``tests/unit/test_contexts.py`` keeps that list true: it finds every place that builds
a context and fails on one this docstring does not name.

``server_context`` follows Mozilla's "intermediate" profile (Server Side TLS 5.7,
https://ssl-config.mozilla.org/), which sslyze checks in
``tests/integration/test_tls_profile.py``:

* TLS 1.2 and 1.3 only.  RFC 8996 deprecates TLS 1.0 and 1.1 (SHA-1 in the
  handshake signature, CBC suites open to BEAST/Lucky13).
* TLS 1.2 suites are ECDHE (forward secrecy) with an AEAD cipher (AES-GCM,
  ChaCha20-Poly1305); no CBC, so no padding oracles (Lucky13, POODLE's cousins).
  TLS 1.3 suites are all AEAD already (RFC 8446 §9.1 and OpenSSL's defaults match
  Mozilla's list).
* The client picks the cipher: every suite left is strong, and a phone without
  AES hardware rightly prefers ChaCha20 (Mozilla: ``ssl_prefer_server_ciphers off``).
  The ClientHello lists suites "in the client's order of preference" (RFC 5246
  §7.4.1.2, RFC 8446 §4.1.2); the server simply takes the first one it supports.
* Key-exchange groups X25519, P-256, P-384 only (see ``_restrict_groups``).
* No renegotiation (TLS 1.2's renegotiation is a CPU-exhaustion lever and was the
  vehicle of the 2009 prefix-injection attack, RFC 5746; TLS 1.3 removed it).
* The extended master secret (RFC 7627, against the triple-handshake attack) and
  TLS_FALLBACK_SCSV (RFC 7507) are OpenSSL defaults; nothing to do here.

One context per certificate, chosen by SNI (RFC 6066 §3)::

    ClientHello(server_name="api.example.test")
        └─▶ sni_callback on the *default* context (the first certificate)
              └─▶ sslobj.context = the context whose certificate names match
                    (exact name first, then a "*.example.test" wildcard;
                     no match or no SNI: stay on the default)

OpenSSL keeps the *first* context as the connection's "session context", so
session tickets are sealed with the default context's ticket key whatever
certificate was served, and a ticket issued on one name resumes on that name again
(RFC 8446 §4.6.1; RFC 5077 for TLS 1.2).  Python's key log and message callbacks
are read from the *current* context, so every per-certificate context gets the key
log file too, and the SNI callback carries a message callback (``tls/trace``) set
on the default context over to the context it switches to.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import ssl
import sys
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from proxy.errors import ConfigError

log = logging.getLogger(__name__)

VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}

# Mozilla intermediate, TLS 1.2 (OpenSSL names), without the DHE-RSA suites: finite-field
# DHE needs 2048-bit parameters to be configured and is slower than ECDHE for no gain.
INTERMEDIATE_CIPHERS = ":".join(
    [
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
    ]
)

# Mozilla intermediate ``ssl_ecdh_curve X25519:prime256v1:secp384r1``, in OpenSSL's names.
GROUPS = "X25519:P-256:P-384"
GROUP_IDS = (0x001D, 0x0017, 0x0018)  # the same three as IANA TLS Supported Groups codepoints
FALLBACK_GROUP = "prime256v1"  # what set_ecdh_curve can do when the list cannot be set


@dataclass(frozen=True)
class CertKey:
    """A certificate chain file and its private key; ``names`` empty = the certificate's SANs."""

    cert: str
    key: str
    names: tuple[str, ...] = ()


# --------------------------------------------------------------------------- server side
def server_context(
    certs: Sequence[CertKey],
    *,
    alpn: Sequence[str] | None = ("http/1.1",),
    keylog: str | None = None,
    min_version: str = "1.2",
    max_version: str = "1.3",
    client_ca: str | None = None,
    session_tickets: bool = True,
) -> ssl.SSLContext:
    """A server context with the Mozilla intermediate profile serving ``certs`` by SNI.

    The first certificate is the default (no SNI, or a name no certificate has).
    ``keylog=None`` reads ``SSLKEYLOGFILE``; ``keylog=""`` turns the key log off.
    ``client_ca`` requires a client certificate signed by it (mutual TLS).
    ``session_tickets=False`` stops tickets (TLS 1.2 falls back to session IDs,
    TLS 1.3 then has no resumption at all).
    """
    if not certs:
        raise ConfigError("a TLS listener needs at least one certificate")
    versions = _versions(min_version, max_version)
    keylog_path = _keylog_path(keylog)

    def build(pair: CertKey) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version, context.maximum_version = versions
        context.set_ciphers(INTERMEDIATE_CIPHERS)
        context.options |= ssl.OP_NO_RENEGOTIATION | ssl.OP_NO_COMPRESSION  # CRIME: RFC 7457 §2.6
        context.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE  # Python sets it; Mozilla says client chooses
        _restrict_groups(context)
        if not session_tickets:
            context.options |= ssl.OP_NO_TICKET
            context.num_tickets = 0
        if alpn:
            context.set_alpn_protocols(list(alpn))
        if client_ca:
            context.verify_mode = ssl.CERT_REQUIRED
            context.verify_flags |= ssl.VERIFY_X509_STRICT
            _load_verify(context, client_ca, "client CA")
        _set_keylog(context, keylog_path)
        _load_cert_key(context, pair.cert, pair.key)
        return context

    built = [build(pair) for pair in certs]
    default = built[0]
    exact: dict[str, ssl.SSLContext] = {}
    wildcard: dict[str, ssl.SSLContext] = {}  # "example.test" -> context of "*.example.test"
    for pair, context in zip(certs, built):
        for name in pair.names or _certificate_names(pair.cert):
            name = name.lower().rstrip(".")
            table, key = (wildcard, name[2:]) if name.startswith("*.") else (exact, name)
            table.setdefault(key, context)  # on a tie, the earlier certificate wins
    default.sni_callback = _sni_callback(default, exact, wildcard)
    return default


def _sni_callback(
    default: ssl.SSLContext, exact: dict[str, ssl.SSLContext], wildcard: dict[str, ssl.SSLContext]
) -> Callable[[ssl.SSLObject, str | None, ssl.SSLContext], None]:
    def choose(sslobj: ssl.SSLObject, server_name: str | None, _context: ssl.SSLContext) -> None:
        # server_name arrives as an A-label ("xn--..."), or None when the client sent no SNI.
        _SERVER_NAMES[sslobj] = server_name
        if not server_name:
            return
        name = server_name.lower().rstrip(".")
        # RFC 6125 §6.4.3: "*" matches exactly one whole left-most label, so
        # "*.example.test" covers "a.example.test" but not "example.test" or "a.b.example.test".
        chosen = exact.get(name) or wildcard.get(name.partition(".")[2])
        if chosen is None or chosen is default:
            return  # RFC 6066 §3 lets the server go on with its default certificate
        # CPython reads the message callback and the key log from the connection's
        # *current* context: carry over what was set on the default one after building it
        # (tls/trace sets a message callback; a caller may set keylog_filename).
        # _msg_callback is a private CPython hook: feature-detect it (proxy.tls.trace).
        callback = getattr(default, "_msg_callback", None)
        if callback is not None and getattr(chosen, "_msg_callback", None) is not callback:
            chosen._msg_callback = callback
        if chosen.keylog_filename != default.keylog_filename:
            chosen.keylog_filename = default.keylog_filename
        sslobj.context = chosen  # SSL_set_SSL_CTX: certificate and key switch; ALPN follows

    return choose


# The SNI each server-side connection asked for, for describe(); weak, so no connection leaks.
_SERVER_NAMES: weakref.WeakKeyDictionary[object, str | None] = weakref.WeakKeyDictionary()


# --------------------------------------------------------------------------- client side
def client_context(
    *,
    ca: str | None = None,
    cert: str | None = None,
    key: str | None = None,
    alpn: Sequence[str] | None = None,
    keylog: str | None = None,
    verify: bool = True,
    min_version: str = "1.2",
    max_version: str = "1.3",
) -> ssl.SSLContext:
    """A client context for the proxy's backend leg (re-encrypt, health checks).

    ``verify`` checks the chain against ``ca`` (or the system store without one)
    and the host name; ``verify=False`` is for labs that show what goes wrong.
    ``cert``/``key`` present a client certificate (mutual TLS).
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED and check_hostname on
    context.minimum_version, context.maximum_version = _versions(min_version, max_version)
    context.options |= ssl.OP_NO_RENEGOTIATION
    if verify:
        # What CPython 3.13's create_default_context() adds: reject certificates that
        # break RFC 5280 (no AKI, CA:TRUE leaves, ...); proxy/pki.py issues conforming ones.
        context.verify_flags |= ssl.VERIFY_X509_STRICT
        if ca:
            _load_verify(context, ca, "CA")
        else:
            context.load_default_certs(ssl.Purpose.SERVER_AUTH)
    else:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if cert:
        _load_cert_key(context, cert, key or cert)
    elif key:
        raise ConfigError(f"client key {key} given without a client certificate")
    if alpn:
        context.set_alpn_protocols(list(alpn))
    _set_keylog(context, _keylog_path(keylog))
    return context


def describe(sslsock: ssl.SSLSocket | ssl.SSLObject) -> dict[str, object]:
    """The negotiated parameters for an access log line (call it right after the handshake)."""
    cipher = sslsock.cipher()
    if sslsock.server_side:
        server_name = _SERVER_NAMES.get(sslsock)
    else:
        server_name = sslsock.server_hostname
    return {
        "version": sslsock.version(),
        "cipher": cipher[0] if cipher else None,
        "alpn": sslsock.selected_alpn_protocol(),
        "server_name": server_name,
        "session_reused": sslsock.session_reused,
    }


# --------------------------------------------------------------------------- options and files
def _versions(min_version: str, max_version: str) -> tuple[ssl.TLSVersion, ssl.TLSVersion]:
    try:
        low, high = VERSIONS[min_version], VERSIONS[max_version]
    except KeyError as error:
        raise ConfigError(
            f"TLS version {error.args[0]!r} is not offered; use '1.2' or '1.3' (RFC 8996 retired 1.0 and 1.1)"
        ) from None
    if low > high:
        raise ConfigError(f"TLS min_version {min_version} is above max_version {max_version}")
    return low, high


def _keylog_path(keylog: str | None) -> str | None:
    # ssl.create_default_context() honours SSLKEYLOGFILE; a bare SSLContext does not, so we do.
    if keylog is None:
        keylog = os.environ.get("SSLKEYLOGFILE") if not sys.flags.ignore_environment else None
    return keylog or None


def _set_keylog(context: ssl.SSLContext, path: str | None) -> None:
    if not path:
        return
    try:
        context.keylog_filename = path  # NSS key log format; Wireshark and scapy read it
    except OSError as error:
        raise ConfigError(f"key log file {path}: cannot open ({error.strerror})") from None


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{what} file {path}: not found") from None
    except OSError as error:
        raise ConfigError(f"{what} file {path}: cannot read ({error.strerror})") from None


def _load_cert_key(context: ssl.SSLContext, cert: str, key: str) -> None:
    """``load_cert_chain`` with a one-line ConfigError that names the file at fault."""
    cert_pem, key_pem = _read(cert, "certificate"), _read(key, "private key")

    def no_passphrase() -> bytes:  # without it OpenSSL would prompt on the terminal
        raise ConfigError(f"private key file {key}: encrypted; the lab expects an unencrypted key")

    try:
        context.load_cert_chain(cert, key, password=no_passphrase)
    except ssl.SSLError as error:
        raise ConfigError(_explain_load_error(cert, key, cert_pem, key_pem, error)) from None


def _explain_load_error(cert: str, key: str, cert_pem: bytes, key_pem: bytes, error: ssl.SSLError) -> str:
    if error.reason == "KEY_VALUES_MISMATCH":
        return f"private key file {key} does not belong to the certificate in {cert}"
    try:
        x509.load_pem_x509_certificates(cert_pem)
    except ValueError:
        return f"certificate file {cert}: no valid PEM certificate in it"
    try:
        serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        return f"private key file {key}: no valid PEM private key in it"
    return f"certificate {cert} with key {key}: {error.reason or error}"


def _load_verify(context: ssl.SSLContext, cafile: str, what: str) -> None:
    _read(cafile, what)
    try:
        context.load_verify_locations(cafile=cafile)
    except ssl.SSLError as error:
        raise ConfigError(f"{what} file {cafile}: no valid PEM certificate in it ({error.reason})") from None


def _certificate_names(cert: str) -> list[str]:
    """The DNS names a certificate is valid for: its SAN dNSNames, else its CN."""
    leaf = x509.load_pem_x509_certificates(_read(cert, "certificate"))[0]
    try:
        return leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
            x509.DNSName
        )
    except x509.ExtensionNotFound:
        return [str(a.value) for a in leaf.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)]


# --------------------------------------------------------------------------- key-exchange groups
# Why: OpenSSL 3.0's default group list also offers X448, secp521r1 and the ffdhe
# groups.  They are not weak, but Mozilla's profile lists X25519, P-256 and P-384 only
# and sslyze reports a server that accepts more as non-compliant.  nginx restricts the
# list with ``ssl_ecdh_curve X25519:prime256v1:secp384r1``, which calls OpenSSL's
# SSL_CTX_set1_groups_list().  Python 3.11 has no such API: ``set_ecdh_curve`` takes
# one curve.  So we call the OpenSSL function ourselves, through ctypes, on the very
# libssl that Python's _ssl module loaded, on the SSL_CTX* inside the SSLContext.
# SSL_CTX_set1_groups_list is a macro for SSL_CTX_ctrl(ctx, SSL_CTRL_SET_GROUPS_LIST, 0, list).
_SSL_CTRL_SET_GROUPS_LIST = 92  # <openssl/ssl.h>


def _restrict_groups(context: ssl.SSLContext) -> None:
    if _native_groups() and _set_groups_list(context):
        return
    # Fallback (not CPython, a static _ssl, or the probe failed): one group is all
    # Python can set.  P-256 is the one every client supports; still compliant, but a
    # client whose first key share is X25519 pays one HelloRetryRequest (RFC 8446 §4.1.4).
    context.set_ecdh_curve(FALLBACK_GROUP)


def key_exchange_groups() -> tuple[str, ...]:
    """The groups server contexts accept on this machine (for notebooks and the status page)."""
    return tuple(GROUPS.split(":")) if _native_groups() else ("P-256",)


@functools.cache
def _libssl() -> ctypes.CDLL | None:
    """libssl as already loaded by CPython's _ssl module, checked to be the same OpenSSL."""
    if sys.implementation.name != "cpython":
        return None
    import _ssl

    candidates = [getattr(_ssl, "__file__", None)]
    try:  # an _ssl linked statically into python: find the libssl in our own memory map
        with open("/proc/self/maps") as maps:
            candidates += sorted({line.split()[-1] for line in maps if "/libssl" in line})
    except OSError:
        pass
    for path in filter(None, candidates):
        try:
            # RTLD_NOLOAD: only hand back a library already in the process, never a second copy;
            # symbols resolve through _ssl's own dependencies (its libssl and libcrypto).
            lib = ctypes.CDLL(path, mode=os.RTLD_NOLOAD | os.RTLD_LAZY)
            lib.OpenSSL_version_num.restype = ctypes.c_ulong
            if lib.OpenSSL_version_num() != ssl.OPENSSL_VERSION_NUMBER:
                continue
            lib.SSL_CTX_ctrl.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_long, ctypes.c_void_p]
            lib.SSL_CTX_ctrl.restype = ctypes.c_long
            lib.SSL_CTX_get_options.argtypes = [ctypes.c_void_p]
            lib.SSL_CTX_get_options.restype = ctypes.c_uint64
            return lib
        except (OSError, AttributeError):
            continue
    return None


def _ssl_ctx_pointer(context: ssl.SSLContext) -> int | None:
    """The SSL_CTX* of ``context``: CPython's PySSLContext is ``PyObject_HEAD; SSL_CTX *ctx; ...``."""
    import _ssl

    if _ssl._SSLContext.__basicsize__ < object.__basicsize__ + ctypes.sizeof(ctypes.c_void_p):
        return None
    return ctypes.c_void_p.from_address(id(context) + object.__basicsize__).value


def _set_groups_list(context: ssl.SSLContext) -> bool:
    lib, pointer = _libssl(), _ssl_ctx_pointer(context)
    if lib is None or not pointer:
        return False
    # Sanity check that the pointer is this context's SSL_CTX: OpenSSL must report the
    # same option bits that Python reports for the context.
    if lib.SSL_CTX_get_options(pointer) != context.options:
        return False
    return lib.SSL_CTX_ctrl(pointer, _SSL_CTRL_SET_GROUPS_LIST, 0, GROUPS.encode("ascii")) == 1


@functools.cache
def _native_groups() -> bool:
    """Probe once: does setting the list through ctypes change what OpenSSL sends?

    A client context with the list applied must offer exactly X25519, P-256, P-384 in
    its ClientHello's supported_groups extension (RFC 8446 §4.2.7).  The ClientHello
    is produced into a memory BIO: no socket, no peer.
    """
    try:
        probe = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        probe.check_hostname, probe.verify_mode = False, ssl.CERT_NONE
        if not _set_groups_list(probe):
            raise OSError("SSL_CTX_set1_groups_list unavailable")
        outgoing = ssl.MemoryBIO()
        sslobj = probe.wrap_bio(ssl.MemoryBIO(), outgoing)
        try:
            sslobj.do_handshake()
        except ssl.SSLWantReadError:
            pass
        offered = _client_hello_groups(outgoing.read())
        if offered != GROUP_IDS:
            raise OSError(f"groups offered after the change: {offered}")
        return True
    except Exception as error:  # any surprise means: do not poke at OpenSSL, use the fallback
        log.warning("cannot restrict TLS groups to %s (%s); accepting only %s", GROUPS, error, FALLBACK_GROUP)
        return False


def _client_hello_groups(record: bytes) -> tuple[int, ...]:
    """The supported_groups list of the ClientHello in ``record`` (RFC 8446 §4.1.2, §4.2.7)."""
    hello = record[5 + 4 :]  # record header, handshake header
    at = 2 + 32  # legacy_version, random
    at += 1 + hello[at]  # legacy_session_id
    at += 2 + int.from_bytes(hello[at : at + 2], "big")  # cipher_suites
    at += 1 + hello[at]  # legacy_compression_methods
    end = at + 2 + int.from_bytes(hello[at : at + 2], "big")
    at += 2
    while at + 4 <= end:
        kind, size = int.from_bytes(hello[at : at + 2], "big"), int.from_bytes(hello[at + 2 : at + 4], "big")
        if kind == 10:  # supported_groups: a 2-byte length, then 2-byte group ids
            body = hello[at + 6 : at + 4 + size]
            return tuple(int.from_bytes(body[i : i + 2], "big") for i in range(0, len(body), 2))
        at += 4 + size
    return ()
