"""HTTP/2 on the client leg, mapped onto the proxy's HTTP/1.1 core (RFC 9113).

Theory of operation
-------------------
The `h2` library (python-hyper) does the HTTP/2 framing, HPACK and flow control: bytes
in, events out, like ``proxy.http1``.  What it hands over for each request is a header
block as a list of ``(name, value)`` byte pairs plus DATA lengths and END_STREAM.  This
package turns that into the proxy's own ``proxy.http1.Request``, so a request that
arrived over HTTP/2 goes through the same routing and forwarding rules (exactly one
Host, X-Forwarded-*, Via) as one that arrived over HTTP/1.1, and on to the same
HTTP/1.1 backend pool.

=============  =================================================================
downgrade.py   the strict h2 -> h1 downgrade of one request: pseudo-headers to a
               request-line, field validation, content-length vs DATA, trailers
response.py    the way back: an HTTP/1.1 response head as an HTTP/2 field block
connection.py  one connection's server side on top of `h2`: streams, stream errors,
               windows, GOAWAY; driven by both engines (proxy.modes.h2 and
               proxy.eventloop.h2session)
=============  =================================================================

Nothing here imports a socket, TLS or threads.  ``downgrade.py`` and ``response.py`` do
not even import the `h2` library: they take what `h2` delivers and are tested with
plain lists of byte pairs; ``connection.py`` drives `h2`, which is sans-IO itself.
"""

from proxy.h2.downgrade import (
    CONNECTION_SPECIFIC,
    BodyCounter,
    DowngradedRequest,
    downgrade_request,
    downgrade_trailers,
)

__all__ = [
    "CONNECTION_SPECIFIC",
    "BodyCounter",
    "DowngradedRequest",
    "downgrade_request",
    "downgrade_trailers",
]
