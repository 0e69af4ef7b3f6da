"""The benchmark: does TLS termination really take the TLS cost off the origin, and what does it cost the proxy?

Theory of operation
-------------------
``tlsproxy bench`` starts the six setups of DESIGN.md, and nginx as the production
reference, as real processes on loopback, drives them with a load generator in a
process of its own, and reads every process's CPU time from ``/proc`` around each
measured window.  The figure it reports is *CPU per request per component*, which
stays meaningful on a small machine where the client itself is the bottleneck::

    workloads.py   the table of workloads (keep-alive, new connection, resumed, RSA,
                   TLS 1.2, bulk, upload, idle connections) and the setups each is for
    setups.py      start and stop each setup's processes; who plays which role
    serve.py       the proxy as the benchmark runs it (access log off, as nginx's)
    loadgen.py     the load generator process (threads; plain, TLS, CONNECT) ...
    httpclient.py  ... and its small HTTP/1.1 client
    cpu.py         utime + stime of a process (all its threads) from /proc/PID/stat
    measure.py     one cell: load generator (or wrk) + CPU read at the window's edges
    h2load.py      one HTTP/2 cell, driven by h2load (nghttp2), shaped like a wrk cell
    floor.py       the crypto floor: openssl speed for ECDSA, X25519, RSA, AES-GCM
    floor_relay.py the Python floor: a TLS byte relay with no HTTP, the sweep's 4th column
    results.py     machine info, medians over rounds, ratios to nginx, JSON and CSV
    charts.py      the offload chart and four more, PNG and SVG
    report.py      the text tables printed at the end
    profiling.py   where the proxy's CPU goes: cProfile of every thread, top functions
    runner.py      the command: rounds interleaved across setups, progress, output
"""
