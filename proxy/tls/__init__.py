"""TLS for the lab: the handshake the proxy terminates, and the tools to watch it.

* ``contexts``: the single place every ``ssl.SSLContext`` is built (Mozilla
  "intermediate" profile, a certificate per SNI name, ALPN, session tickets, key log).
* ``records``: the record layer and shared vocabulary of the sans-IO TLS modules.

The package imports nothing on its own, so a sans-IO module here (the record
layer, a ClientHello parser, a key schedule) is importable without ``ssl``.
"""
