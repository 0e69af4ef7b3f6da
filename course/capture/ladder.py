"""A ladder (sequence) diagram of a capture: client | proxy | origin, one arrow per packet.

Theory of operation
-------------------
Each column is a host and each arrow one captured TCP segment, drawn at the time it
was captured, from the host that sent it to the one that received it::

    client               proxy                origin
      |---- SYN ----------->|                    |
      |<--- SYN-ACK --------|                    |
      |---- ClientHello --->|                    |
      |<--- ServerHello, ChangeCipherSpec, {EncryptedExtensions, Certificate, ...}
      |---- ChangeCipherSpec, {Finished} -->|    |
      |---- [POST /account/statement?id=... HTTP/1.1] -->|
      |                     |---- SYN ---------->|
      |                     |---- POST /account/statement?id=... HTTP/1.1 -->|

The names come from ``dissect.py`` with the bundle's full key log, so a protected
record is named by what it really holds, in the notation of RFC 8446 §2:
``{...}`` is protected with handshake keys, ``[...]`` with application keys (in TLS 1.2,
with the session keys: its Finished shows as ``[Finished]``), and an opened record that
starts an HTTP message shows its start line: ``[POST /path HTTP/1.1]``; on an HTTP/2
connection (``tlsproxy capture --http2``) an opened record shows the frames that start in
it, as Wireshark names them (``h2frames.py``): ``[Magic (preface), SETTINGS[0]]``,
``[HEADERS[1]: POST /path]``, ``[DATA[1]]``, ``[SETTINGS[0] ACK]``, ``[GOAWAY[0]]``, the
number in brackets being the stream (0: the connection itself, RFC 9113 §5.1.1).  Pure ACKs (no data, no SYN/FIN/RST)
are left out: they would double the picture and teach nothing about TLS.

**Colours say what the wire shows, record by record** (``record_kind``).  One segment
often carries several records, and they need not be alike: TLS 1.3's ServerHello and
ChangeCipherSpec are plaintext records while the EncryptedExtensions behind them in the
same segment are not.  So each record's name gets its own colour, and the arrow of a
segment whose records differ is drawn black (``segment_kind``):

* TLS 1.3 (RFC 8446 §5.1, §5.2): ClientHello and ServerHello are ``TLSPlaintext``; so is
  the middlebox-compatibility ChangeCipherSpec, which is never encrypted (§5, §D.4).
  Every other record is a ``TLSCiphertext`` whose outer type is 23 (application_data):
  EncryptedExtensions to Finished under the handshake keys, and NewSessionTicket, the
  HTTP data and the alerts under the application keys (§4.6: messages sent after the
  handshake, NewSessionTicket among them, are encrypted under the application keys).
* TLS 1.2 (RFC 5246 §6.1, §7.1): a side's records are plaintext up to and including its
  ChangeCipherSpec and protected from its Finished on, whatever their outer type says.
  ClientKeyExchange and the server's NewSessionTicket (RFC 5077 §3.3, sent just before the
  server's ChangeCipherSpec) are therefore plaintext, Finished and what follows protected.

The colour is decided from the wire (``RecordView.protected``), not from the key log:
the ladder without keys (``decrypted=False``) has the same colours, only fewer names.

**A HelloRetryRequest** (RFC 8446 §4.1.4) is drawn under its own name although on the
wire it is a ServerHello (``dissect.message_name``): the server asks for a second
ClientHello, and the handshake costs one more round trip (``notes`` says so).

**Added round-trip time** (``tlsproxy capture --rtt 40``): a leg that went through a
delay line (``course.delay``) was captured at one end of it, the line playing the long
cable: on loopback the connecting party's end (the metadata's ``captured_at``).  Its
arrows are drawn when a segment left or reached that party; the far end got each one
RTT/2 later.  ``bundle_notes`` puts that under
the figure, with the RTT.

**The end of a connection** is TCP's business and is explained under the figure
(``notes``): a FIN per direction (RFC 9293 §3.6); a segment sent twice is marked
``(retransmitted)``; a RST after the peer's close_notify means the peer closed its socket
without waiting for the other side's close_notify (RFC 8446 §6.1 allows it), and the
kernel answers data that reaches a closed socket with a reset (RFC 9293 §3.6.1).

Time runs downwards.  Loopback handshakes take a fraction of a millisecond and then
the capture may idle for a second, so the vertical axis is *time, compressed*: each
arrow is at least one row below the previous one, plus a logarithmic share of the
real gap, and gaps over ``GAP_MARK`` seconds get a "≈ 120 ms" mark.  Every arrow is
labelled with its real time since the first packet, at the left.

``ladder_arrows`` computes the arrows and ``notes`` the caption (plain values, tested
without drawing); ``draw`` renders them with matplotlib to PNG and SVG.
"""

