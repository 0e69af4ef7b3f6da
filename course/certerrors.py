"""The error gallery: five certificate mistakes, each shown failing in curl, openssl and Python.

Theory of operation
-------------------
A client that verifies a server answers three questions (``proxy/pki.py`` has the
details): is there a path from the certificate the server sent up to a root I trust
(RFC 5280 §6.1: signatures, CA flags, validity dates), may this certificate be used
by a TLS server (ExtendedKeyUsage serverAuth, RFC 5280 §4.2.1.12), and does it name
the host I dialled (subjectAltName, RFC 6125 §6)?  Each case below breaks exactly
one of them, with a real certificate on a real server, and records what three
independent clients say::

    case                  the server holds                         the client asks for
    good                  leaf + intermediate (NAME.pem)           www
    missing intermediate  the leaf alone (NAME.leaf.pem)           www
    name mismatch         leaf + intermediate for www              api
    expired               a leaf whose notAfter has passed         www
    unknown CA            a chain from a second, untrusted root    www
    wrong EKU             a clientAuth-only leaf (no serverAuth)   www

Every client trusts the demo root (``ca.pem``) and nothing else.

For each case a demo origin (``course.origin.Origin``: ``proxy.tls.contexts.server_context``
around the certificate, in a thread) listens on 127.0.0.1, port 0, and three clients
connect to it, each the way a person would type it:

* curl: ``curl -sS --cacert ROOT --resolve NAME:PORT:127.0.0.1 https://NAME:PORT/``;
  the first line of its stderr.
* openssl: ``openssl s_client -connect 127.0.0.1:PORT -servername NAME
  -verify_hostname NAME -CAfile ROOT -verify_return_error </dev/null``; its
  "Verify return code" line.  Without ``-verify_hostname`` s_client checks the chain
  but never the name: the name mismatch would say "0 (ok)".  ``-verify_return_error``
  makes a failed verification abort the handshake, as curl and Python do.
* Python: ``ssl.create_default_context(cafile=ROOT)`` (through
  ``course.clients.client_context``, the lessons' stock client) and
  ``wrap_socket(..., server_hostname=NAME)``; the exception's text.

Every error in the table is the tool's own output, trimmed to one line, never a
string typed here.  Nothing depends on timing: the expired certificate ended a
day ago, and each server is stopped (its threads joined) before the next starts.
The missing intermediate is the one a browser may not show: browsers fetch the
issuer from the leaf's Authority Information Access URL (RFC 5280 §4.2.2.1) or have
it cached, which is why a server that forgets it (RFC 8446 §4.4.2 asks the sender
for the chain) "works on my machine".

Two rows look alike on purpose: "missing intermediate" and "unknown CA" both end in
"unable to get local issuer certificate".  In both, path building stops at a
certificate whose issuer is neither in the chain received nor in the trust store;
the client cannot tell "you forgot to send it" from "I do not trust it".  Look at
the depth (``openssl s_client`` prints ``depth=0`` for the bare leaf, ``depth=1``
for the stranger's intermediate) or at the issuer names (``-showcerts``) to tell
them apart.

Run it with ``python -m course.certerrors``.
"""

from __future__ import annotations

import argparse
import datetime
import shutil
import ssl
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from course import clients
from course.origin import Origin
from proxy import pki

TOOL_TIMEOUT = 30.0  # seconds for one client run; loopback answers in milliseconds
TOOLS = ("curl", "openssl", "python")


@dataclass(frozen=True)
class Case:
    """One misconfiguration: what the server serves and what the client asks for."""

    name: str
    cert: str  # the chain file the server loads
    key: str
    server_name: str  # the host name the client dials (and sends as SNI)
    ca: str  # the root the client trusts


def build_cases(demo: pki.DemoPKI, scratch: Path) -> list[Case]:
    """The good case and the five bad ones, their special certificates written into ``scratch``."""
    www, api = pki.DEMO_WWW, pki.DEMO_API
    cert, key = demo.files(www)
    ca = str(demo.ca)
    authority = pki.load_authority(demo.directory)

    def issued(stem: str, issuer: tuple[x509.Certificate, pki.PrivateKey], chain: list[x509.Certificate],
               **options) -> tuple[str, str]:
        """A special leaf for www, written as ``scratch/STEM.pem`` (leaf + ``chain``) and ``.key``."""
        leaf, leaf_key = pki.generate_leaf(*issuer, [www], **options)
        cert_path, key_path = scratch / f"{stem}.pem", scratch / f"{stem}.key"
        pki.save_leaf(leaf, leaf_key, cert_path, key_path, chain=chain)
        return str(cert_path), str(key_path)

    ours = (authority.intermediate, authority.intermediate_key)
    yesterday = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=1)
    stranger_root = pki.generate_ca("Untrusted stranger CA")
    stranger = pki.generate_intermediate(*stranger_root, "Untrusted stranger intermediate")
    return [
        Case("good", cert, key, www, ca),
        Case("missing intermediate", demo.leaf(www), key, www, ca),
        Case("name mismatch", cert, key, api, ca),
        Case("expired", *issued("expired", ours, [authority.intermediate], not_after=yesterday), www, ca),
        Case("unknown CA", *issued("unknown-ca", stranger, [stranger[0]]), www, ca),
        Case("wrong EKU", *issued("client-only", ours, [authority.intermediate], server=False, client=True), www, ca),
    ]


