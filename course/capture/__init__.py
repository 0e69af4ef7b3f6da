"""See TLS at work: capture both legs of a setup, decrypt them, draw and tabulate them.

::

    sniff.py     Capture: scapy + libpcap on loopback or inside a lab namespace; capture_available()
    flows.py     pcap -> TCP connections -> the byte stream each side sent
    dissect.py   a connection's HTTP messages or TLS records, opened with a key log
    tls12.py     TLS 1.2 record decryption (key log or, for static RSA, the server's key)
    decrypt.py   three independent decryptions (scapy, our key schedule, tshark), cross-checked
    secrecy.py   the forward-secrecy lesson: static RSA vs ECDHE, the server's key alone
    ladder.py    ladder (sequence) diagrams: client | proxy | origin, one arrow per packet
    whosees.py   "who sees what", computed from the bytes and each party's key log
    interception.py  the certificate each TLS session showed; what gives interception away
    client.py    the lab client and the markers in its request
    h2client.py  the same request over HTTP/2 (the h2 library), for ``--http2``
    h2frames.py  HTTP/2 frames in decrypted bytes: listed, named, header blocks HPACK-decoded
    h2view.py    the summary's HTTP/2 section: client-leg frames beside the origin's HTTP/1.1 request
    recorder.py  a relay that keeps a copy of each direction (a capture without capturing)
    setups.py    the setups as processes, on loopback or in the namespace lab network
    bundle.py    a capture directory (pcaps, key logs, metadata); load_example()
    run.py       ``tlsproxy capture``

Importing this package does not import scapy or matplotlib; the modules that need
them import them when used.
"""

from course.capture.bundle import CaptureBundle, load_example
from course.capture.sniff import Capture, capture_available

__all__ = ["Capture", "CaptureBundle", "capture_available", "load_example"]