from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass
from pathlib import Path

from course.capture.bundle import CaptureBundle
from course.capture.dissect import RecordView, dissect_all
from course.capture.h2frames import PREFACE

GAP_MARK = 0.020          # seconds: a gap longer than this gets a "≈" mark
WRAP = 64                 # characters per label line
MAX_ARROWS = 300          # a bulk transfer would draw thousands: the picture keeps the first ones
ROW_INCH = 0.30
NOTE_INCH = 0.15          # height of one caption line
# What a part of a label is on the wire; "mixed" is for arrows only (records of both kinds).
COLORS = {"tcp": "#7f7f7f", "plaintext": "#1f5fbf", "protected": "#a0307a", "http": "#1c8a3a",
          "mixed": "#222222"}
SYN, FIN = 0x02, 0x01     # TCP flag bits (RFC 9293 §3.1)


@dataclass(frozen=True)
class Arrow:
    time: float               # capture time (seconds since the epoch)
    source: str               # the column that sent it: "client", "proxy" or "origin"
    target: str
    label: str
    kind: str                 # "tcp", "plaintext", "protected", "http" or "mixed": the arrow's colour
    leg: str
    connection: int           # number of the TCP connection within its leg, from 1
    parts: tuple[tuple[str, str], ...] = ()   # (name, kind) of each piece of the label, in order
    retransmitted: bool = False               # the same segment was captured before

    @property
    def pieces(self) -> tuple[tuple[str, str], ...]:
        return self.parts or ((self.label, self.kind),)


def record_kind(view: RecordView) -> str:
    """The colour rule: "protected" if the record is encrypted on the wire, else "http" for a
    plaintext HTTP message start and "plaintext" for a TLS record sent in the clear.

    ``view.protected`` comes from the record layer, not from the key log: a TLS 1.3 record
    of outer type 23 (application_data) is a TLSCiphertext (RFC 8446 §5.2); in TLS 1.2 every
    record a side sends after its ChangeCipherSpec is (RFC 5246 §7.1)."""
    if view.protected:
        return "protected"
    return "http" if view.names and "HTTP/1." in view.names[0] else "plaintext"


def segment_kind(kinds: list[str]) -> str:
    """The arrow's colour: its records' common kind; "mixed" when they differ (TLS 1.3's
    ServerHello, ChangeCipherSpec and {EncryptedExtensions, ...} in one segment).  TCP flags
    travelling with data do not count."""
    content = [kind for kind in kinds if kind != "tcp"]
    if not content:
        return "tcp"
    return content[0] if len(set(content)) == 1 else "mixed"


def _tcp_label(segment) -> str:
    flags = segment.flag_text
    if "R" in flags:
        return "RST"
    if "S" in flags:
        return "SYN-ACK" if "A" in flags else "SYN"
    return "FIN" if "F" in flags else ""


def _record_labels(views: list[RecordView]) -> list[tuple[str, str]]:
    """(label, kind) for the records starting in one segment; consecutive records
    protected with TLS 1.3 handshake keys are grouped in one pair of braces."""
    parts, group = [], []
    for view in views + [None]:
        if view is not None and view.protected and view.keys == "handshake":
            group += view.names
            continue
        if group:
            parts.append(("{" + ", ".join(group) + "}", "protected"))
            group = []
        if view is None:
            break
        if view.protected:
            parts.append((f"[{view.detail or ', '.join(view.names)}]", "protected"))
        else:
            parts.append((", ".join(view.names), record_kind(view)))
    return parts


def _continued(views: list[RecordView], offset: int) -> RecordView | None:
    """The record a segment's first byte belongs to, when no record starts in it."""
    return next((v for v in views if v.offset <= offset < v.offset + v.length), None)


