"""The seven setups the project teaches (six of them measured), as data: the one table.

Theory of operation
-------------------
Each setup is a path a request takes from client to origin::

    1 direct-http     client ──HTTP──────────────────────────────▶ origin
    2 direct-https    client ══TLS═══════════════════════════════▶ origin
    3 terminate       client ══TLS══▶ proxy ──HTTP──────────────▶ origin
    4 reencrypt       client ══TLS══▶ proxy ══TLS═══════════════▶ origin
    5 passthrough     client ~~TLS~~▶ proxy ~~TCP splice~~~~~~~~▶ origin
    6 forward         client ──CONNECT──▶ proxy ~~tunnel~~~~~~~~▶ origin
    7 intercept       client ──CONNECT, then TLS══▶ proxy ══TLS══▶ origin
                             (a certificate minted for the origin's name)

Every fact about a setup lives in ``SETUPS`` below and nowhere else: its number and
name, the proxy's mode, its hosts and legs, which legs carry TLS and where each TLS
session ends, what the proxy can read, and the words used about it (leg labels, a
one-line summary, a longer description).  The diagrams draw this table
(``course.diagrams``), the notebooks print it, and the benchmark
(``course.bench.setups``) and the capture (``course.capture.setups``) start their
processes from it; they add only what is theirs (command lines, addresses, logs).

A *leg* is one hop.  Its ``kind`` says what travels on it:

=========  ==================================================================
http       plaintext HTTP: anyone on the leg can read and change it
tls        a TLS session that ends at the far side of the leg
splice     bytes copied without being decrypted; the TLS session inside runs
           on to the origin (passthrough peeks at the ClientHello first)
connect    a plaintext CONNECT request (RFC 9110 §9.3.6), then the client's
           TLS, copied unread through the tunnel the proxy opened
intercept  a plaintext CONNECT request that the proxy answers itself, then the
           client's TLS, which ends at the proxy: it shows a certificate minted
           for the requested name by an interception CA the client was made to
           trust (``proxy.modes.intercept``, ``proxy.tls.mint``).  RFC 9110
           §9.3.6 asks a tunnel's recipient to forward blindly; this leg does not
=========  ==================================================================

What the table stores are the facts; what follows from them (``hosts``,
``tls_sessions``, ``end_to_end``, ``picture`` ...) is computed, so a student can
see *why* re-encryption is hop by hop: two TLS sessions, and the proxy sits between
them holding the plaintext.  Only passthrough and CONNECT carry one session from the
client all the way to the origin; interception (7) looks like CONNECT to the client and
is re-encryption's two sessions underneath.

The benchmark runs setups 1 to 6 only (``course.bench.workloads.NOT_BENCHED`` says why);
the capture, the diagrams and the notebooks' tables take all seven.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

LEG_KINDS = ("http", "tls", "splice", "connect", "intercept")
# The legs at whose far side a TLS session ends (an intercepted CONNECT is one: the proxy ends it).
ENDS_TLS = ("tls", "intercept")
# How a leg is drawn in a one-line ASCII picture: (before the label, after it).
ARROWS = {"http": ("--", "-->"), "tls": ("==", "==>"), "splice": ("~~", "~~>"), "connect": ("--", "-->"),
          "intercept": ("--", "==>")}


@dataclass(frozen=True)
class Leg:
    kind: str  # one of LEG_KINDS
    label: str


@dataclass(frozen=True)
class Setup:
    number: int
    name: str
    mode: str | None  # the proxy's ``tlsproxy serve --mode`` (proxy/modes/<mode>.py); None: no proxy
    legs: tuple[Leg, ...]  # one leg: client -> origin; two: client -> proxy -> origin
    terminates: str  # who decrypts the client's TLS (in words)
    proxy_sees: str  # what the proxy can read
    summary: str  # one line, for tables and diagrams
    description: str  # a paragraph, for notebooks and reports

    # ----------------------------------------------------------------- hosts and legs
    @property
    def has_proxy(self) -> bool:
        return len(self.legs) == 2

    @property
    def hosts(self) -> tuple[str, ...]:
        return ("client", "proxy", "origin") if self.has_proxy else ("client", "origin")

    @property
    def leg_names(self) -> tuple[str, ...]:
        """The legs by name: the client's leg, and (behind a proxy) the backend leg."""
        return ("client", "backend")[:len(self.legs)]

    def leg_ends(self, leg: str) -> tuple[str, str]:
        """The two hosts a named leg joins, client side first."""
        i = self.leg_names.index(leg)
        return self.hosts[i], self.hosts[i + 1]

    # ----------------------------------------------------------------- TLS
    @property
    def tls_sessions(self) -> tuple[tuple[str, str], ...]:
        """Every TLS session, as (the host that starts it, the host that ends it).

        A ``tls`` (or ``intercept``) leg ends a session at its far side; ``splice`` and
        ``connect`` legs carry a session through unopened, so it ends further on.
        """
        sessions, start = [], None
        for leg, (near, far) in zip(self.legs, zip(self.hosts, self.hosts[1:])):
            if leg.kind == "http":
                start = None
            elif leg.kind in ENDS_TLS:
                sessions.append((start or near, far))
                start = None
            elif start is None:  # splice, connect: the session goes on through
                start = near
        if start is not None:
            sessions.append((start, self.hosts[-1]))
        return tuple(sessions)

    @property
    def client_tls(self) -> bool:
        """Does the client speak TLS (inside the tunnel, for a forward proxy)?"""
        return bool(self.tls_sessions) and self.tls_sessions[0][0] == "client"

    @property
    def client_tls_ends(self) -> str | None:
        """The host that terminates the client's TLS session: "proxy", "origin" or None."""
        return self.tls_sessions[0][1] if self.client_tls else None

    @property
    def origin_tls(self) -> bool:
        """Does the origin terminate a TLS session (the client's or the proxy's)?"""
        return any(end == "origin" for _, end in self.tls_sessions)

    @property
    def end_to_end(self) -> bool:
        """One TLS session from the client to the origin: nobody in between holds its keys."""
        return self.tls_sessions == (("client", "origin"),)

    @property
    def proxy_reads_requests(self) -> bool:
        """Does the proxy hold the plaintext of the requests (it terminates the client's TLS)?"""
        return self.has_proxy and self.client_tls_ends == "proxy"

    @property
    def tunnel(self) -> bool:
        """Does the client ask the proxy for a tunnel (CONNECT) first?"""
        return self.legs[0].kind in ("connect", "intercept")

    @property
    def intercepts(self) -> bool:
        """Does the proxy answer the CONNECT itself and end the client's TLS inside it, with a
        certificate it minted for the requested name (``proxy.modes.intercept``)?"""
        return self.legs[0].kind == "intercept"

    # ----------------------------------------------------------------- words and pictures
    @property
    def picture(self) -> str:
        """One line of ASCII: ``client ==TLS==> proxy --HTTP--> origin``."""
        line = self.hosts[0]
        for leg, host in zip(self.legs, self.hosts[1:]):
            before, after = ARROWS[leg.kind]
            line += f" {before}{leg.label}{after} {host}"
        return line

    @property
    def available(self) -> bool:
        """Is the proxy mode this setup needs written yet (proxy/modes/<mode>.py, and
        proxy/modes/intercept.py for a forward proxy that intercepts)?"""
        needed = [self.mode] if self.mode else []
        if self.intercepts:
            needed.append("intercept")
        return all(importlib.util.find_spec(f"proxy.modes.{module}") is not None for module in needed)


