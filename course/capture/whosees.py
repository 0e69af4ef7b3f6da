"""Who sees what: computed from the captured bytes and from each party's own key log.

Theory of operation
-------------------
The table every TLS course draws by hand, filled in by measurement::

                          SNI  certificate  Host  path  headers  body  client address
    on-path, client leg   ...
    on-path, backend leg  ...
    proxy                 ...
    origin                ...

An *observer* is a set of captured legs plus the key logs it holds:

* an on-path observer (a Wi-Fi neighbour, an ISP, a tap) has one leg's packets and no keys;
* the proxy has both legs and the keys it wrote itself (``keys/proxy.log``,
  ``keys/proxy-backend.log``): none in passthrough or forward mode, where it never
  terminates TLS, both when it intercepts a CONNECT (setup 7);
* the origin has its leg and its own key log (``keys/origin.log``).

For each observer every connection is dissected with exactly those keys
(``dissect.py``) and the readable bytes (the wire bytes, plus whatever those keys
open) are searched for the lab client's markers (``client.py``): the Host header line,
the path, the secret header, the body.  The SNI is visible if a ClientHello carrying the
client's server_name parses from them; the certificate if the DER bytes of the
certificate the client was shown occur in them (in the clear in TLS 1.2, encrypted in
TLS 1.3); the client's address if it is a TCP endpoint of the leg or appears in the
readable bytes (``X-Forwarded-For``).  Nothing in the table is assumed from the setup's
name: change the proxy (say, stop it adding X-Forwarded-For) and the table changes.

Over HTTP/2 (``tlsproxy capture --http2``) the client's header fields travel HPACK-compressed
(RFC 7541), their values Huffman-coded: the markers are not among the decrypted bytes at
all.  A key holder reads them only after decoding the header blocks (``h2frames``), and
the table says so ("then HPACK-decoded").

The origin also *says* what it saw: its JSON answer (``course/origin/``) is compared
with the computed row in ``origin_log``.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass, field

from course.capture import h2frames
from course.capture.bundle import CaptureBundle
from course.capture.dissect import Dissection, dissect
from proxy.pki import leaf_der
from proxy.tls.keyschedule import parse_key_log

ITEMS = ("SNI", "certificate", "Host", "path", "headers", "body", "client address")


@dataclass(frozen=True)
class Observer:
    name: str                     # "on-path, client leg", "proxy", "origin"
    legs: tuple[str, ...]
    parties: tuple[str, ...] = ()  # whose key logs it holds


@dataclass(frozen=True)
class Cell:
    visible: bool
    how: str = ""                 # "ClientHello", "on the wire", "decrypted with its keys", "TCP peer", ...


@dataclass
class Table:
    title: str
    observers: list[str]
    cells: dict[tuple[str, str], Cell]
    origin_log: dict[str, bool] = field(default_factory=dict)   # what the origin says it saw

    def visible(self, observer: str, item: str) -> bool:
        return self.cells[observer, item].visible

    def row(self, observer: str) -> dict[str, bool]:
        return {item: self.visible(observer, item) for item in ITEMS}

    def format(self) -> str:
        width = max(map(len, self.observers)) + 2
        lines = [" " * width + "  ".join(ITEMS)]
        for observer in self.observers:
            lines.append(f"{observer:<{width}}" + "  ".join(
                f"{'yes' if self.visible(observer, item) else '-':<{len(item)}}" for item in ITEMS))
        lines.append("")
        for observer in self.observers:
            seen = [f"{item} ({self.cells[observer, item].how})" for item in ITEMS if self.visible(observer, item)]
            lines.append(f"{observer}: " + (", ".join(seen) or "nothing but encrypted bytes"))
        if self.origin_log:
            agree = all(self.visible("origin", item) == seen for item, seen in self.origin_log.items())
            lines.append("the origin's own log (its JSON answer) " + ("agrees" if agree else "DISAGREES") + ": "
                         + ", ".join(f"{item} {'yes' if seen else 'no'}" for item, seen in self.origin_log.items()))
        return "\n".join(lines)

    def as_dict(self) -> dict[str, dict[str, bool]]:
        return {observer: self.row(observer) for observer in self.observers}


def observers_for(bundle: CaptureBundle) -> list[Observer]:
    legs = list(bundle.legs)
    result = [Observer(f"on-path, {leg} leg", (leg,)) for leg in legs]
    if "proxy" in bundle.hosts:
        result.append(Observer("proxy", tuple(legs), ("proxy", "proxy-backend")))
    result.append(Observer("origin", (legs[-1],), ("origin",)))
    return result


def _key_log(bundle: CaptureBundle, parties: tuple[str, ...]) -> dict:
    keys: dict = {}
    for party in parties:
        path = bundle.keylog(party)
        if path and path.exists():
            for client_random, secrets in parse_key_log(path.read_text()).items():
                keys.setdefault(client_random, {}).update(secrets)
    return keys


def _certificate_der(bundle: CaptureBundle) -> bytes | None:
    path = bundle.certificate
    return leaf_der(path) if path and path.exists() else None  # the leaf of a leaf + intermediate file


def _found(dissections: list[Dissection], needle: bytes | re.Pattern) -> Cell:
    """Is ``needle`` in what the observer's keys opened, or in plaintext on the wire?"""
    def contains(data: bytes) -> bool:
        return bool(needle.search(data)) if isinstance(needle, re.Pattern) else needle in data

    hpack = _hpack_found(dissections, contains)     # HTTP/2's header fields, first: they are the request's
    if hpack.visible:
        return hpack
    for how, read in (("decrypted with its own keys", Dissection.opened),
                      ("in plaintext on the wire", lambda d, sender: d.connection.stream(sender))):
        if any(contains(read(d, sender)) for d in dissections for sender in ("client", "server")):
            return Cell(True, how)
    return Cell(False)