# --------------------------------------------------------------------------- the three clients
def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


def _tool(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/bin")


def try_curl(case: Case, port: int) -> tuple[bool, str]:
    curl = _tool("curl")
    if curl is None:
        return False, "curl is not installed"
    host = case.server_name
    result = subprocess.run(
        [curl, "-sS", "--cacert", case.ca, f"https://{host}:{port}/", "--resolve", f"{host}:{port}:127.0.0.1",
         "-o", "/dev/null"],
        capture_output=True, text=True, timeout=TOOL_TIMEOUT,
    )
    return result.returncode == 0, "" if result.returncode == 0 else _first_line(result.stderr)


def try_openssl(case: Case, port: int) -> tuple[bool, str]:
    openssl = _tool("openssl")
    if openssl is None:
        return False, "openssl is not installed"
    host = case.server_name
    result = subprocess.run(
        [openssl, "s_client", "-connect", f"127.0.0.1:{port}", "-servername", host, "-verify_hostname", host,
         "-CAfile", case.ca, "-verify_return_error"],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=TOOL_TIMEOUT,
    )
    # The first one is the handshake's; TLS 1.3 session tickets repeat it further down.
    verdict = next((line.strip() for line in result.stdout.splitlines() if "Verify return code" in line), "")
    ok = result.returncode == 0 and verdict == "Verify return code: 0 (ok)"
    return ok, "" if ok else verdict or _first_line(result.stderr)


def try_python(case: Case, port: int) -> tuple[bool, str]:
    # course.clients.client_context is ssl.create_default_context(cafile=ROOT) (plus ALPN),
    # the stock client every lesson uses.
    context = clients.client_context(case.ca)
    try:
        sock, _ = clients.tls_connect(("127.0.0.1", port), case.server_name, context, timeout=TOOL_TIMEOUT)
    except (ssl.SSLError, OSError) as error:
        return False, _first_line(str(error))
    clients.close_politely(sock)
    return True, ""


CLIENTS = {"curl": try_curl, "openssl": try_openssl, "python": try_python}


# --------------------------------------------------------------------------- the gallery
@contextmanager
def serving(case: Case) -> Iterator[int]:
    """A demo origin on 127.0.0.1 serving the case's certificate; its port.  Stopped on exit."""
    with Origin(f"gallery-{case.name}", "127.0.0.1", 0, cert=case.cert, key=case.key) as origin:
        yield origin.port


def run_gallery(directory: str | Path | None = None) -> list[dict]:
    """Every case against every client: ``[{"case", "tool", "ok", "error"}, ...]``.

    ``directory`` holds the demo PKI and the special certificates (a temporary one,
    removed afterwards, when not given).
    """
    with tempfile.TemporaryDirectory(prefix="tlslab-certerrors-") as temporary:
        scratch = Path(directory or temporary)
        scratch.mkdir(parents=True, exist_ok=True)
        demo = pki.ensure_demo_certs(scratch / "pki")
        rows = []
        for case in build_cases(demo, scratch):
            with serving(case) as port:
                for tool in TOOLS:
                    ok, error = CLIENTS[tool](case, port)
                    rows.append({"case": case.name, "tool": tool, "ok": ok, "error": error})
        return rows


def format_table(rows: list[dict]) -> str:
    width = max(len(row["case"]) for row in rows)
    lines = [f"{'case':<{width}}  {'tool':<7}  {'ok':<3}  error", f"{'-' * width}  -------  ---  -----"]
    for row in rows:
        ok = "yes" if row["ok"] else "no"
        lines.append(f"{row['case']:<{width}}  {row['tool']:<7}  {ok:<3}  {row['error']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Serve each certificate mistake on 127.0.0.1 and print what curl, openssl and Python say."""
    parser = argparse.ArgumentParser(prog="python -m course.certerrors", description=main.__doc__)
    parser.add_argument(
        "--dir", metavar="DIR", help="keep the certificates in DIR (default: a temporary directory, removed after)"
    )
    args = parser.parse_args(argv)
    print(format_table(run_gallery(args.dir)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
