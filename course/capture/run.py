"""``tlsproxy capture``: run one setup, capture both legs, decrypt three ways, draw, tabulate.

Theory of operation
-------------------
::

    tlsproxy capture --setup terminate --out run1 [--tls 1.2|1.3] [--resumed] [--hrr]
                     [--rtt MS] [--backend-rtt MS] [--http2]

1. ``capture_setup`` starts the setup's origin and proxy as processes (``setups.Lab``)
   on fresh ports, with every TLS endpoint logging its secrets, starts one capture
   per leg (loopback: one per port on ``lo``; lab network: one per interface of the
   proxy), runs the lab client, stops the servers (so their FINs are captured) and
   the captures, and writes a capture bundle (``bundle.py``).
2. ``analyse`` reads a bundle, from this run or from anywhere: decrypts each leg with
   scapy, with our own key schedule and with tshark and checks they agree
   (``decrypt.py``), draws the ladder diagram (``ladder.py``), computes who sees what
   (``whosees.py``), counts the round trips through a delay line (``format_round_trips``)
   and writes ``summary.txt``.
3. ``--http2`` (terminate and re-encrypt): the proxy offers ALPN ``h2,http/1.1`` and the
   lab client speaks HTTP/2 (``h2client.py``); the summary lists the client leg's frames
   beside the HTTP/1.1 request the origin got (``h2view.py``).

When this machine cannot capture (not root, no CAP_NET_RAW, no libpcap), the command
says why in one line and analyses the bundled example capture closest to the flags given
instead (``bundle.load_example``; there are ``--rtt 40``, ``--hrr --rtt 40`` and ``--http2``
ones), naming what it lacks of them, so the rest of the lesson still works.  Output
directory after a run::

    client-leg.pcap  backend-leg.pcap  keys.log  keys/  client.json  server-cert.pem
    metadata.json  logs/  ladder.png  ladder.svg  summary.txt
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import platform
import shlex
import shutil
import ssl
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from course.capture.bundle import CaptureBundle, example_differences, load_example, merge_key_logs, write_metadata
from course.capture.client import Markers
from course.capture.setups import INTERCEPT_CA, SETUPS, Lab, Loopback, available_setups
from course.capture.sniff import capture_available
from proxy.errors import ConfigError

LEG_FILES = {"client": "client-leg.pcap", "backend": "backend-leg.pcap"}


# --------------------------------------------------------------------------- capture
def capture_setup(setup: str, out: str | Path, *, tls: str = "1.3", resumed: bool = False,
                  network=None, pki=None, command: str | None = None, rtt: float = 0.0,
                  backend_rtt: float = 0.0, hrr: bool = False, http2: bool = False) -> CaptureBundle:
    """Run ``setup`` once end to end while capturing both legs; return the bundle in ``out``.

    ``rtt`` (seconds) puts a delay line (``course.delay``) between the client and the proxy
    (or the origin, in the direct setups), ``backend_rtt`` one between the proxy and the
    origin; each leg's capture then shows the connecting party's end of it.  ``hrr`` makes
    the client's first key share one the proxy refuses (a HelloRetryRequest, TLS 1.3).
    ``http2``: HTTP/2 on the client leg (ALPN h2), HTTP/1.1 on the backend leg."""
    from proxy.pki import ensure_demo_certs

    chosen = SETUPS[setup]
    network = network or Loopback()
    out = Path(out)
    clear_outputs(out)
    with contextlib.ExitStack() as cleanup:
        if pki is None:
            pki = ensure_demo_certs(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="tlslab-pki-")))
        check_hrr(chosen, tls, hrr)
        check_http2(chosen, http2)
        lab = cleanup.enter_context(Lab(chosen, network, out, pki, rtt=rtt, backend_rtt=backend_rtt, http2=http2))
        captures = {leg: network.capture(chosen.leg_ends(leg), out / LEG_FILES[leg], lab.capture_port(leg))
                    for leg in chosen.leg_names}
        with contextlib.ExitStack() as capturing:
            for capture in captures.values():
                capturing.enter_context(capture)
            report = lab.run_client(tls=tls, resumed=resumed, hrr=hrr)
            lab.stop()                     # inside the capture: the closing FINs belong to it
    return _write_bundle(out, chosen, lab, network, report, tls=tls if chosen.client_tls else None,
                         resumed=resumed, command=command, hrr=hrr, http2=http2)


def check_http2(setup, http2: bool) -> None:
    """HTTP/2 is offered by the terminating proxy only (``proxy/modes/h2.py``); the origins
    speak HTTP/1.1, so end to end (direct, passthrough, a tunnel) there is no h2 to speak."""
    if http2 and (setup.mode != "terminate" or not setup.client_tls):
        raise ConfigError("--http2 needs a setup where the proxy terminates the client's TLS "
                          "(terminate, reencrypt): only it offers ALPN h2")


def check_hrr(setup, tls: str, hrr: bool) -> None:
    """A HelloRetryRequest exists in TLS 1.3 only, and only where the client speaks TLS."""
    if hrr and (tls != "1.3" or not setup.client_tls):
        raise ConfigError("a HelloRetryRequest is TLS 1.3's (RFC 8446 §4.1.4): --hrr needs --tls 1.3 "
                          "and a setup whose client speaks TLS")


OUTPUTS = ("client-leg.pcap", "backend-leg.pcap", "keys.log", "client.json", "server-cert.pem", "metadata.json",
           "ladder.png", "ladder.svg", "summary.txt", INTERCEPT_CA)


def clear_outputs(out: Path) -> None:
    """Remove what an earlier run left in ``out`` (only our own file names): key logs are
    appended to, and a stale backend pcap would be mistaken for this run's."""
    out.mkdir(parents=True, exist_ok=True)
    for name in OUTPUTS:
        (out / name).unlink(missing_ok=True)
    for directory in ("keys", "logs"):
        if (out / directory).is_dir():
            for path in (out / directory).iterdir():
                if path.suffix == ".log":
                    path.unlink()


