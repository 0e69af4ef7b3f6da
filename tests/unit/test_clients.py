"""The notebooks' clients, the parts without sockets: reading a reply, naming a certificate."""

from __future__ import annotations

import hashlib
import ssl

from course.clients import Reply, fingerprint


def test_reply_reads_the_origins_json_and_headers():
    reply = Reply(200, "OK", [("X-Origin", "web-1")], b'{"headers": [["X-Forwarded-For", "127.0.0.10"]]}',
                  connected_to="127.0.0.3:443", local="127.0.0.10:5000")
    assert reply.origin == "web-1"
    assert reply.seen_header("x-forwarded-for") == "127.0.0.10"
    assert Reply(502, "Bad Gateway", [], b"502 Bad Gateway: ...", "a", "b").json is None


def test_fingerprint_of_a_file_matches_what_a_client_is_shown(pki):
    cert, _ = pki.files("www.example.test")
    der = ssl.PEM_cert_to_DER_cert(open(pki.leaf("www.example.test")).read())  # the leaf alone
    assert fingerprint(cert) == hashlib.sha256(der).hexdigest()[:16]
    assert fingerprint(cert) != fingerprint(pki.files("api.example.test")[0])
