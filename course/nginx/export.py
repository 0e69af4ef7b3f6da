"""``export_nginx(config)``: a whole nginx.conf from one of our configurations.

Theory of operation
-------------------
``_render`` checks what nginx cannot do (listen on port 0), writes the main context
(one worker in the foreground, every file it writes under the prefix), then an
``http {}`` block for terminate and re-encrypt listeners (``http_block.py``) and a
``stream {}`` block for passthrough listeners (``stream_block.py``), loading the
stream module first when it is dynamic.  Forward listeners have no nginx equivalent
and are skipped with a comment.  ``terminate_conf`` builds the benchmark's
production reference through the same ``_render``, with the two knobs a TOML
config does not have (``_Options``).
"""

from __future__ import annotations

from pathlib import Path

from proxy import config as cfg
from proxy.errors import ConfigError
from course.nginx.http_block import SSL_PROTOCOLS, _http_block, _Options
from course.nginx.installed import STREAM_MODULE_PACKAGE, stream_module_path
from course.nginx.stream_block import _stream_block
from course.nginx.syntax import _seconds, _Writer


def export_nginx(config: cfg.Config, *, prefix: str | None = None, nginx_version: str | None = None) -> str:
    """The nginx.conf that does what ``config`` does (see the ``course.nginx`` docstring).

    Paths nginx writes (pid, error log, temporary files) go under ``prefix``, or are
    left relative so that ``nginx -p PREFIX`` puts them there.  Forward listeners
    have no nginx equivalent and are skipped with a comment; ``skipped_listeners``
    tells a caller which.  ``nginx_version`` ("1.25.1") is the nginx to write for (HTTP/2's
    spelling changed in 1.25.1); by default the installed one (``installed.target_version``).
    """
    return _render(config, prefix, _Options(nginx_version=nginx_version))


def skipped_listeners(config: cfg.Config) -> list[cfg.ListenerConfig]:
    """The listeners ``export_nginx`` cannot translate (forward proxies)."""
    return [listener for listener in config.listeners if listener.mode == "forward"]


def _render(config: cfg.Config, prefix: str | None, options: _Options) -> str:
    for listener in config.listeners:
        if listener.listen.port == 0 and listener.mode != "forward":
            raise ConfigError(f"listener {listener.listen}: nginx cannot listen on port 0; give a port")
    w = _Writer()
    under = (lambda name: str(Path(prefix) / name)) if prefix else (lambda name: name)
    terminate = [li for li in config.listeners if li.mode == "terminate"]
    passthrough = [li for li in config.listeners if li.mode == "passthrough"]
    w.comment("Written by `tlsproxy export nginx`: the nginx equivalent of a TLS Termination Lab config.\n"
              f"Run it with:  nginx -p {prefix or 'PREFIX'} -c {under('nginx.conf')}")
    if passthrough and (module := stream_module_path()):
        w(f"load_module {module}", f"stream {{}} needs it: apt-get install {STREAM_MODULE_PACKAGE}")
    _main_settings(w, config, under)
    for listener in skipped_listeners(config):
        w.comment(f"listener {listener.listen} (mode forward) is not exported: nginx is not a forward proxy\n"
                  "(it has no CONNECT method and no absolute-form request handling); run tlsproxy for it.")
    if terminate:
        w.blank()
        with w.block("http"):
            _http_block(w, config, terminate, under, options)
    if passthrough:
        w.blank()
        with w.block("stream"):
            _stream_block(w, config, passthrough)
    return w.text()


def _main_settings(w: _Writer, config: cfg.Config, under) -> None:
    w.comment("No `user` directive: started as root, nginx runs its worker as `nobody`.  That is\n"
              "enough: the master reads every certificate and key and opens every log before it\n"
              "forks, and the worker never writes a temporary file (request bodies are streamed,\n"
              "responses never spill to disk), so it needs no access to the prefix directory.")
    w("worker_processes 1", "one worker: compared with our one process, CPU for CPU")
    w("daemon off", "stay in the foreground, a child of whoever started it")
    w(f"pid {under('nginx.pid')}")
    w(f"error_log {under('error.log')} warn")
    w(f"lock_file {under('nginx.lock')}")
    w(f"worker_shutdown_timeout {_seconds(config.timeouts.shutdown_grace)}", "Timeouts.shutdown_grace")
    connections = 2 * config.limits.max_connections + 64
    w(f"worker_rlimit_nofile {connections + 64}", "a file descriptor per connection, and a few for files")
    w.blank()
    with w.block("events"):
        w(f"worker_connections {connections}",
          "Limits.max_connections x 2 (client and backend leg), plus listeners")


# --------------------------------------------------------------------------- the benchmark's reference
def terminate_conf(listen_port: int, cert: str, key: str, upstreams: list[tuple[str, int]], *,
                   workdir: str, tls13_only: bool = False, keepalive: bool = True,
                   listen_host: str = "127.0.0.1", max_connections: int | None = None,
                   http2: bool = False) -> str:
    """nginx terminating TLS in front of plain-HTTP ``upstreams`` (round robin), one worker.

    The production reference of the benchmark: the terminate setup, no access log.
    ``tls13_only`` offers TLS 1.3 alone; ``keepalive=False`` opens a new backend
    connection per request (clients decide their own keep-alive); ``max_connections``
    sizes ``worker_connections`` as ``Limits.max_connections`` sizes our proxy; ``http2``
    offers h2 beside http/1.1, as ``alpn = ["h2", "http/1.1"]`` does on our listener.
    """
    pool = cfg.PoolConfig("origin", tuple(
        cfg.BackendConfig(url=f"http://{cfg.Address(h, p)}", scheme="http", host=h, port=p)
        for h, p in upstreams))
    config = cfg.Config(
        listeners=(cfg.ListenerConfig(cfg.Address(listen_host, listen_port), "terminate",
                                      (cfg.CertFiles(str(cert), str(key)),),
                                      alpn=("h2", "http/1.1") if http2 else ("http/1.1",)),),
        pools=(pool,), routes=(cfg.RouteConfig("origin"),), access_log=None,
        limits=cfg.Limits(max_connections=max_connections) if max_connections else cfg.Limits())
    options = _Options(protocols="TLSv1.3" if tls13_only else SSL_PROTOCOLS, upstream_keepalive=keepalive)
    return _render(config, str(workdir), options)
