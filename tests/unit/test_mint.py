"""proxy/tls/mint.py: the interception CA, leaves minted per host, and the bounded, thread-safe cache.

Certificates are checked by ``cryptography``'s own strict path validator (the
WebPKI profile: SAN, EKU, AKI, BasicConstraints all enforced) and by real TLS
handshakes over a socketpair, not by reading back the fields we just wrote alone.
"""

from __future__ import annotations

import datetime
import ipaddress
import socket
import ssl
import stat
import threading

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from proxy.errors import ConfigError
from proxy.tls import mint

HOST = "shop.example.test"


@pytest.fixture(scope="module")
def ca_files(tmp_path_factory):
    return mint.make_ca(tmp_path_factory.mktemp("ica"))


@pytest.fixture(scope="module")
def ca(ca_files) -> mint.InterceptionCA:
    return mint.load_ca(str(ca_files[0]), str(ca_files[1]))


def verify(ca: mint.InterceptionCA, leaf: x509.Certificate, name: x509.GeneralName) -> list[x509.Certificate]:
    verifier = PolicyBuilder().store(Store([ca.cert])).build_server_verifier(name)
    return verifier.verify(leaf, [])


def handshake(context: ssl.SSLContext, client: ssl.SSLContext, server_name: str | None):
    """One TLS handshake over a socketpair; returns (client error or None, certificate the client saw)."""
    server_sock, client_sock = socket.socketpair()
    server_sock.settimeout(5)
    client_sock.settimeout(5)

    def serve():
        try:
            with context.wrap_socket(server_sock, server_side=True) as tls:
                tls.recv(1)
        except (ssl.SSLError, OSError):
            pass
        finally:
            server_sock.close()

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        with client.wrap_socket(client_sock, server_hostname=server_name) as tls:
            seen = tls.getpeercert()
            tls.sendall(b"x")
        return None, seen
    except (ssl.SSLError, OSError) as error:
        return error, None
    finally:
        client_sock.close()
        thread.join(10)


# --------------------------------------------------------------------------- the CA
def test_make_ca_writes_a_lab_ca_that_signs_leaves_only(ca, ca_files):
    constraints = ca.cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca and constraints.value.path_length == 0
    usage = ca.cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign and usage.crl_sign
    assert ca.cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == \
        "TLS Lab Interception CA \u2014 lab only"
    assert stat.S_IMODE(ca_files[1].stat().st_mode) == 0o600
    with pytest.raises(ConfigError, match="exists already"):
        mint.make_ca(ca_files[0].parent)  # never replace a CA clients already trust


def test_load_ca_refuses_a_leaf_and_a_key_from_elsewhere(ca, ca_files, tmp_path):
    other = mint.make_ca(tmp_path / "other")
    with pytest.raises(ConfigError, match="does not belong"):
        mint.load_ca(str(ca_files[0]), str(other[1]))
    leaf, key = mint.mint_leaf(ca, HOST)
    leaf_path = tmp_path / "leaf.pem"
    leaf_path.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    with pytest.raises(ConfigError, match="is not a CA"):
        mint.load_ca(str(leaf_path), str(other[1]))
    with pytest.raises(ConfigError, match="cannot read"):
        mint.load_ca(str(tmp_path / "missing.pem"), str(other[1]))


# --------------------------------------------------------------------------- one leaf
def test_a_leaf_for_a_name(ca):
    leaf, key = mint.mint_leaf(ca, "Shop.Example.TEST.")
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"
    assert leaf.issuer == ca.cert.subject
    assert leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName) == [HOST]  # normalised: lower case, no root dot
    assert leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value == \
        x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH])
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    aki = leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == ca.ski.digest
    lifetime = leaf.not_valid_after_utc - leaf.not_valid_before_utc
    assert lifetime == mint.LEAF_LIFETIME + mint.BACKDATE
    assert verify(ca, leaf, x509.DNSName(HOST))[-1] == ca.cert  # a strict WebPKI validator agrees
    with pytest.raises(VerificationError):
        verify(ca, leaf, x509.DNSName("other.example.test"))


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "[::1]"])
def test_a_leaf_for_an_ip_address_has_an_ip_address_san(ca, host):
    leaf, _ = mint.mint_leaf(ca, host)
    address = ipaddress.ip_address(host.strip("[]"))
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.IPAddress) == [address] and not sans.get_values_for_type(x509.DNSName)
    verify(ca, leaf, x509.IPAddress(address))


