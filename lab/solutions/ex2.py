"""Exercise 2, reference solution: forward with X-Forwarded-For and hop-by-hop stripping.

The student's file is ``lab/ex2_forward_headers/student.py``; this is the same file
with every TODO done.  Check it with ``python -m lab.check 2 --solution``.
"""

from __future__ import annotations

from proxy.http1 import HOP_BY_HOP, Headers, Request


# Step 1 ------------------------------------------------------------------------------
def hop_by_hop_names(headers: Headers) -> set[str]:
    """Lower-cased names of the fields that describe only this hop (RFC 9110 §7.6.1)."""
    named_by_connection = set(headers.tokens("connection"))
    return (set(HOP_BY_HOP) | named_by_connection) - {"host"}


# Step 2 ------------------------------------------------------------------------------
def strip_hop_by_hop(headers: Headers) -> Headers:
    """A new Headers without the hop-by-hop fields; the others in their order."""
    drop = hop_by_hop_names(headers)
    return Headers((name, value) for name, value in headers if name.lower() not in drop)


# Step 3 ------------------------------------------------------------------------------
def forwarded_for(headers: Headers, client_ip: str) -> str:
    """The X-Forwarded-For value to send on: the list so far, then ``client_ip``."""
    return ", ".join(headers.get_all("x-forwarded-for") + [client_ip])


# Step 4 ------------------------------------------------------------------------------
def rewrite_for_origin(request: Request, client_ip: str) -> Request:
    """The request to send to the origin; ``request`` itself stays as it was."""
    headers = strip_hop_by_hop(request.headers)
    headers.set("X-Forwarded-For", forwarded_for(request.headers, client_ip))
    return Request(request.method, request.target, "HTTP/1.1", headers)


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
    demo()
