"""The second engine: one thread, non-blocking sockets, the same sans-IO core.

Theory of operation
-------------------
``tlsproxy serve --engine eventloop`` (TOML: ``engine = "eventloop"`` under ``[proxy]``)
serves every connection from one thread.  The threaded engine gives each connection
a thread that *blocks* in ``recv`` until bytes come; here one thread asks the kernel
which of all the sockets are *ready* (``selectors``: epoll on Linux) and does, for
each, the one step those bytes allow.  That is how nginx, HAProxy and Node serve tens
of thousands of connections: the *C10K problem* (Dan Kegel, 1999) was that a thread
or process per connection runs out of memory and drowns in context switches long
before the network is busy, and readiness notification is the answer that stuck.

What changes, and what does not::

    shared by both engines (never copied)         the event loop's own (this package)
    ---------------------------------------       ------------------------------------------
    proxy.http1 (readers, framing, forwarding)    loop.py     selector, timer heap, call_soon
    proxy.exchange (phases, ON_FAILURE, and the    stream.py   non-blocking plain/TLS socket,
      shared decisions: route, upstream_head,                  buffered writes, back-pressure
      client_keep_alive, backend_reusable, ...)   backends.py non-blocking connect and TLS to
    proxy.lifecycle (connection states)                        backends; the idle pool
    proxy.routing, proxy.balancer, proxy.errors   session.py  the exchange driven by events
    proxy.h2 (the downgrade; H2Server: streams,   h2session.py HTTP/2: one H2Server, a
      stream errors, windows, GOAWAY)                          session.py exchange per stream
    proxy.tls.clienthello, passthrough's log      tunnel.py   passthrough: SNI, then the splice
    proxy.policy, proxy.modes.forward's shared    forward.py  absolute-form and CONNECT; DNS in
      decisions (authorize, the log line, ...)                worker threads; CONNECT's splice
    ProxyServer: listeners, stats, access log,                 is tunnel.py's
      status page, health checks, TLS contexts    engine.py   accept, TLS handshake, the
                                                              connection limit, shutdown

A student compares them file to file: ``engine.py`` with ``proxy/server.py`` and
``proxy/acceptors.py``, ``session.py`` with ``proxy/modes/terminate.py``, ``h2session.py`` with ``proxy/modes/h2.py``, ``stream.py`` with
``proxy/transport.py``, ``backends.py`` with ``proxy/pool.py``, ``forward.py`` with
``proxy/modes/forward.py``.

The costs, said plainly: one thread uses one core (run one process per core, as
nginx runs workers); a callback that blocks stops every connection; and the code no
longer reads top to bottom like the protocol, which is why ``proxy.exchange`` carries
the phases: both engines walk the same table.

Every mode is served here (``proxy.config.EVENTLOOP_MODES``), HTTP/1.1 and HTTP/2 (ALPN h2)
on the client leg; only the forward proxy's interception is the threaded engine's so far.  Passthrough is ``tunnel.py``
(SNI routing, then a splice with half-close); the forward proxy is ``forward.py``
(absolute-form through the same exchange, CONNECT through the same splice, names
resolved by worker threads so that a slow lookup stops no other connection).
"""

from proxy.eventloop.engine import EventLoopEngine

__all__ = ["EventLoopEngine"]