def _write_bundle(out: Path, setup, lab: Lab, network, report: dict, *, tls, resumed, command,
                  hrr: bool = False, http2: bool = False) -> CaptureBundle:
    (out / "client.json").write_text(json.dumps(report, indent=1) + "\n")
    certificate = next((c["certificate"] for c in report["connections"] if c.get("certificate")), None)
    if certificate:
        (out / "server-cert.pem").write_text(certificate)
    keylogs = {party: f"keys/{party}.log" for party in ("client", "proxy", "proxy-backend", "origin")
               if (out / "keys" / f"{party}.log").exists()}
    merge_key_logs([out / name for name in keylogs.values()], out / "keys.log")
    legs = {leg: {"pcap": LEG_FILES[leg], "ends": list(setup.leg_ends(leg)),
                  "server_port": lab.capture_port(leg)}
            for leg in setup.leg_names}
    delays = {leg: rtt * 1000 for leg, rtt in (("client", lab.rtt), ("backend", lab.backend_rtt)) if rtt}
    for leg, rtt_ms in delays.items():      # a delay line with this RTT on the leg; which end was captured
        legs[leg].update(delay_ms=rtt_ms, captured_at=lab.captured_at(leg))
    return write_metadata(out, {
        "setup": setup.name, "picture": setup.picture, "summary": setup.summary, "tls": tls, "resumed": resumed,
        "network": network.name,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": command or f"tlsproxy capture --setup {setup.name} --out {shlex.quote(str(out))}"
                              + (f" --tls {tls}" if tls else "") + (" --resumed" if resumed else "")
                              + (" --hrr" if hrr else "") + (" --http2" if http2 else "")
                              + (f" --rtt {lab.rtt * 1000:g}" if lab.rtt else "")
                              + (f" --backend-rtt {lab.backend_rtt * 1000:g}" if lab.backend_rtt else ""),
        "rtt_ms": lab.rtt * 1000 or None, "backend_rtt_ms": lab.backend_rtt * 1000 or None, "hrr": hrr,
        "http2": http2,
        "hosts": {host: lab.address(host) for host in setup.hosts},
        "ports": lab.ports,
        "server_name": "www.example.test",
        "legs": legs, "keylogs": keylogs, "markers": vars(Markers()),
        "client_report": "client.json", "certificate": "server-cert.pem" if certificate else None,
        # interception: the CA the proxy minted the client's certificate with (its key is not kept)
        **({"intercept_ca": INTERCEPT_CA, "extra_files": [INTERCEPT_CA]} if lab.intercept_ca else {}),
        "versions": _versions(),
    })


