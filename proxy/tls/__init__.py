"""TLS for the lab: the handshake the proxy terminates, and the tools to watch it.

* ``contexts``: the single place every ``ssl.SSLContext`` the proxy uses is built (Mozilla
  "intermediate" profile, a certificate per SNI name, ALPN, session tickets, key log);
  the course's clients build theirs as a stock client would, on purpose (see there).
* ``records``: the record layer and shared vocabulary of the sans-IO TLS modules.
* ``clienthello``: a sans-IO ClientHello parser (SNI, ALPN, versions) for passthrough.
* ``keyschedule``: the TLS 1.3 key schedule and record decryption, by hand (RFC 8446 §7).
* ``rfc8448``: the published example handshake (RFC 8448 §3) the key schedule is checked on.
* ``trace``: the handshake as it happens, through CPython's message callback.
* ``mint``: certificates made on the fly for the intercepting forward proxy (lab only,
  ``proxy.modes.intercept``), signed by an interception CA.

The package imports nothing on its own, so a sans-IO module here (the record
layer, a ClientHello parser, a key schedule) is importable without ``ssl``.
"""