def ladder_arrows(bundle: CaptureBundle, *, include_acks: bool = False, decrypted: bool = True) -> list[Arrow]:
    """Every segment of every leg as an arrow, in time order.  ``decrypted=False`` names
    the records as an on-path observer without the key log sees them."""
    arrows = []
    for leg_name, leg in bundle.legs.items():
        connections = bundle.connections(leg_name)
        key_log = bundle.keys_log if decrypted else None
        for number, dissection in enumerate(dissect_all(connections, key_log), 1):
            views = dissection.records
            seen: set[tuple] = set()
            for segment in dissection.connection.segments:
                source, target = leg.ends if segment.sender == "client" else leg.ends[::-1]
                parts: list[tuple[str, str]] = []
                tcp = _tcp_label(segment)
                if tcp:
                    parts.append((tcp, "tcp"))
                if segment.payload:
                    end = segment.offset + len(segment.payload)
                    starting = [v for v in views[segment.sender] if segment.offset <= v.offset < end]
                    parts += _record_labels(starting)
                    if not starting:
                        if dissection.is_tls:      # the rest of a record begun in an earlier segment
                            record = _continued(views[segment.sender], segment.offset)
                            kind = record_kind(record) if record else "plaintext"
                            parts.append((f"({len(segment.payload)} more bytes)", kind))
                        else:
                            parts.append((_plain_label(segment.payload), "http"))
                # A segment with the same sequence number, length and SYN/FIN as an earlier one
                # is that segment sent again (RFC 9293 §3.8.1); pure ACKs repeat legitimately.
                key = (segment.sender, segment.seq, len(segment.payload), segment.flags & (SYN | FIN))
                retransmitted = key in seen and bool(segment.payload or segment.flags & (SYN | FIN))
                seen.add(key)
                parts = _count_repeats(parts)
                if retransmitted and parts:
                    parts[-1] = (parts[-1][0] + " (retransmitted)", parts[-1][1])
                if not parts:
                    if not include_acks:
                        continue
                    parts = [("ACK", "tcp")]
                label = ", ".join(text for text, _ in parts)
                arrows.append(Arrow(segment.time, source, target, label, segment_kind([k for _, k in parts]),
                                    leg_name, number, tuple(parts), retransmitted))
    return sorted(arrows, key=lambda a: a.time)