def _versions() -> dict[str, str]:
    versions = {"python": platform.python_version(), "openssl": ssl.OPENSSL_VERSION}
    with contextlib.suppress(ImportError):
        import scapy

        versions["scapy"] = scapy.VERSION
    return versions


# --------------------------------------------------------------------------- analysis
@dataclass
class Report:
    bundle: CaptureBundle
    decryptions: dict                    # leg -> decrypt.CrossCheck
    table: object                        # whosees.Table
    pictures: list[Path]
    summary: str


def analyse(bundle: CaptureBundle, out: str | Path | None = None, *, pictures: bool = True) -> Report:
    """Decrypt every leg three ways, draw the ladder, compute who sees what, write summary.txt."""
    from course.capture import decrypt, ladder, whosees

    out = Path(out) if out is not None else bundle.directory
    out.mkdir(parents=True, exist_ok=True)
    decryptions = {leg: decrypt.cross_check(info.pcap, bundle.keys_log, [info.server_port])
                   for leg, info in bundle.legs.items()}
    table = whosees.who_sees_what(bundle)
    drawn = ladder.draw_bundle(bundle, out / "ladder") if pictures else []
    summary = format_summary(bundle, decryptions, table, drawn)
    (out / "summary.txt").write_text(summary)
    return Report(bundle, decryptions, table, drawn, summary)


def format_summary(bundle: CaptureBundle, decryptions: dict, table, pictures: list[Path]) -> str:
    from course.capture import h2view

    lines = [f"TLS Termination Lab capture: {bundle.title}",
             f"  {bundle.metadata.get('picture', '')}: {bundle.metadata.get('summary', '')}",
             f"  made with: {bundle.metadata.get('command', '?')}",
             "  hosts: " + ", ".join(f"{h} {a}" for h, a in bundle.hosts.items())]
    lines += [f"  {leg} leg: through a delay line of {info['delay_ms']:g} ms RTT, "
              f"captured at the {info.get('captured_at', info['ends'][0])}'s end"
              for leg, info in bundle.metadata.get("legs", {}).items() if info.get("delay_ms")]
    lines.append("")
    for leg, check in decryptions.items():
        lines += [f"== {leg} leg ({' <-> '.join(bundle.legs[leg].ends)}, {bundle.legs[leg].pcap.name})",
                  check.format(), ""]
    lines += format_round_trips(bundle)
    if h2view.is_http2_bundle(bundle, decryptions):
        lines += [h2view.format_http2(bundle, decryptions), ""]
    lines += ["== who sees what (computed from the captured bytes and each party's key log)", table.format(), ""]
    if bundle.metadata.get("intercept_ca"):    # setup 7: the certificates each session showed, the clues
        from course.capture.interception import analyse_interception

        lines += ["== interception (the certificate each TLS session showed, read from the capture)",
                  analyse_interception(bundle).format(), ""]
    if pictures:
        lines.append("ladder diagram: " + ", ".join(p.name for p in pictures))
    return "\n".join(lines) + "\n"


# The capture's clock and the delay line's differ by well under a millisecond: a wait shorter
# than one RTT by more than this is not a round trip (tests/integration/test_rtt_capture.py's SLACK).
WAIT_SLACK_MS = 3.0