SETUPS: tuple[Setup, ...] = (
    Setup(
        1, "direct-http", None, (Leg("http", "HTTP"),),
        terminates="nobody", proxy_sees="-",
        summary="no TLS at all: the baseline cost of HTTP",
        description="The client speaks plain HTTP straight to the origin. Nothing is encrypted: anyone on "
                    "the path can read and change every request and response. The baseline: what serving "
                    "HTTP costs before TLS adds anything."),
    Setup(
        2, "direct-https", None, (Leg("tls", "TLS"),),
        terminates="origin", proxy_sees="-",
        summary="the origin terminates TLS itself and pays for it",
        description="One TLS session from the client to the origin, with no proxy: the origin holds the "
                    "certificate's private key and pays for every handshake and every record it encrypts or "
                    "decrypts."),
    Setup(
        3, "terminate", "terminate", (Leg("tls", "TLS"), Leg("http", "HTTP")),
        terminates="proxy", proxy_sees="everything, in plaintext",
        summary="TLS offloaded: the proxy decrypts, the origin speaks plain HTTP",
        description="TLS termination (offload): the proxy ends the client's TLS session, reads the request "
                    "in plaintext, may route and rewrite it, and forwards it as plain HTTP. The origin pays "
                    "nothing for TLS; anyone on the network between proxy and origin can read the backend "
                    "leg."),
    Setup(
        4, "reencrypt", "terminate", (Leg("tls", "TLS"), Leg("tls", "TLS (2nd session)")),
        terminates="proxy (and origin, 2nd session)", proxy_sees="everything, in plaintext",
        summary="hop-by-hop TLS (bridging): two sessions, plaintext at the proxy",
        description="TLS bridging (re-encryption): the proxy ends the client's TLS session, reads and may "
                    "rewrite the request in plaintext, then sends it over a second TLS session of its own to "
                    "the origin. Both legs are encrypted on the wire, which is why vendors often call this "
                    "'end-to-end TLS'; in the security sense it is hop by hop, not end to end: the proxy "
                    "holds both sessions' keys and the plaintext between them, and the origin's session is "
                    "with the proxy, not with the client, who never sees the origin's certificate."),
    Setup(
        5, "passthrough", "passthrough", (Leg("splice", "TLS (spliced)"), Leg("splice", "TCP splice")),
        terminates="origin", proxy_sees="the cleartext handshake (ClientHello: SNI, ALPN); no requests",
        summary="end-to-end TLS, one session; the proxy routes by SNI and cannot decrypt",
        description="TLS passthrough: the proxy reads the ClientHello to route by its server name (SNI, "
                    "RFC 6066 §3), then copies bytes both ways without decrypting them. One TLS session runs "
                    "end to end from the client to the origin, which holds the only keys. The proxy sees the "
                    "cleartext handshake and the size and timing of records, but not the requests, so it "
                    "cannot route by path, rewrite headers or add X-Forwarded-For."),
    Setup(
        6, "forward", "forward", (Leg("connect", "CONNECT + TLS"), Leg("splice", "tunnel")),
        terminates="origin", proxy_sees="the CONNECT request (host:port) and the cleartext handshake",
        summary="a forward proxy: the client asks for a CONNECT tunnel; its TLS runs end to end",
        description="A forward proxy: the client sends CONNECT host:port in plaintext (RFC 9110 §9.3.6), the "
                    "proxy opens a TCP connection to that destination (if its policy allows it) and from then "
                    "on copies bytes both ways. The client's TLS session runs end to end through the tunnel to "
                    "the origin; the proxy sees the destination and the cleartext handshake, not the "
                    "requests."),
    Setup(
        7, "intercept", "forward", (Leg("intercept", "CONNECT + TLS (minted cert)"), Leg("tls", "TLS (2nd session)")),
        terminates="proxy, with a minted certificate (and origin, 2nd session)",
        proxy_sees="everything, in plaintext: it answered the CONNECT itself",
        summary="TLS interception: the client asks for a tunnel; the proxy answers it and decrypts",
        description="TLS interception ('TLS inspection', lab only): the client asks for a tunnel with CONNECT "
                    "host:port as in setup 6, but the proxy answers the CONNECT itself, ends the client's TLS "
                    "with a certificate it mints on the spot for that host, signed by an interception CA the "
                    "client was made to trust, and opens a second TLS session of its own to the origin, whose "
                    "real certificate it verifies (proxy/modes/intercept.py). Two sessions, as in "
                    "re-encryption, and the proxy reads every request in plaintext between them; unlike "
                    "re-encryption, the client believes it is talking to the origin. RFC 9110 §9.3.6 asks the "
                    "recipient of a tunnel to forward blindly; this proxy does not. The client can tell from the "
                    "certificate it was shown: its issuer is the interception CA, its key is not the "
                    "origin's (a pin fails), and it carries no Certificate Transparency timestamps."),
)

BY_NAME: dict[str, Setup] = {s.name: s for s in SETUPS}
NAMES: tuple[str, ...] = tuple(BY_NAME)
