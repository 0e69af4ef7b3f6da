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
def root() -> tuple[x509.Certificate, pki.PrivateKey]:
    return pki.generate_ca()


@pytest.fixture(scope="module")
def ca(root) -> tuple[x509.Certificate, pki.PrivateKey]:
    """The intermediate: what signs every leaf."""
    return pki.generate_intermediate(*root)


def ext(cert: x509.Certificate, kind: type) -> x509.Extension:
    return cert.extensions.get_extension_for_class(kind)


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def load_chain(path: Path) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(path.read_bytes())


def server_verifier(root_cert: x509.Certificate, name: str):
    try:
        subject = x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        subject = x509.DNSName(name)
    return PolicyBuilder().store(Store([root_cert])).build_server_verifier(subject)


def verify_file(root_cert: x509.Certificate, name: str, cert_path: Path) -> None:
    """Verify a chain file as a client does: its first certificate, the rest as intermediates."""
    leaf, *intermediates = load_chain(cert_path)
    server_verifier(root_cert, name).verify(leaf, intermediates)


# --------------------------------------------------------------------------- certificates
def test_root_is_a_self_signed_ca_that_may_sign_an_intermediate(root):
    cert, key = root
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"
    constraints = ext(cert, x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca and constraints.value.path_length is None
    usage = ext(cert, x509.KeyUsage)
    assert usage.critical and usage.value.key_cert_sign and usage.value.crl_sign
    assert cert.subject == cert.issuer
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == pki.CA_COMMON_NAME
    cert.verify_directly_issued_by(cert)  # the self-signature is valid
    assert cert.not_valid_after_utc - cert.not_valid_before_utc > datetime.timedelta(days=365)


def test_intermediate_is_signed_by_the_root_and_may_sign_leaves_only(root, ca):
    cert, key = ca
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"
    constraints = ext(cert, x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca and constraints.value.path_length == 0
    usage = ext(cert, x509.KeyUsage)
    assert usage.critical and usage.value.key_cert_sign and usage.value.crl_sign
    assert not usage.value.digital_signature
    # Issuer name and AKI point at the root's subject and SKI: what path building follows.
    assert cert.issuer == root[0].subject and cert.subject != root[0].subject
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == pki.INTERMEDIATE_COMMON_NAME
    assert ext(cert, x509.AuthorityKeyIdentifier).value.key_identifier == ext(
        root[0], x509.SubjectKeyIdentifier
    ).value.digest
    assert ext(cert, x509.SubjectKeyIdentifier).value.digest == x509.SubjectKeyIdentifier.from_public_key(
        key.public_key()
    ).digest
    cert.verify_directly_issued_by(root[0])
    assert cert.not_valid_after_utc <= root[0].not_valid_after_utc
    # pathlen:0 means what it says: a CA signed by the intermediate breaks every chain through it.
    sub_ca = pki.generate_intermediate(*ca, "one CA too many")
    leaf, _ = pki.generate_leaf(*sub_ca, ["deep.test"])
    with pytest.raises(VerificationError):
        server_verifier(root[0], "deep.test").verify(leaf, [sub_ca[0], cert])


def test_a_leaf_needs_its_intermediate_to_verify(root, ca):
    leaf, _ = pki.generate_leaf(*ca, ["www.example.test"])
    server_verifier(root[0], "www.example.test").verify(leaf, [ca[0]])
    with pytest.raises(VerificationError):  # the root alone does not know the leaf's issuer
        server_verifier(root[0], "www.example.test").verify(leaf, [])


def test_an_old_one_level_root_cannot_sign_an_intermediate():
    old_root = pki.generate_ca(path_length=0)
    intermediate = pki.generate_intermediate(*old_root)
    leaf, _ = pki.generate_leaf(*intermediate, ["www.example.test"])
    with pytest.raises(VerificationError):
        server_verifier(old_root[0], "www.example.test").verify(leaf, [intermediate[0]])


def test_not_after_in_the_past_makes_an_expired_leaf(root, ca):
    yesterday = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=1)
    leaf, _ = pki.generate_leaf(*ca, ["old.test"], not_after=yesterday)
    assert leaf.not_valid_after_utc == yesterday.replace(microsecond=0)
    assert leaf.not_valid_after_utc - leaf.not_valid_before_utc == datetime.timedelta(days=pki.LEAF_DAYS)
    with pytest.raises(VerificationError, match="not valid at validation time"):
        server_verifier(root[0], "old.test").verify(leaf, [ca[0]])


def test_server_false_makes_a_client_only_leaf_a_server_verifier_refuses(root, ca):
    leaf, _ = pki.generate_leaf(*ca, ["client-only.test"], server=False, client=True)
    assert list(ext(leaf, x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    with pytest.raises(VerificationError):
        server_verifier(root[0], "client-only.test").verify(leaf, [ca[0]])
    with pytest.raises(ConfigError, match="server or client"):
        pki.generate_leaf(*ca, ["nothing.test"], server=False)


def test_leaf_sans_cover_dns_ipv4_and_ipv6(root, ca):
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
        server_verifier(root[0], name).verify(leaf, [ca[0]])
    for name in ("www.example.test", "127.0.0.2", "::2"):
        with pytest.raises(VerificationError):
            server_verifier(root[0], name).verify(leaf, [ca[0]])


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


def test_rsa_leaf_is_2048_bits_and_allows_key_encipherment(root, ca):
    leaf, key = pki.generate_leaf(*ca, ["www-rsa.example.test"], key_type="rsa")
    assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == 2048
    assert ext(leaf, x509.KeyUsage).value.key_encipherment
    server_verifier(root[0], "www-rsa.example.test").verify(leaf, [ca[0]])


def test_client_flag_adds_client_auth_and_the_client_verifier_accepts_it(root, ca):
    leaf, _ = pki.generate_leaf(*ca, ["proxy-client"], client=True)
    assert list(ext(leaf, x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.SERVER_AUTH,
        ExtendedKeyUsageOID.CLIENT_AUTH,
    ]
    PolicyBuilder().store(Store([root[0]])).build_client_verifier().verify(leaf, [ca[0]])
    server_only, _ = pki.generate_leaf(*ca, ["www.example.test"])
    with pytest.raises(VerificationError):
        PolicyBuilder().store(Store([root[0]])).build_client_verifier().verify(server_only, [ca[0]])


def test_wildcard_and_unicode_names(root, ca):
    leaf, _ = pki.generate_leaf(*ca, ["*.wild.test", "bücher.test"])
    names = ext(leaf, x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    assert names == ["*.wild.test", "xn--bcher-kva.test"]  # IDNA A-label, as on the wire
    server_verifier(root[0], "a.wild.test").verify(leaf, [ca[0]])
    with pytest.raises(VerificationError):  # RFC 6125 §6.4.3: one label only
        server_verifier(root[0], "a.b.wild.test").verify(leaf, [ca[0]])


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
    assert stat.S_IMODE((tmp_path / "intermediate.key").stat().st_mode) == 0o600
    # NAME.pem is the chain a server sends: the leaf, then the intermediate (never the root).
    root, intermediate = load(tmp_path / "ca.pem"), load(tmp_path / "intermediate.pem")
    leaf, *rest = load_chain(cert_path)
    assert rest == [intermediate]
    assert load_chain(tmp_path / "www.example.test.leaf.pem") == [leaf]
    assert load_chain(tmp_path / "ca.pem") == [root] and root.subject == root.issuer
    assert leaf.issuer == intermediate.subject and intermediate.issuer == root.subject
    leaf.verify_directly_issued_by(intermediate)
    intermediate.verify_directly_issued_by(root)
    # The key is unencrypted PKCS#8 and matches the leaf.
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    assert key.public_key() == leaf.public_key()
    assert "BEGIN PRIVATE KEY" in key_path.read_text()

    openssl = require_tool("openssl")

    def verify(*args) -> subprocess.CompletedProcess:
        return subprocess.run([openssl, "verify", *args], capture_output=True, text=True, timeout=30)

    result = verify("-x509_strict", "-purpose", "sslserver", "-CAfile", tmp_path / "ca.pem",
                    "-untrusted", cert_path, cert_path)
    assert result.returncode == 0 and ": OK" in result.stdout, result.stdout + result.stderr
    # The root alone cannot vouch for the leaf: the intermediate is the missing link.
    result = verify("-CAfile", tmp_path / "ca.pem", tmp_path / "www.example.test.leaf.pem")
    assert result.returncode != 0 and "unable to get local issuer certificate" in result.stdout + result.stderr
    # Not a client certificate: OpenSSL's purpose check refuses it for client authentication.
    result = verify("-purpose", "sslclient", "-CAfile", tmp_path / "ca.pem", "-untrusted", cert_path, cert_path)
    assert result.returncode != 0 and "certificate purpose" in result.stdout + result.stderr


def test_existing_files_are_kept_unless_overwrite_and_the_ca_is_reused(tmp_path):
    first = pki.write_certs(tmp_path, ["a.test"])
    ca_pem = (tmp_path / "ca.pem").read_bytes()
    intermediate_pem = (tmp_path / "intermediate.pem").read_bytes()
    leaf_pem = (tmp_path / "a.test.pem").read_bytes()

    again = pki.write_certs(tmp_path, ["a.test", "b.test"])
    assert again.kept == ["a.test"] and again.written == ["b.test"] and not again.ca_created
    assert (tmp_path / "a.test.pem").read_bytes() == leaf_pem

    forced = pki.write_certs(tmp_path, ["a.test"], overwrite=True)
    assert forced.written == ["a.test"]
    assert (tmp_path / "a.test.pem").read_bytes() != leaf_pem
    assert (tmp_path / "ca.pem").read_bytes() == ca_pem  # one root for everything issued here
    assert (tmp_path / "intermediate.pem").read_bytes() == intermediate_pem
    ca_cert = load(tmp_path / "ca.pem")
    for name, (cert_path, _) in [*first.items(), *again.items()]:
        verify_file(ca_cert, name, cert_path)


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
    assert load_chain(demo.ca) == [ca_cert]  # clients trust the root, and only the root
    verify_file(ca_cert, "www.example.test", demo.www_cert)
    verify_file(ca_cert, "api.example.test", demo.api_cert)
    verify_file(ca_cert, "www-rsa.example.test", demo.www_rsa_cert)
    for name in ("origin.example.test", "127.0.0.1", "::1", "localhost"):
        verify_file(ca_cert, name, demo.origin_cert)
    client_leaf, *client_chain = load_chain(demo.client_cert)
    PolicyBuilder().store(Store([ca_cert])).build_client_verifier().verify(client_leaf, client_chain)
    intermediate = load(demo.intermediate)
    for name in pki.DEMO_CERTS:
        chain = load_chain(Path(demo.files(name)[0]))
        assert len(chain) == 2 and chain[1] == intermediate, name
        assert load_chain(Path(demo.leaf(name))) == chain[:1]
        assert ext(chain[0], x509.AuthorityKeyIdentifier).value.key_identifier == ext(
            intermediate, x509.SubjectKeyIdentifier
        ).value.digest
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
    verify_file(load(demo.ca), "api.example.test", demo.api_cert)
    assert demo.www_cert.read_bytes() == www_before  # only the stale one was touched


def write_old_layout(directory: Path) -> None:
    """A demo directory as the one-level lab wrote it: a pathlen:0 root signing each leaf directly."""
    directory.mkdir(parents=True, exist_ok=True)
    root, root_key = pki.generate_ca(path_length=0)
    (directory / "ca.key").write_bytes(pki._key_pem(root_key))
    (directory / "ca.pem").write_bytes(root.public_bytes(serialization.Encoding.PEM))
    for name, (extra, key_type, client) in pki.DEMO_CERTS.items():
        leaf, key = pki.generate_leaf(root, root_key, [name, *extra], key_type=key_type, client=client)
        cert_path, key_path = pki._pair(directory, name)
        key_path.write_bytes(pki._key_pem(key))
        cert_path.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))


def test_an_old_one_level_demo_directory_is_regenerated_once(tmp_path):
    write_old_layout(tmp_path)
    old_root = (tmp_path / "ca.pem").read_bytes()
    assert pki._stale_demo_names(tmp_path) == list(pki.DEMO_CERTS)
    demo = pki.ensure_demo_certs(tmp_path)
    assert demo.ca.read_bytes() != old_root  # pathlen:0 could not sign the intermediate: a new root
    root, intermediate = load(demo.ca), load(demo.intermediate)
    assert ext(root, x509.BasicConstraints).value.path_length is None
    intermediate.verify_directly_issued_by(root)
    for name in pki.DEMO_CERTS:
        cert_path, key_path = demo.files(name)
        chain = load_chain(Path(cert_path))
        assert chain[1:] == [intermediate] and chain[0].issuer == intermediate.subject, name
        key = serialization.load_pem_private_key(Path(key_path).read_bytes(), password=None)
        assert key.public_key() == chain[0].public_key()
    verify_file(root, "www.example.test", demo.www_cert)
    assert pki._stale_demo_names(tmp_path) == []
    before = {p: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    assert pki.ensure_demo_certs(tmp_path) == demo  # once: the second call changes nothing
    assert {p: p.stat().st_mtime_ns for p in tmp_path.iterdir()} == before


def test_a_leaf_signed_by_the_root_or_a_missing_intermediate_is_stale(tmp_path):
    demo = pki.ensure_demo_certs(tmp_path)
    root_key = serialization.load_pem_private_key((tmp_path / "ca.key").read_bytes(), password=None)
    # A leaf the root signed directly (as the old code did), under the current root: stale.
    leaf, key = pki.generate_leaf(load(demo.ca), root_key, ["api.example.test"])
    demo.api_key.write_bytes(pki._key_pem(key))
    demo.api_cert.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    assert pki._stale_demo_names(tmp_path) == ["api.example.test"]
    # The chain file without the intermediate in it, or without NAME.leaf.pem: stale too.
    www_leaf = Path(demo.leaf("www.example.test")).read_bytes()
    demo.www_cert.write_bytes(www_leaf)
    Path(demo.leaf("www-rsa.example.test")).unlink()
    assert pki._stale_demo_names(tmp_path) == ["www.example.test", "api.example.test", "www-rsa.example.test"]
    root_before = demo.ca.read_bytes()
    pki.ensure_demo_certs(tmp_path)
    assert pki._stale_demo_names(tmp_path) == [] and demo.ca.read_bytes() == root_before
    verify_file(load(demo.ca), "api.example.test", demo.api_cert)
    # No intermediate file at all: every leaf is stale, the root is kept, a new intermediate signs them.
    demo.intermediate.unlink()
    assert pki._stale_demo_names(tmp_path) == list(pki.DEMO_CERTS)
    pki.ensure_demo_certs(tmp_path)
    assert demo.ca.read_bytes() == root_before
    verify_file(load(demo.ca), "www.example.test", demo.www_cert)
    assert load_chain(demo.www_cert)[1] == load(demo.intermediate)


def test_write_certs_refuses_to_replace_an_old_root_quietly(tmp_path):
    write_old_layout(tmp_path)
    with pytest.raises(ConfigError, match="older version of the lab"):
        pki.write_certs(tmp_path, ["new.test"])
    assert not (tmp_path / "new.test.pem").exists() and not (tmp_path / "intermediate.pem").exists()


@pytest.mark.parametrize("name", ["ca", "intermediate", "www.example.leaf"])
def test_names_that_would_overwrite_the_ca_files_are_refused(tmp_path, name):
    with pytest.raises(ConfigError, match="CA's files"):
        pki.write_certs(tmp_path, [name])
    assert not list(tmp_path.glob("*.pem"))


def test_ensure_demo_certs_is_safe_when_processes_race(tmp_path):
    code = "import sys; from proxy import pki; pki.ensure_demo_certs(sys.argv[1])"
    racers = [
        subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], cwd=REPO, stderr=subprocess.PIPE)
        for _ in range(4)
    ]
    for racer in racers:
        _, err = racer.communicate(timeout=60)
        assert racer.returncode == 0, err.decode()
    ca_cert, intermediate = load(tmp_path / "ca.pem"), load(tmp_path / "intermediate.pem")
    intermediate.verify_directly_issued_by(ca_cert)
    for name in pki.DEMO_CERTS:
        cert_path, key_path = pki._pair(tmp_path, name)
        cert = load(cert_path)
        cert.verify_directly_issued_by(intermediate)
        assert load_chain(cert_path)[1:] == [intermediate], f"{name}: chain from another run"
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
    assert "intermediate.pem" in out
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
