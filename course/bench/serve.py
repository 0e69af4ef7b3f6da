"""The proxy as the benchmark runs it: ``tlsproxy serve``, access log off, optionally profiled.

Theory of operation
-------------------
The benchmark compares our proxy with nginx, and nginx runs with ``access_log off``
(``course.nginx.terminate_conf``).  ``tlsproxy serve`` always logs (to stderr by
default), and formatting and writing a line per request is a cost nginx is not
paying, so the benchmark starts the proxy through this module instead: the same
flags (``proxy.server.configure_cli``), the same ``config_from_args``, the same
``ProxyServer``, with ``access_log=None``::

    python -m course.bench.serve --listen 127.0.0.1:0 --cert ... --key ... --backend http://...

``--pool-max-idle N`` sets ``Limits.pool_max_idle``, the idle connections the backend
pool keeps per backend (``proxy/pool.py``); ``0`` keeps none, so every response's
connection is closed on release and the next request opens a new one: the unpooled
variant of setup 3 (``course.bench.variants``), which separates what pooling saves
the origin from what TLS offload saves it.

``--profile FILE`` runs every thread of the proxy under ``cProfile``, timed by the
thread's own CPU clock, and writes the merged statistics (``pstats`` format) to
FILE at shutdown (SIGTERM).  ``cProfile``
alone would see only the main thread, which does nothing but wait for a signal; a
``threading.setprofile`` hook starts one profiler in each new thread, the pool's
connection threads included.  Profiling roughly doubles the CPU cost, so a
profiled proxy is never a measured one: the profile says *where* the time goes.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import threading
import time
from dataclasses import replace

from course.children import raise_file_limit
from proxy import config as cfg
from proxy import server as proxy_server
from proxy.errors import ConfigError


class ThreadProfiles:
    """One ``cProfile.Profile`` per thread, started by a ``threading.setprofile`` hook."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.profiles: list[tuple[threading.Thread, cProfile.Profile]] = []

    def install(self) -> None:
        threading.setprofile(self._start_in_thread)
        self._start_in_thread()

    def _start_in_thread(self, *_hook_args) -> None:
        # Called as the new thread's first profile event: replace this hook with a
        # profiler of the thread's own (enable() installs it for the current thread).
        # time.thread_time: the CPU clock of the calling thread.  The default timer is the
        # wall clock, which would charge a thread's waits (recv, the pool's queue, the
        # GIL) to whatever it waited in; we want where the CPU goes.
        profile = cProfile.Profile(time.thread_time)
        with self.lock:
            self.profiles.append((threading.current_thread(), profile))
        profile.enable()

    def dump(self, path: str, join_timeout: float = 3.0) -> None:
        """Merge every thread's statistics into ``path``, after the threads have ended.

        A profiler closes the calls still open when it is read, and times them with
        the clock of the thread *reading* (this one): garbage for a thread still
        inside a call.  So the threads are given a moment to return first (after
        ``shutdown`` the pool's threads do), and a thread still running after that
        is left out: a listener blocked in ``accept()``, which costs nothing.
        """
        threading.setprofile(None)
        me = threading.current_thread()
        deadline = time.monotonic() + join_timeout
        for thread in threading.enumerate():
            if thread is not me:
                thread.join(max(0.0, deadline - time.monotonic()))
        with self.lock:
            profiles = [p for thread, p in self.profiles if thread is me or not thread.is_alive()]
        stats = pstats.Stats(profiles[0])
        for profile in profiles[1:]:
            stats.add(profile)
        stats.dump_stats(path)


def with_pool_max_idle(config: cfg.Config, max_idle: int) -> cfg.Config:
    """``config`` with ``Limits.pool_max_idle = max_idle``, applied after validation.

    ``proxy.config.validate`` refuses zero for every limit (a zero elsewhere, say
    ``max_connections``, would refuse every client), but for this one zero means what
    nginx's ``upstream`` without ``keepalive`` means: ``ConnectionPool.release`` finds
    its queue full and closes the connection.  So the value is set on the validated
    configuration, for the benchmark only.
    """
    if max_idle < 0:
        raise ConfigError(f"--pool-max-idle must be 0 or more, got {max_idle}")
    return replace(config, limits=replace(config.limits, pool_max_idle=max_idle))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m course.bench.serve", description=__doc__.split("\n\n")[0])
    proxy_server.configure_cli(parser)
    parser.add_argument("--profile", metavar="FILE", help="profile every thread; pstats written to FILE at exit")
    parser.add_argument("--pool-max-idle", type=int, metavar="N",
                        help="idle backend connections kept per backend (Limits.pool_max_idle); 0: none, "
                             "a new backend connection per request")
    parser.add_argument("--max-connections", type=int, metavar="N",
                        help="concurrent client connections (Limits.max_connections, default 1024): the "
                             "10,000-idle-connection workload raises it, as nginx's worker_connections")
    args = parser.parse_args(argv)
    config = replace(proxy_server.config_from_args(args), access_log=None)
    if args.pool_max_idle is not None:
        config = with_pool_max_idle(config, args.pool_max_idle)
    if args.max_connections is not None:
        if args.max_connections < 1:
            raise ConfigError(f"--max-connections must be at least 1, got {args.max_connections}")
        config = replace(config, limits=replace(config.limits, max_connections=args.max_connections))
    raise_file_limit()
    profiles = ThreadProfiles() if args.profile else None
    if profiles:
        profiles.install()
    server = proxy_server.ProxyServer(config).bind()
    server.start()
    for (host, port), listener in zip(server.addresses, config.listeners):
        print(f"tlsproxy: {listener.mode} listening on {host}:{port}", file=sys.stderr, flush=True)
    server.serve_forever()
    if profiles:
        profiles.dump(args.profile)
    return 0


if __name__ == "__main__":
    sys.exit(main())
