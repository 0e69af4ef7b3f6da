"""A limit on open connections per client address, checked at accept (nginx stream ``limit_conn``).

Theory of operation
-------------------
``Limits.max_connections`` bounds every connection together, so one client that opens
enough of them takes every slot, and everyone else waits in the kernel's backlog.
Against a slow client that is the whole attack (slowloris, Robert Hansen, 2009): each
of its connections trickles a request head and holds a slot for as long as the head
timeout allows, and on the threaded engine a connection thread as well.

``ClientAddressLimit`` counts the open connections of each client address, over all the
proxy's listeners, and refuses the one over ``max_connections_per_client`` right after
``accept()``: no TLS handshake, no thread held, the socket closed at once.  Both engines
ask it (``admit``) before they serve a connection, and tell it when one ends
(``release``)::

    accept() ──▶ admit(address)? ──no──▶ close; counted as refused_per_client
                      │ yes
                      ▼
                 handshake, requests ... close ──▶ release(address)

What it counts, its default, and what it cannot do, said plainly:

* It counts what nginx's *stream* ``limit_conn`` counts: every connection, and over the
  limit "the server will close the connection" (ngx_stream_limit_conn_module).  HAProxy's
  equivalent is ``tcp-request connection reject if { src_conn_cur ge N }``, over a stick
  table that stores ``conn_cur`` per source address.  nginx's *HTTP* ``limit_conn`` is
  another thing: it counts a connection only once "the whole request header has already
  been read" and answers 503 (ngx_http_limit_conn_module), so it never sees a slowloris
  connection, whose head never ends.
* It is off by default (0), as ``limit_conn`` is until configured: many honest clients
  can share one address (a company's NAT, carrier-grade NAT, a forward proxy), and a
  limit low enough to stop an attacker would cut them off too.
* It counts addresses, not people: a swarm spread over many addresses passes it, each
  address under the limit.  Against that, only the head timeout
  (``Timeouts.header_read``) and a ``max_connections`` sized to what memory holds are
  left, and on the threaded engine every slow connection still costs a thread
  (``python -m course.bench.slowclients`` measures both engines).
* The address is the TCP peer's: behind a load balancer every client has the
  balancer's address.
"""

from __future__ import annotations

import threading
from collections import Counter


class ClientAddressLimit:
    """Open connections per client address, at most ``limit`` each (0: no limit)."""

    def __init__(self, limit: int = 0) -> None:
        self.limit = limit
        self.open: Counter[str] = Counter()
        self.lock = threading.Lock()  # the threaded engine's connection threads share it

    def admit(self, address: str) -> bool:
        """Count one more connection from ``address``; False (counted nowhere) if it is one too many."""
        if not self.limit:
            return True  # no limit: nothing to count
        with self.lock:
            if self.open[address] >= self.limit:
                return False
            self.open[address] += 1
            return True

    def release(self, address: str) -> None:
        """A connection that ``admit`` let in has ended."""
        if not self.limit:
            return
        with self.lock:
            self.open[address] -= 1
            if self.open[address] <= 0:
                del self.open[address]  # no entry left behind per address ever seen