def _count_repeats(parts: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """["[Application Data]"] * 4 -> ["[Application Data] ×4"]: what an observer without keys
    sees of TLS 1.3's encrypted server flight."""
    result: list[tuple[str, str]] = []
    for text, kind in parts:
        if result and result[-1][0].split(" ×")[0] == text and result[-1][1] == kind:
            count = int(result[-1][0].split(" ×")[1]) + 1 if " ×" in result[-1][0] else 2
            result[-1] = (f"{text} ×{count}", kind)
        else:
            result.append((text, kind))
    return result


def _plain_label(payload: bytes) -> str:
    first = payload.split(b"\r\n", 1)[0][:60].decode("latin-1")
    return first if first.isprintable() else f"{len(payload)} bytes"


# --------------------------------------------------------------------------- the caption
def notes(arrows: list[Arrow]) -> list[str]:
    """What the end of each connection in ``arrows`` means: one sentence per kind of event
    (a FIN, a retransmission, a reset), worded from what the capture shows."""
    lines: list[str] = []
    if any(a.parts and a.parts[0][0].startswith("FIN") for a in arrows):
        line = ("FIN: each side ends its own direction with one (RFC 9293 §3.6); "
                "the ACKs of the FINs are among the pure ACKs left out.")
        legs = {a.leg for a in arrows}
        if len(legs) > 1:
            first_leg = arrows[0].leg
            last_front = max(a.time for a in arrows if a.leg == first_leg)
            later = sorted({a.leg for a in arrows if a.leg != first_leg and a.time > last_front
                            and a.parts and a.parts[0][0].startswith("FIN")})
            if later:
                line += (f" The {', '.join(later)} leg closes last: the proxy kept that connection open for "
                         "its next request (keep-alive, proxy/pool.py) until the capture stopped the servers.")
        lines.append(line)
    if any(a.retransmitted for a in arrows):
        lines.append("(retransmitted): the same segment sent again because its ACK had not come in time. "
                     "Loopback loses nothing: the receiver was delaying its ACK (RFC 9293 §3.8.6.3), and the "
                     "sender's tail-loss probe (RFC 8985 §7) re-sent its last segment first.")
    if any(piece == "HelloRetryRequest" for a in arrows for name, _ in a.pieces for piece in name.split(", ")):
        lines.append("HelloRetryRequest: the ClientHello carried a key share for a group the server does not take; "
                     "the server names one it does (in its key_share extension), and the client sends a second "
                     "ClientHello with it. One more round trip (RFC 8446 §4.1.4); on the wire it is a ServerHello "
                     "whose random is SHA-256(\"HelloRetryRequest\") (§4.1.3). The ChangeCipherSpec records "
                     "around it are the middlebox-compatibility ones (§D.4).")
    lines += _http2_notes(arrows)
    crossings = _ticket_crossings(arrows)
    if crossings:
        lines.append("[NewSessionTicket] and the request cross: the server sends its tickets once it has the "
                     "client's Finished (RFC 8446 §4.6.1), and the client sends its request right after its "
                     "Finished without waiting for them (§2). Over a network the request leaves about a round trip "
                     "before the tickets arrive; on loopback (without a delay line) a round trip takes microseconds "
                     "and either may be captured first. Here the request left " + "; ".join(crossings) + ".")
    for reset in (a for a in arrows if a.parts and a.parts[0][0] == "RST"):
        lines.append(_reset_note(reset, arrows))
    return list(dict.fromkeys(lines))     # one line per distinct explanation


def _http2_notes(arrows: list[Arrow]) -> list[str]:
    """What the HTTP/2 labels mean, and whether the client's request went out before the
    server's SETTINGS came in (computed from the arrows)."""
    preface = next((a for a in arrows if "Magic (preface)" in a.label), None)
    if preface is None:
        return []
    line = ("HTTP/2 (ALPN h2): each decrypted record is named by the frames that start in it; the number in "
            "brackets is the stream, 0 being the connection itself (RFC 9113 §5.1.1). The client opens with the "
            f"{len(PREFACE)}-byte preface and its SETTINGS (§3.4); each side acknowledges the other's SETTINGS "
            "(§6.5.3).")
    mine = [a for a in arrows if (a.leg, a.connection) == (preface.leg, preface.connection)]
    request = next((a for a in mine if a.source == preface.source and "HEADERS[" in a.label), None)
    settings = next((a for a in mine if a.source != preface.source
                     and "SETTINGS[0]" in (frame for text, _ in a.pieces for frame in text[1:-1].split(", "))),
                    None)                     # the server's own SETTINGS, not its ACK of the client's
    if request is not None and settings is not None and request.time < settings.time:
        line += (f" Here the request's HEADERS left {(settings.time - request.time) * 1000:.1f} ms before the "
                 "server's SETTINGS arrived: a client may send frames right after its preface without waiting "
                 "for the server's (§3.4).")
    return [line]


def _ticket_crossings(arrows: list[Arrow]) -> list[str]:
    """Where each TLS 1.3 connection's first request went among its NewSessionTickets:
    "before them", "between them" or "after them" ("it" for one ticket), naming the
    connection when there are several."""
    found = []
    connections = sorted({(a.leg, a.connection) for a in arrows})
    for leg, number in connections:
        mine = [a for a in arrows if (a.leg, a.connection) == (leg, number)]
        client = next((a.source for a in mine if a.pieces[0][0] == "SYN"), None)
        finished = next((a for a in mine if a.source == client and "{Finished}" in a.label), None)
        tickets = [a.time for a in mine if a.source != client and "[NewSessionTicket]" in a.label]
        request = next((a for a in mine if finished is not None and a.source == client and a.time > finished.time
                        and any(kind == "protected" for _, kind in a.pieces)), None)
        if not tickets or request is None:
            continue
        them = "them" if len(tickets) > 1 else "it"
        where = (f"before {them}" if request.time < min(tickets) else f"after {them}" if request.time > max(tickets)
                 else "between them")
        found.append((leg, number, where))
    several = len(found) > 1
    return [f"{where} on {leg} connection {number}" if several else where for leg, number, where in found]


def _reset_note(reset: Arrow, arrows: list[Arrow]) -> str:
    same = [a for a in arrows if (a.leg, a.connection) == (reset.leg, reset.connection) and a.time <= reset.time]
    fin = next((a for a in same if a.source == reset.source and a.pieces[0][0].startswith("FIN")), None)
    late = [a for a in same if fin is not None and a.source == reset.target and a.time > fin.time
            and any(kind != "tcp" for _, kind in a.pieces)]
    if fin is None or not late:
        return (f"RST from the {reset.source}: the connection was reset instead of closed "
                "(RFC 9293 §3.5.2).")
    notified = any("close_notify" in a.label for a in same if a.source == reset.source and a.time <= fin.time)
    # Data answered with RST after a FIN: the socket was closed, not only shut for writing.
    return (f"RST from the {reset.source}: it had sent {'its close_notify and ' if notified else ''}FIN and "
            f"closed its socket without waiting for the {reset.target} to finish "
            f"({'RFC 8446 §6.1 allows that' if notified else 'RFC 9293 §3.6'}); the {reset.target}'s "
            f"{late[-1].label} then reached a closed socket, and the {reset.source}'s kernel answered with "
            "a reset (RFC 9293 §3.6.1). Everything before it had arrived.")


# --------------------------------------------------------------------------- layout
def rows(arrows: list[Arrow]) -> list[float]:
    """The y position of each arrow: one row each (two for a label on two lines), plus
    log-scaled real time gaps."""
    positions, y = [], 0.0
    for index, arrow in enumerate(arrows):
        if index:
            gap_ms = (arrow.time - arrows[index - 1].time) * 1000
            y += 1 + min(2.5, math.log10(1 + max(gap_ms, 0.0))) + (0.6 if len(arrow.label) > WRAP else 0)
        positions.append(y)
    return positions


def label_lines(parts: tuple[tuple[str, str], ...]) -> list[list[tuple[str, str]]]:
    """The label broken into at most two lines of ``WRAP`` characters (after a comma where
    it can be), each piece keeping its kind: lines of (text, kind), ", " between the parts."""
    lines: list[list[tuple[str, str]]] = [[]]
    width = 0
    for index, (text, kind) in enumerate(parts):
        piece = text + (", " if index < len(parts) - 1 else "")
        for chunk in textwrap.wrap(piece, WRAP, break_long_words=False, drop_whitespace=False) or [piece]:
            if width and width + len(chunk.rstrip()) > WRAP:
                lines.append([])
                width = 0
                chunk = chunk.lstrip()
            lines[-1].append((chunk, kind))
            width += len(chunk)
    if len(lines) > 2:
        rest = "".join(text for line in lines[1:] for text, _ in line)
        lines = [lines[0], [(textwrap.shorten(rest, WRAP, placeholder=" …"), lines[1][0][1])]]
    return lines


def _label_box(parts, y, x, axes):
    """The label of one arrow centred above it, each piece in the colour of its kind."""
    from matplotlib.offsetbox import AnnotationBbox, HPacker, TextArea, VPacker

    rows = [HPacker(children=[TextArea(text, textprops={"color": COLORS[kind], "fontsize": 7.5})
                              for text, kind in line], align="baseline", pad=0, sep=0)
            for line in label_lines(parts)]
    box = VPacker(children=rows, align="center", pad=0, sep=1)
    axes.add_artist(AnnotationBbox(box, (x, y - 0.12), xycoords="data", box_alignment=(0.5, 0.0),
                                   frameon=False, pad=0, annotation_clip=False))


LEGEND = ("grey TCP · blue a TLS record sent in plaintext · purple a protected (encrypted) record · "
          "green plaintext HTTP · a black arrow carries both kinds (each name keeps its colour); pure ACKs left out\n"
          "{…} protected with TLS 1.3 handshake keys, […] with application keys (TLS 1.2: the session keys), "
          "RFC 8446 §2; time runs down, compressed across gaps (real time at the left)")


def draw(arrows: list[Arrow], columns: list[str], stem: str | Path, *, title: str = "",
         formats: tuple[str, ...] = ("png", "svg"), extra_notes: tuple[str, ...] = ()) -> list[Path]:
    """Draw the ladder and save it as ``stem.png`` and ``stem.svg``; return the paths.  The
    caption under it is ``extra_notes`` and ``notes(arrows)``."""
    import matplotlib
    from matplotlib.figure import Figure

    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    ys = rows(arrows)
    width = 4.0 * len(columns) + 2.5
    caption = [line for note in [*extra_notes, *notes(arrows)]
               for line in textwrap.wrap(note, int(width * 16), subsequent_indent="    ")]
    caption_inch = NOTE_INCH * len(caption) + (0.25 if caption else 0.0)
    height = (ys[-1] if ys else 1) * ROW_INCH + 2.2 + caption_inch
    x = {name: index * 4.0 for index, name in enumerate(columns)}
    figure = Figure(figsize=(width, height))
    bottom = 0.02 + caption_inch / height
    axes = figure.add_axes((0.02, bottom, 0.96, 0.96 - 1.2 / height - bottom + 0.02))
    start = arrows[0].time if arrows else 0.0
    for name, position in x.items():
        axes.plot([position, position], [-0.6, (ys[-1] if ys else 1) + 0.8], color="#444444", lw=1.2, zorder=1)
        axes.text(position, -1.2, name, ha="center", va="bottom", fontsize=11, weight="bold",
                  bbox={"boxstyle": "round", "fc": "#eeeeee", "ec": "#444444"})
    previous = None
    for arrow, y in zip(arrows, ys):
        x0, x1 = x[arrow.source], x[arrow.target]
        axes.annotate("", xy=(x1, y), xytext=(x0, y),
                      arrowprops={"arrowstyle": "-|>", "color": COLORS[arrow.kind], "lw": 1.3,
                                  "shrinkA": 0, "shrinkB": 0})
        _label_box(arrow.pieces, y, (x0 + x1) / 2, axes)
        axes.text(min(x.values()) - 0.35, y, f"{(arrow.time - start) * 1000:.3f} ms", ha="right",
                  va="center", fontsize=7, color="#555555", family="monospace")
        if previous is not None and arrow.time - previous > GAP_MARK:
            axes.text(min(x.values()) - 0.35, y - 0.9, f"≈ {(arrow.time - previous) * 1000:.0f} ms later",
                      ha="right", va="center", fontsize=7, color="#999999", style="italic")
        previous = arrow.time
    axes.set_xlim(min(x.values()) - 2.3, max(x.values()) + 0.6)
    axes.set_ylim((ys[-1] if ys else 1) + 1.0, -2.0)
    axes.axis("off")
    figure.suptitle(title, fontsize=12, y=1 - 0.25 / height, va="top")
    figure.text(0.5, 1 - 0.62 / height, LEGEND, ha="center", va="top", fontsize=8, color="#555555")
    for index, line in enumerate(caption):
        figure.text(0.03, (caption_inch - 0.15 - index * NOTE_INCH) / height, line, ha="left", va="top",
                    fontsize=7.5, color="#333333")
    paths = []
    with matplotlib.rc_context({"svg.fonttype": "none"}):
        for extension in formats:
            path = stem.with_suffix("." + extension)
            figure.savefig(path, dpi=110)
            paths.append(path)
    return paths


def draw_bundle(bundle: CaptureBundle, stem: str | Path, *, decrypted: bool = True, **options) -> list[Path]:
    """The ladder diagram of a capture bundle, as ``stem.png`` and ``stem.svg``."""
    columns = [host for host in ("client", "proxy", "origin") if host in bundle.hosts]
    view = "" if decrypted else ", as an on-path observer sees it (no keys)"
    arrows = ladder_arrows(bundle, decrypted=decrypted)
    if len(arrows) > MAX_ARROWS:
        view += f" (first {MAX_ARROWS} of {len(arrows)} packets)"
    return draw(arrows[:MAX_ARROWS], columns, stem, title=f"Ladder diagram: {bundle.title}{view}",
                extra_notes=tuple(bundle_notes(bundle)), **options)


def bundle_notes(bundle: CaptureBundle) -> list[str]:
    """What the figure needs said about how the capture was made: the delay lines."""
    lines = []
    for name, leg in bundle.metadata.get("legs", {}).items():
        rtt = leg.get("delay_ms")
        if rtt:
            near = leg.get("captured_at", leg["ends"][0])
            far = next(end for end in leg["ends"] if end != near)
            lines.append(f"The {name} leg went through a delay line of {rtt:g} ms round-trip time (course/delay.py) "
                         f"and was captured at the {near}'s end: each arrow is drawn when it left or reached the "
                         f"{near}; the {far} received it {rtt / 2:g} ms later. The TCP handshake is not delayed "
                         "(the kernel answers the SYN at once); over a real link the ClientHello would follow "
                         "one RTT after the SYN.")
    return lines


# Figures under diagrams/ (``make diagrams`` calls this through course.diagrams).
COMMITTED = {"ladder-tls13": ("terminate", "1.3", False), "ladder-tls12": ("terminate", "1.2", False),
             "ladder-tls13-resumed": ("terminate", "1.3", True)}


def regenerate_committed_figures(out: str | Path) -> list[Path]:
    """The ladder diagrams of a TLS 1.3, a TLS 1.2 and a resumed handshake through the
    terminating proxy, drawn from the bundled example captures (real runs, made with
    ``tlsproxy capture``), so that no root is needed and the figures change only when
    the captures do."""
    from course.capture.bundle import load_example

    paths: list[Path] = []
    for name, (setup, tls, resumed) in COMMITTED.items():
        paths += draw_bundle(load_example(setup, tls, resumed), Path(out) / name)
    return paths