def test_a_name_too_long_for_the_cn_lives_in_a_critical_san(ca):
    host = "a" * 60 + ".example.test"
    leaf, _ = mint.mint_leaf(ca, host)
    assert len(leaf.subject) == 0
    assert leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).critical  # RFC 5280 §4.2.1.6


@pytest.mark.parametrize("host", ["", "a..b", "x" * 64 + ".test", "a" * 254])
def test_what_is_no_host_name_is_refused(ca, host):
    with pytest.raises(ValueError):
        mint.mint_leaf(ca, host)


def test_the_leaf_never_outlives_the_ca(ca):
    late = ca.cert.not_valid_after_utc - datetime.timedelta(hours=2)
    leaf, _ = mint.mint_leaf(ca, HOST, now=late)
    assert leaf.not_valid_after_utc == ca.cert.not_valid_after_utc


# --------------------------------------------------------------------------- the cache
def test_a_context_serves_the_minted_certificate_to_a_client_that_trusts_the_ca(ca, ca_files):
    minter = mint.Minter(ca, keylog="")
    client = ssl.create_default_context(cafile=str(ca_files[0]))
    error, seen = handshake(minter.context_for(HOST), client, HOST)
    assert error is None, error
    assert seen["subjectAltName"] == (("DNS", HOST),)
    untrusting = ssl.create_default_context()  # the system store: no interception CA in it
    error, _ = handshake(minter.context_for(HOST), untrusting, HOST)
    assert isinstance(error, ssl.SSLCertVerificationError) and "unable to get local issuer" in error.verify_message


def test_a_client_hello_naming_another_host_is_refused(ca, ca_files):
    minter = mint.Minter(ca, keylog="")
    client = ssl.create_default_context(cafile=str(ca_files[0]))
    client.check_hostname = False  # so that only the proxy's SNI check can refuse it
    error, _ = handshake(minter.context_for(HOST), client, "bank.example.test")
    assert isinstance(error, ssl.SSLError) and "UNRECOGNIZED_NAME" in str(error)


def test_the_cache_returns_the_same_context_and_forgets_the_least_recently_used(ca):
    minter = mint.Minter(ca, capacity=2, keylog="")
    first = minter.context_for("a.example.test")
    assert minter.context_for("A.Example.Test") is first  # one entry per name, however spelt
    minter.context_for("b.example.test")
    minter.context_for("a.example.test")  # a is now the most recently used
    minter.context_for("c.example.test")  # evicts b
    assert list(minter.cache) == ["a.example.test", "c.example.test"]
    assert minter.context_for("a.example.test") is first
    assert (minter.minted, minter.hits) == (3, 3)


def test_an_entry_past_half_its_lifetime_is_minted_again(ca):
    minter = mint.Minter(ca, lifetime=datetime.timedelta(0), keylog="")  # renews at once
    first = minter.certificate_for(HOST)
    assert minter.certificate_for(HOST).serial_number != first.serial_number
    assert len(minter.cache) == 1


def test_threads_asking_at_once_get_one_context(ca):
    minter = mint.Minter(ca, keylog="")
    barrier, results = threading.Barrier(8), []

    def ask():
        barrier.wait(5)
        results.append(minter.context_for(HOST))

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(results) == 8 and all(context is results[0] for context in results)
    assert len(minter.cache) == 1 and minter.minted == 1


def test_python_m_proxy_tls_mint_makes_a_ca(tmp_path, capsys):
    assert mint.main(["--make-ca", str(tmp_path / "lab")]) == 0
    out, err = capsys.readouterr()
    assert out.split() == [str(tmp_path / "lab" / mint.CA_CERT_FILE), str(tmp_path / "lab" / mint.CA_KEY_FILE)]
    assert "WARNING" in err
    assert mint.main(["--make-ca", str(tmp_path / "lab")]) == 2  # refuses to replace it