def format_round_trips(bundle: CaptureBundle) -> list[str]:
    """Through a delay line on the client leg: when the first ClientHello, a HelloRetryRequest,
    the ServerHello and the lab client's request (a POST) were captured, and the round trips
    between the ClientHello and the request, counted as *waits* (the captured end heard from the
    other at least one RTT after it last sent; the machines' own work lengthens a wait, it cannot
    make one).  TLS 1.3 needs one (RFC 8446 §2), a HelloRetryRequest one more (§4.1.4), TLS 1.2
    two (RFC 5246 §7.3)."""
    leg = bundle.metadata.get("legs", {}).get("client", {})
    rtt = leg.get("delay_ms")
    if not rtt or not bundle.tls:
        return []
    from course.capture.ladder import ladder_arrows

    arrows = [a for a in ladder_arrows(bundle) if a.leg == "client" and a.connection == 1]
    client, near = arrows[0].source, leg.get("captured_at", leg["ends"][0])      # the SYN's sender; the captured end
    first = {name: next((a for a in arrows if test(a)), None) for name, test in (
        ("ClientHello", lambda a: a.source == client and "ClientHello" in a.label),
        ("HelloRetryRequest", lambda a: "HelloRetryRequest" in a.label),
        ("ServerHello", lambda a: a.source != client and a.label.startswith("ServerHello")),
        ("request", lambda a: a.source == client and "POST " in a.label))}
    hello, request = first["ClientHello"], first["request"]
    if hello is None or request is None:
        return []
    waits, last_sent = 0, hello.time if near == client else None
    for arrow in arrows[arrows.index(hello) + 1:arrows.index(request) + 1]:
        if arrow.source == near:
            last_sent = arrow.time
        elif last_sent is not None and (arrow.time - last_sent) * 1000 >= rtt - WAIT_SLACK_MS:
            waits, last_sent = waits + 1, None                  # one wait per flight
    since_syn = ", ".join(f"{name} {(a.time - arrows[0].time) * 1000:.1f}" for name, a in first.items() if a)
    elapsed = (request.time - hello.time) * 1000
    return [f"== round trips on the client leg (a delay line of {rtt:g} ms RTT, captured at the {near}'s end)",
            f"  ms after the SYN: {since_syn}",
            f"  the request left {elapsed:.1f} ms = {elapsed / rtt:.2f} RTT after the first ClientHello: "
            f"{waits} round trip{'s' if waits != 1 else ''} of TLS (waits of at least one RTT), "
            "the rest the machines' own work", ""]


# --------------------------------------------------------------------------- CLI
def configure_cli(parser: argparse.ArgumentParser) -> None:
    parser.description = ("Run one setup end to end on loopback, capture both legs with their TLS keys, "
                          "decrypt the request three ways (scapy, our key schedule, tshark), draw the "
                          "ladder diagram and compute who sees what.  Needs root (or CAP_NET_RAW) to "
                          "capture; without it, the bundled example capture is analysed instead.")
    parser.add_argument("--setup", choices=list(SETUPS), default="terminate", help="which setup (default terminate)")
    parser.add_argument("--out", required=True, metavar="DIR", help="directory for pcaps, keys, pictures, summary")
    parser.add_argument("--tls", choices=("1.2", "1.3"), default="1.3", help="the client's TLS version")
    parser.add_argument("--resumed", action="store_true", help="a second connection that resumes the session")
    parser.add_argument("--rtt", type=float, default=0.0, metavar="MS",
                        help="add this round-trip time (ms) between client and proxy: a userspace delay line "
                             "(course/delay.py; the TCP handshake itself is not delayed)")
    parser.add_argument("--backend-rtt", type=float, default=0.0, metavar="MS",
                        help="add this round-trip time (ms) between proxy and origin")
    parser.add_argument("--hrr", action="store_true",
                        help="the client offers a key share for P-521 only, which the proxy refuses: "
                             "a HelloRetryRequest (TLS 1.3), one more round trip")
    parser.add_argument("--http2", action="store_true",
                        help="HTTP/2 on the client leg: the proxy offers ALPN h2,http/1.1 and the lab client "
                             "speaks h2 (terminate, reencrypt); the backend leg stays HTTP/1.1")
    parser.add_argument("--no-pictures", action="store_true", help="skip the ladder diagram (PNG, SVG)")
    parser.add_argument("--from-bundle", metavar="DIR", help="analyse an existing capture bundle, capture nothing")
    parser.add_argument("--lesson", choices=("forward-secrecy",),
                        help="instead of a setup: a static-RSA and an ECDHE TLS 1.2 session, decrypted with "
                             "the server's private key alone")


