"""The six setups the project teaches and measures, as data.

Each setup is a path a request takes from client to origin.  The table below is what
the diagrams draw (``course.diagrams``), what the notebooks print, and what the
benchmark's setups follow, so a change here shows up everywhere at once.

A *leg* is one hop: its ``kind`` is ``"http"`` (plaintext HTTP), ``"tls"`` (a TLS
session ends at the far side of the leg) or ``"splice"`` (bytes copied without
looking; the TLS session inside goes through to the origin).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Leg:
    kind: str  # "http" | "tls" | "splice" | "connect"
    label: str


@dataclass(frozen=True)
class Setup:
    number: int
    name: str
    legs: tuple[Leg, ...]  # one leg: client -> origin; two: client -> proxy -> origin
    terminates: str  # who decrypts the client's TLS
    proxy_sees: str  # what the proxy can read
    summary: str

    @property
    def has_proxy(self) -> bool:
        return len(self.legs) == 2


SETUPS: tuple[Setup, ...] = (
    Setup(1, "direct-http", (Leg("http", "HTTP"),), "nobody", "-",
          "no TLS at all: the baseline cost of HTTP"),
    Setup(2, "direct-https", (Leg("tls", "TLS"),), "origin", "-",
          "the origin terminates TLS itself and pays for it"),
    Setup(3, "terminate", (Leg("tls", "TLS"), Leg("http", "HTTP")), "proxy", "everything",
          "TLS offloaded: the proxy decrypts, the origin speaks plain HTTP"),
    Setup(4, "reencrypt", (Leg("tls", "TLS"), Leg("tls", "TLS")), "proxy and origin", "everything",
          "end-to-end TLS with two sessions: decrypted at the proxy, encrypted again"),
    Setup(5, "passthrough", (Leg("splice", "TLS (spliced)"), Leg("splice", "TCP splice")), "origin",
          "the ClientHello (SNI, ALPN)", "end-to-end TLS with one session; the proxy routes by SNI"),
    Setup(6, "forward", (Leg("connect", "CONNECT + TLS"), Leg("splice", "tunnel")), "origin",
          "the CONNECT line and the ClientHello", "a forward proxy: the client asks for a tunnel"),
)

BY_NAME = {s.name: s for s in SETUPS}
