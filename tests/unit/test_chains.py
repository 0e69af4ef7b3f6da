"""course/chains.py: path building over real demo certificates, and the facts read off them.

The certificates are the demo PKI's and the error gallery's (``course.certerrors``), made
by ``proxy.pki``; nothing is mocked.  What is checked is where a path stops and why, which
is what notebook 8 prints to tell a missing intermediate from an unknown CA.
"""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest

from course import certerrors, chains
from proxy import pki
from proxy.tls import mint

WWW = pki.DEMO_WWW


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> pki.DemoPKI:
    return pki.ensure_demo_certs(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def root(demo):
    return chains.read_certificates(demo.ca)[0]


def test_the_chain_file_builds_a_complete_path_ending_in_the_trust_store(demo, root):
    sent = chains.read_certificates(demo.files(WWW)[0])
    path = chains.build_path(sent, [root])
    assert path.complete
    assert [step.found_in for step in path.steps] == ["sent by the server", "sent by the server", "trust store"]
    assert [row["depth"] for row in path.rows()] == [0, 1, 2]
    assert path.steps[-1].cert == root


def test_the_leaf_alone_stops_at_the_leaf_needing_our_intermediate(demo, root):
    path = chains.build_path(chains.read_certificates(demo.leaf(WWW)), [root])
    intermediate = chains.read_certificates(demo.intermediate)[0]
    assert not path.complete and len(path.steps) == 1
    assert chains.facts(intermediate).subject in path.stopped_because


def test_an_unknown_ca_stops_one_higher_at_the_strangers_intermediate(demo, root, tmp_path):
    case = {c.name: c for c in certerrors.build_cases(demo, tmp_path)}["unknown CA"]
    sent = chains.read_certificates(case.cert)
    path = chains.build_path(sent, [root])
    assert not path.complete and len(path.steps) == 2
    assert "Untrusted stranger CA" in path.stopped_because


def test_a_matching_name_with_another_key_is_not_the_issuer(demo, root):
    """Same subject name, different key: the AuthorityKeyIdentifier tells them apart (RFC 5280 §4.2.1.1)."""
    impostor, _ = pki.generate_ca(chains.facts(root).subject.split(",")[0].removeprefix("CN="))
    intermediate = chains.read_certificates(demo.intermediate)[0]
    assert intermediate.issuer == impostor.subject
    assert chains.issued(intermediate, root) and not chains.issued(intermediate, impostor)


def test_facts_of_a_demo_leaf_and_a_minted_one(demo, tmp_path):
    leaf = chains.facts(chains.read_certificates(demo.files(WWW)[0])[0])
    assert leaf.names == (WWW,) and not leaf.is_ca and not leaf.self_signed
    assert leaf.aia_ca_issuers == () and leaf.scts is None and not leaf.ct_v2
    assert leaf.fingerprint == chains.clients.fingerprint(demo.files(WWW)[0])
    ca = mint.load_ca(*map(str, mint.make_ca(tmp_path)))
    minted = chains.facts(mint.mint_leaf(ca, WWW)[0])
    assert minted.issuer.startswith("CN=" + mint.CA_COMMON_NAME)
    assert minted.scts is None and not minted.ct_v2  # no CT log ever saw it
    assert minted.days_valid <= (mint.LEAF_LIFETIME + mint.BACKDATE) / datetime.timedelta(days=1) + 1e-6


def test_pem_certificates_reads_a_tools_output(demo):
    text = "noise\n" + Path(demo.files(WWW)[0]).read_text() + "more noise\n"
    assert chains.pem_certificates(text) == chains.read_certificates(demo.files(WWW)[0])
