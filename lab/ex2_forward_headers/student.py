"""Exercise 2: forward with X-Forwarded-For and hop-by-hop stripping.  This is your file.

Run it:             .venv/bin/python lab/ex2_forward_headers/student.py
Check your work:    .venv/bin/python -m lab.check 2        (or: make check LAB=2)

Read README.md in this folder first.  ``Headers`` and ``Request`` come from the
``proxy`` package, and so does the list of always-hop-by-hop names, ``HOP_BY_HOP``.
Write the four functions yourself; afterwards compare them with
``proxy/http1/forwarding.py``.
"""

from __future__ import annotations

from proxy.http1 import HOP_BY_HOP, Headers, Request  # noqa: F401  (you will need them)


# Step 1 ------------------------------------------------------------------------------
def hop_by_hop_names(headers: Headers) -> set[str]:
    """Lower-cased names of the fields that describe only this hop (RFC 9110 §7.6.1).

    That is every name in HOP_BY_HOP, plus every name listed in the Connection
    field(s) (``headers.tokens("connection")`` reads them), but never "host".
    """
    # TODO step 1
    raise NotImplementedError("step 1: hop_by_hop_names")


# Step 2 ------------------------------------------------------------------------------
def strip_hop_by_hop(headers: Headers) -> Headers:
    """A new Headers without the hop-by-hop fields; the others in their order.

    Do not change ``headers`` itself: build a new ``Headers([(name, value), ...])``.
    """
    # TODO step 2
    raise NotImplementedError("step 2: strip_hop_by_hop")


# Step 3 ------------------------------------------------------------------------------
def forwarded_for(headers: Headers, client_ip: str) -> str:
    """The X-Forwarded-For value to send on: the list so far, then ``client_ip``.

    ``X-Forwarded-For: 203.0.113.7`` from a client at 10.0.0.5 becomes
    "203.0.113.7, 10.0.0.5"; there may be several X-Forwarded-For lines, or none.
    """
    # TODO step 3
    raise NotImplementedError("step 3: forwarded_for")


# Step 4 ------------------------------------------------------------------------------
def rewrite_for_origin(request: Request, client_ip: str) -> Request:
    """The request to send to the origin; ``request`` itself stays as it was.

    Same method and target, version HTTP/1.1, hop-by-hop fields removed, and one
    X-Forwarded-For line with the value from step 3.
    """
    # TODO step 4
    raise NotImplementedError("step 4: rewrite_for_origin")


def demo() -> None:
    """Step 5: your rewrite_for_origin in a real forwarder, in front of a real origin."""
    import json

    from lab.harness import TinyForwarder, http_request
    from course.origin import Origin

    with Origin("web") as origin, TinyForwarder(rewrite_for_origin, origin.address) as forwarder:
        status, body = http_request(forwarder.port, "GET", "/demo", {
            "Connection": "keep-alive, X-Debug-Token",
            "X-Debug-Token": "only-for-the-first-hop",
            "X-Forwarded-For": "203.0.113.7",
        })
        forwarder.raise_first_error()  # your function's exception, if it raised one
        print(f"forwarder on port {forwarder.port} -> origin on port {origin.port}: {status}")
        print("what the origin received:")
        for name, value in json.loads(body)["headers"]:
            print(f"    {name}: {value}")


if __name__ == "__main__":
    try:
        demo()
    except NotImplementedError as todo:
        print(f"... not written yet: {todo}.  Then run: python -m lab.check 2")
