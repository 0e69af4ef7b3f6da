"""proxy/pki.py: the development CA, leaf certificates, files on disk, the CLI."""

from __future__ import annotations

import datetime
import ipaddress
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from course import cli
from proxy import pki
from proxy.errors import ConfigError
from tests.tools import require_tool

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def ca() -> tuple[x509.Certificate, pki.PrivateKey]:
    return pki.generate_ca()


def ext(cert: x509.Certificate, kind: type) -> x509.Extension:
    return cert.extensions.get_extension_for_class(kind)


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def server_verifier(ca_cert: x509.Certificate, name: str):
    try:
        subject = x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        subject = x509.DNSName(name)
    return PolicyBuilder().store(Store([ca_cert])).build_server_verifier(subject)


# --------------------------------------------------------------------------- certificates
def test_ca_is_a_self_signed_ca_limited_to_signing_leaves(ca):
    cert, key = ca
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"
    constraints = ext(cert, x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca and constraints.value.path_length == 0
    usage = ext(cert, x509.KeyUsage)
    assert usage.critical and usage.value.key_cert_sign and usage.value.crl_sign
    assert cert.subject == cert.issuer
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == pki.CA_COMMON_NAME
    cert.verify_directly_issued_by(cert)  # the self-signature is valid
    assert cert.not_valid_after_utc - cert.not_valid_before_utc > datetime.timedelta(days=365)


def test_leaf_sans_cover_dns_ipv4_and_ipv6(ca):
    leaf, _ = pki.generate_leaf(*ca, ["origin.example.test", "127.0.0.1", "::1", "localhost"])
    san = ext(leaf, x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["origin.example.test", "localhost"]
    assert san.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    ]
    assert leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "origin.example.test"
    # The chain verifies for every one of those identities, and for no other.
    for name in ("origin.example.test", "localhost", "127.0.0.1", "::1"):
        server_verifier(ca[0], name).verify(leaf, [])
    for name in ("www.example.test", "127.0.0.2", "::2"):
        with pytest.raises(VerificationError):
            server_verifier(ca[0], name).verify(leaf, [])


def test_leaf_extensions_are_those_strict_verifiers_demand(ca):
    leaf, key = pki.generate_leaf(*ca, ["www.example.test"])
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"
    constraints = ext(leaf, x509.BasicConstraints)
    assert constraints.critical and not constraints.value.ca
    usage = ext(leaf, x509.KeyUsage)
    assert usage.critical and usage.value.digital_signature
    assert not usage.value.key_cert_sign and not usage.value.key_encipherment
    assert list(ext(leaf, x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.SERVER_AUTH]
    ca_ski = ext(ca[0], x509.SubjectKeyIdentifier).value.digest
    assert ext(leaf, x509.AuthorityKeyIdentifier).value.key_identifier == ca_ski
    assert ext(leaf, x509.SubjectKeyIdentifier).value.digest == x509.SubjectKeyIdentifier.from_public_key(
        key.public_key()
    ).digest
    lifetime = leaf.not_valid_after_utc - leaf.not_valid_before_utc
    assert datetime.timedelta(days=90) <= lifetime <= datetime.timedelta(days=90, hours=1)
    assert leaf.issuer == ca[0].subject


def test_rsa_leaf_is_2048_bits_and_allows_key_encipherment(ca):
    leaf, key = pki.generate_leaf(*ca, ["www-rsa.example.test"], key_type="rsa")
    assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == 2048
    assert ext(leaf, x509.KeyUsage).value.key_encipherment
    server_verifier(ca[0], "www-rsa.example.test").verify(leaf, [])


def test_client_flag_adds_client_auth_and_the_client_verifier_accepts_it(ca):
    leaf, _ = pki.generate_leaf(*ca, ["proxy-client"], client=True)
    assert list(ext(leaf, x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.SERVER_AUTH,
        ExtendedKeyUsageOID.CLIENT_AUTH,
    ]
    PolicyBuilder().store(Store([ca[0]])).build_client_verifier().verify(leaf, [])
    server_only, _ = pki.generate_leaf(*ca, ["www.example.test"])
    with pytest.raises(VerificationError):
        PolicyBuilder().store(Store([ca[0]])).build_client_verifier().verify(server_only, [])


def test_wildcard_and_unicode_names(ca):
    leaf, _ = pki.generate_leaf(*ca, ["*.wild.test", "bücher.test"])
    names = ext(leaf, x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    assert names == ["*.wild.test", "xn--bcher-kva.test"]  # IDNA A-label, as on the wire
    server_verifier(ca[0], "a.wild.test").verify(leaf, [])
    with pytest.raises(VerificationError):  # RFC 6125 §6.4.3: one label only
        server_verifier(ca[0], "a.b.wild.test").verify(leaf, [])


@pytest.mark.parametrize("bad", ["under_score.test", "-dash.test", "*.test", "a..b", "", "x" * 64 + ".test"])
def test_invalid_names_are_config_errors(ca, bad):
    with pytest.raises(ConfigError):
        pki.generate_leaf(*ca, [bad])


def test_unknown_key_type_is_a_config_error(ca):
    with pytest.raises(ConfigError, match="key type"):
        pki.generate_leaf(*ca, ["a.test"], key_type="dsa")


# --------------------------------------------------------------------------- files
def test_write_certs_files_modes_and_openssl_verify(tmp_path):
    old_umask = os.umask(0)  # the mode must come from os.open, not from a friendly umask
    try:
        issued = pki.write_certs(tmp_path, ["www.example.test"], extra_sans=["127.0.0.1"])
    finally:
        os.umask(old_umask)
    cert_path, key_path = issued["www.example.test"]
    assert (cert_path, key_path) == (tmp_path / "www.example.test.pem", tmp_path / "www.example.test.key")
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "ca.key").stat().st_mode) == 0o600
    assert stat.S_IMODE(cert_path.stat().st_mode) == 0o644
    assert issued.ca_created and issued.written == ["www.example.test"] and issued.kept == []
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*.tmp"))
    # NAME.pem holds the leaf only; the key is unencrypted PKCS#8 and matches it.
    assert cert_path.read_text().count("BEGIN CERTIFICATE") == 1
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    assert key.public_key() == load(cert_path).public_key()
    assert "BEGIN PRIVATE KEY" in key_path.read_text()

    openssl = require_tool("openssl")
    result = subprocess.run(
        [openssl, "verify", "-x509_strict", "-purpose", "sslserver", "-CAfile", tmp_path / "ca.pem", cert_path],
        capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 0 and ": OK" in result.stdout, result.stdout + result.stderr
    # Not a client certificate: OpenSSL's purpose check refuses it for client authentication.
    result = subprocess.run(
        [openssl, "verify", "-purpose", "sslclient", "-CAfile", tmp_path / "ca.pem", cert_path],
        capture_output=True, text=True, timeout=30,
    )
    assert result.returncode != 0 and "certificate purpose" in result.stdout + result.stderr


def test_existing_files_are_kept_unless_overwrite_and_the_ca_is_reused(tmp_path):
    first = pki.write_certs(tmp_path, ["a.test"])
    ca_pem = (tmp_path / "ca.pem").read_bytes()
    leaf_pem = (tmp_path / "a.test.pem").read_bytes()

    again = pki.write_certs(tmp_path, ["a.test", "b.test"])
    assert again.kept == ["a.test"] and again.written == ["b.test"] and not again.ca_created
    assert (tmp_path / "a.test.pem").read_bytes() == leaf_pem

    forced = pki.write_certs(tmp_path, ["a.test"], overwrite=True)
    assert forced.written == ["a.test"]
    assert (tmp_path / "a.test.pem").read_bytes() != leaf_pem
    assert (tmp_path / "ca.pem").read_bytes() == ca_pem  # one CA for everything issued here
    ca_cert = load(tmp_path / "ca.pem")
    for name, (cert_path, _) in [*first.items(), *again.items()]:
        server_verifier(ca_cert, name).verify(load(cert_path), [])


def test_half_a_pair_is_a_config_error(tmp_path):
    pki.write_certs(tmp_path, ["a.test"])
    (tmp_path / "a.test.key").unlink()
    with pytest.raises(ConfigError, match="a.test.key"):
        pki.write_certs(tmp_path, ["a.test"])
    (tmp_path / "ca.pem").unlink()
    with pytest.raises(ConfigError, match="ca.key exists but .*ca.pem does not"):
        pki.write_certs(tmp_path, ["b.test"])


def test_wildcard_file_name_and_path_names_refused(tmp_path):
    issued = pki.write_certs(tmp_path, ["*.wild.test"])
    assert issued["*.wild.test"][0].name == "_wildcard.wild.test.pem"
    with pytest.raises(ConfigError):
        pki.write_certs(tmp_path, ["../evil.test"])
    assert not (tmp_path.parent / "evil.test.pem").exists()


def test_spki_pin_matches_openssl(tmp_path):
    issued = pki.write_certs(tmp_path, ["pin.test"])
    cert_path = issued["pin.test"][0]
    openssl = require_tool("openssl")
    pipeline = (
        f"{openssl} x509 -in {cert_path} -pubkey -noout | {openssl} pkey -pubin -outform der"
        f" | {openssl} dgst -sha256 -binary | base64"
    )
    expected = subprocess.run(pipeline, shell=True, capture_output=True, text=True, check=True, timeout=30)
    assert pki.spki_sha256_base64(cert_path) == expected.stdout.strip()


# --------------------------------------------------------------------------- the demo set
def test_ensure_demo_certs_creates_everything_then_is_idempotent_and_fast(tmp_path):
    demo = pki.ensure_demo_certs(tmp_path / "pki")
    ca_cert = load(demo.ca)
    server_verifier(ca_cert, "www.example.test").verify(load(demo.www_cert), [])
    server_verifier(ca_cert, "api.example.test").verify(load(demo.api_cert), [])
    for name in ("origin.example.test", "127.0.0.1", "::1", "localhost"):
        server_verifier(ca_cert, name).verify(load(demo.origin_cert), [])
    PolicyBuilder().store(Store([ca_cert])).build_client_verifier().verify(load(demo.client_cert), [])
    assert load(demo.www_rsa_cert).public_key().key_size == 2048
    assert demo.files("api.example.test") == (str(demo.api_cert), str(demo.api_key))

    before = {p: p.stat().st_mtime_ns for p in demo.directory.iterdir()}
    start = time.perf_counter()
    again = pki.ensure_demo_certs(tmp_path / "pki")
    assert time.perf_counter() - start < 0.2
    assert again == demo
    assert {p: p.stat().st_mtime_ns for p in demo.directory.iterdir()} == before


def test_ensure_demo_certs_reissues_a_leaf_from_another_ca(tmp_path):
    demo = pki.ensure_demo_certs(tmp_path)
    stranger_ca = pki.generate_ca("someone else")
    leaf, key = pki.generate_leaf(*stranger_ca, ["api.example.test"])
    demo.api_cert.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    www_before = demo.www_cert.read_bytes()
    pki.ensure_demo_certs(tmp_path)
    server_verifier(load(demo.ca), "api.example.test").verify(load(demo.api_cert), [])
    assert demo.www_cert.read_bytes() == www_before  # only the stale one was touched


def test_ensure_demo_certs_is_safe_when_processes_race(tmp_path):
    code = "import sys; from proxy import pki; pki.ensure_demo_certs(sys.argv[1])"
    racers = [
        subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], cwd=REPO, stderr=subprocess.PIPE)
        for _ in range(4)
    ]
    for racer in racers:
        _, err = racer.communicate(timeout=60)
        assert racer.returncode == 0, err.decode()
    ca_cert = load(tmp_path / "ca.pem")
    for name in pki.DEMO_CERTS:
        cert_path, key_path = pki._pair(tmp_path, name)
        cert = load(cert_path)
        cert.verify_directly_issued_by(ca_cert)
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        assert key.public_key() == cert.public_key(), f"{name}: key and certificate from different runs"


# --------------------------------------------------------------------------- tlsproxy certs
def run_tlsproxy(monkeypatch, *argv: str) -> int:
    monkeypatch.setattr(sys, "argv", ["tlsproxy", *argv])
    return cli.main(list(argv))


def test_cli_writes_certificates_and_prints_how_to_inspect_them(tmp_path, monkeypatch, capsys):
    code = run_tlsproxy(
        monkeypatch, "certs", "--dir", str(tmp_path), "--client", "--san", "127.0.0.1", "--rsa", "svc.test"
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "created CA" in out and "openssl x509 -in" in out and "openssl verify -CAfile" in out
    cert = load(tmp_path / "svc.test.pem")
    assert isinstance(cert.public_key(), rsa.RSAPublicKey)
    assert ExtendedKeyUsageOID.CLIENT_AUTH in ext(cert, x509.ExtendedKeyUsage).value
    assert ext(cert, x509.SubjectAlternativeName).value.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1")
    ]

    assert run_tlsproxy(monkeypatch, "certs", "--dir", str(tmp_path), "svc.test") == 0
    assert "kept" in capsys.readouterr().out


def test_cli_bad_name_is_one_line_and_exit_status_2(tmp_path, monkeypatch, capsys):
    assert run_tlsproxy(monkeypatch, "certs", "--dir", str(tmp_path), "not_a_host!") == 2
    err = capsys.readouterr().err
    assert err.startswith("tlsproxy certs: ") and err.count("\n") == 1
