"""The course's tooling: everything that runs *around* the proxy to teach with it.

``proxy/`` is what ``tlsproxy serve`` runs; this package is what a course adds on top
of it, and the direction of imports is one way: ``course`` imports ``proxy``, never the
reverse (a test checks it).

=================  ==============================================================
cli.py             the ``tlsproxy`` command; ``serve`` and ``certs`` run ``proxy``
setups.py          the seven setups, the one table bench, capture and notebooks read
origin/            demo origin servers that say who they are (plain or TLS)
clients.py         the HTTPS client the demo, the labs and the notebooks use
demo.py            ``tlsproxy demo``: origins and the proxy on loopback
handshakes.py      traced requests, flights, round trips (notebook 2)
capture/           scapy capture of both legs, three decryptions, ladders, who sees what
bench/             the six setups and nginx measured side by side
nginx/             ``tlsproxy export nginx``: the equivalent nginx configuration
region.py          the region-locked lesson (a forward proxy placed in a network)
playground.py      the small in-process setups the notebooks start
diagrams.py        ``make diagrams``: figures from the code and from real runs
children.py        starting and stopping the processes the bench and capture run
=================  ==============================================================
"""