def _hpack_found(dissections: list[Dissection], contains) -> Cell:
    """In HTTP/2 the header fields are HPACK-compressed (RFC 7541): a key holder finds them
    only in the decoded header blocks, and a Huffman-coded value is not in the bytes at all."""
    for d in dissections:
        if not h2frames.is_http2(d.plaintext("client") or b""):
            continue
        for sender in ("client", "server"):
            for line, huffman in h2frames.field_lines(d.plaintext(sender) or b""):
                if contains(line):
                    return Cell(True, "decrypted with its own keys, then HPACK-decoded"
                                + (" (the value was Huffman-coded, RFC 7541 §5.2)" if huffman else ""))
    return Cell(False)


def _client_address(dissections: list[Dissection], address: str) -> Cell:
    if any(address in (d.connection.client[0], d.connection.server[0]) for d in dissections):
        return Cell(True, "it is the TCP peer")
    pattern = re.compile(rb"(?im)^([A-Za-z0-9-]+):[^\r\n]*" + re.escape(address.encode()) + rb"\b")
    for d in dissections:
        for sender in ("client", "server"):
            match = pattern.search(d.readable(sender))
            if match:
                wire = pattern.search(d.connection.stream(sender))
                return Cell(True, f"{match.group(1).decode()} header"
                                  + (" in plaintext" if wire else ", decrypted with its own keys"))
    return Cell(False)


def _sni(dissections: list[Dissection], server_name: str) -> Cell:
    for d in dissections:
        if d.client_hello is not None and d.client_hello.server_name == server_name:
            return Cell(True, "ClientHello, in plaintext (without ECH, RFC 9849)")
    return Cell(False)


def who_sees_what(bundle: CaptureBundle) -> Table:
    markers = bundle.markers
    server_name = bundle.metadata.get("server_name", markers["host"])
    certificate = _certificate_der(bundle)
    connections = {leg: bundle.connections(leg) for leg in bundle.legs}
    cells: dict[tuple[str, str], Cell] = {}
    observers = observers_for(bundle)
    for observer in observers:
        keys = _key_log(bundle, observer.parties)
        dissections = [dissect(c, keys) for leg in observer.legs for c in connections[leg]]
        found = {
            "SNI": _sni(dissections, server_name),
            "certificate": _found(dissections, certificate) if certificate else Cell(False),
            # HTTP/2 carries the Host in :authority (RFC 9113 §8.3.1).
            "Host": _found(dissections, re.compile(rb"(?im)^(?:host|:authority):[ \t]*"
                                                   + re.escape(markers["host"].encode()) + rb"[ \t]*\r?$")),
            "path": _found(dissections, markers["path"].encode()),
            "headers": _found(dissections, _field_line(markers["header"])),
            "body": _found(dissections, markers["body"].encode()),
            "client address": _client_address(dissections, bundle.hosts["client"]),
        }
        for item, cell in found.items():
            cells[observer.name, item] = cell
    return Table(bundle.title, [o.name for o in observers], cells, origin_log(bundle))


def _field_line(marker: str) -> re.Pattern:
    """``Name: value`` at a line start, the name in any case (RFC 9110 §5.1; HTTP/2 sends it
    in lowercase, RFC 9113 §8.2.1)."""
    name, _, value = marker.partition(": ")
    return re.compile(rb"(?im)^" + re.escape(name.encode()) + rb":[ \t]*" + re.escape(value.encode()))


def origin_log(bundle: CaptureBundle) -> dict[str, bool]:
    """What the origin reported seeing, from its JSON answer to the lab client."""
    markers, client_address = bundle.markers, bundle.hosts["client"]
    try:
        connection = bundle.client_report["connections"][0]
        if "response_body" in connection:          # HTTP/2 (h2client.py): the body, out of its frames
            seen = json.loads(base64.b64decode(connection["response_body"]))
        else:
            seen = json.loads(base64.b64decode(connection["response"]).partition(b"\r\n\r\n")[2])
    except (KeyError, IndexError, ValueError):
        return {}
    headers = {name.lower(): value for name, value in seen.get("headers", [])}
    header_name, _, header_value = markers["header"].partition(": ")
    return {
        "Host": headers.get("host") == markers["host"],
        "path": seen.get("path") == markers["path"],
        "headers": headers.get(header_name.lower()) == header_value,
        "body": seen.get("body", {}).get("length") == len(markers["body"]),
        "client address": seen.get("client", "").startswith(client_address + ":")
        or any(client_address in value for value in headers.values()),
    }