def run_lesson(out: Path) -> int:
    from course.capture import secrecy

    reason = capture_available()
    if reason:
        print(f"tlsproxy capture: {reason}; analysing the bundled example capture instead.", file=sys.stderr)
        shutil.copytree(secrecy.example_lesson(), out, dirs_exist_ok=True)
    else:
        secrecy.capture_lesson(out)
    result = secrecy.analyse_lesson(out)
    (out / "summary.txt").write_text(result.format() + "\n")
    print(result.format())
    return 0


def _milliseconds(value: float, flag: str) -> float:
    """A delay flag in ms, as seconds; a bounded, non-negative value (course.delay.MAX_RTT)."""
    from course.delay import MAX_RTT

    if not 0 <= value <= MAX_RTT * 1000:
        raise ConfigError(f"{flag} takes 0 to {MAX_RTT * 1000:.0f} ms, not {value:g}")
    return value / 1000


def run_cli(args: argparse.Namespace) -> int:
    # Every path below decrypts with scapy, the bundled capture too: without it, stop here
    # (``course.cli`` turns the ModuleNotFoundError into one line saying what to install).
    import scapy  # noqa: F401

    out = Path(args.out)
    if args.lesson:
        return run_lesson(out)
    if args.from_bundle:
        bundle = CaptureBundle(args.from_bundle)
        if Path(args.from_bundle).resolve() != out.resolve():
            bundle = bundle.copy_to(out)
    else:
        check_hrr(SETUPS[args.setup], args.tls, args.hrr)
        check_http2(SETUPS[args.setup], args.http2)
        rtt, backend_rtt = _milliseconds(args.rtt, "--rtt"), _milliseconds(args.backend_rtt, "--backend-rtt")
        reason = capture_available()
        if reason is None and args.setup not in available_setups():
            reason = f"setup {args.setup} is not implemented yet (proxy/modes/{SETUPS[args.setup].mode}.py)"
        if reason:
            asked = dict(hrr=args.hrr, http2=args.http2, rtt_ms=args.rtt)
            example = load_example(args.setup, args.tls, args.resumed, **asked)
            unmet = example_differences(example, args.setup, args.tls, args.resumed, **asked,
                                        backend_rtt_ms=args.backend_rtt)
            unmet = ", ".join(unmet[:-1]) + " and " + unmet[-1] if len(unmet) > 1 else "".join(unmet)
            print(f"tlsproxy capture: {reason}; analysing the bundled example capture "
                  f"({example.title}) instead{f' (it has {unmet})' if unmet else ''}.", file=sys.stderr)
            bundle = example.copy_to(out)
        else:
            command = shlex.join(["tlsproxy", "capture", *sys.argv[2:]]) if len(sys.argv) > 2 else None
            try:
                bundle = capture_setup(args.setup, out, tls=args.tls, resumed=args.resumed, command=command,
                                       rtt=rtt, backend_rtt=backend_rtt, hrr=args.hrr, http2=args.http2)
            except (RuntimeError, TimeoutError) as error:
                raise ConfigError(str(error)) from None
    report = analyse(bundle, out, pictures=not args.no_pictures)
    print(report.summary)
    return 0
