"""The scale-out path: the same configuration, written for nginx.

Theory of operation
-------------------
This proxy is written to be read, not to carry a million users.  When a setup has
to scale out, the lab's answer is nginx, and this package shows that nothing is lost
in translation: ``export_nginx(config)`` writes the ``nginx.conf`` that does what
one of our TOML files does, directive by directive, and ``NginxProcess`` runs it
beside our proxy so the tests can send the same requests to both and compare::

    TOML ──config.load()──▶ Config ──export_nginx()──▶ nginx.conf ──NginxProcess──▶ nginx -p DIR
                              └──────ProxyServer(config)──▶ our proxy        (same answers)

How each part of a ``Config`` maps:

=====================================  ===========================================================
ours                                   nginx
=====================================  ===========================================================
terminate listener, certs by SNI       ``http { server { listen ... ssl; ssl_certificate ... } }``,
                                       one ``server`` per name, each with the certificate our SNI
                                       callback would pick for that name
alpn h2 on a terminate listener        ``listen ... ssl http2`` before nginx 1.25.1, ``http2 on``
                                       from it; Limits.max_concurrent_streams as ``http2_max_concurrent_streams``
route host: exact > ``*.x`` > ``*``    ``server_name`` exact > wildcard > ``default_server``
route path (longest prefix wins,       ``location`` (longest prefix wins); ``/api`` becomes
matched at a segment boundary)         ``location = /api`` plus ``location /api/``
pool, round_robin                      ``upstream`` (round robin is nginx's default)
least_connections / weighted           ``least_conn;`` / ``server ... weight=N``
passive health                         ``max_fails=N fail_timeout=Ts``
pool_max_idle                          ``keepalive N`` (with HTTP/1.1 and an empty Connection)
https:// backends (re-encrypt)         ``proxy_pass https://``, ``proxy_ssl_*``
passthrough listener (SNI splice)      ``stream { map $ssl_preread_server_name ...; ssl_preread }``
forward listener                       nothing: nginx is no forward proxy (no CONNECT)
Timeouts / Limits                      ``http_block._http_settings`` (each line names its source)
=====================================  ===========================================================

What does not translate, said in the output as comments: active health checks
(``health.path`` is an nginx Plus feature; open-source nginx only ejects passively),
the forward proxy, retries (nginx's default ``proxy_next_upstream error timeout`` tries
the next server after a failed connection or a timeout, where tlsproxy answers 502 and
retries only a stale kept-alive connection; nginx never ejects the server of a one-server
group), and a few parsing differences (nginx matches locations on the
decoded, dot-segment-resolved path; we match the raw request-target).

The file is self-contained: ``nginx -p PREFIX -c FILE`` runs it without reading
``/etc/nginx`` or writing ``/var/log``: pid file, error log and every temporary
directory live under the prefix, and the stream module (a separate package on
Debian, ``libnginx-mod-stream``) is loaded by absolute path when it is dynamic.

Reading order for a student, one idea per module:

===============  ===============================================================
installed.py     the nginx on this machine: path, version, dynamic stream module
syntax.py        ``_Writer``: directives and blocks; times, sizes, quoting
export.py        ``export_nginx`` and ``terminate_conf``: the whole nginx.conf
http_block.py    ``http {}``: terminate and re-encrypt (servers, locations, pools)
stream_block.py  ``stream {}``: passthrough (ssl_preread and an SNI map)
process.py       ``NginxProcess``: run it, wait until it is ready, stop it
cli.py           ``tlsproxy export nginx``: ``configure_cli`` / ``run_cli``
===============  ===============================================================
"""

from course.nginx.cli import configure_cli, run_cli
from course.nginx.export import export_nginx, skipped_listeners, terminate_conf
from course.nginx.http_block import SSL_ECDH_CURVE, SSL_PROTOCOLS, SYSTEM_CA_BUNDLE, TEMP_DIRS
from course.nginx.installed import STREAM_MODULE_PACKAGE, nginx_path, nginx_version, stream_module_path
from course.nginx.process import NginxProcess
from course.nginx.stream_block import POOL_VARIABLE

__all__ = [
    "POOL_VARIABLE",
    "SSL_ECDH_CURVE",
    "SSL_PROTOCOLS",
    "STREAM_MODULE_PACKAGE",
    "SYSTEM_CA_BUNDLE",
    "TEMP_DIRS",
    "NginxProcess",
    "configure_cli",
    "export_nginx",
    "nginx_path",
    "nginx_version",
    "run_cli",
    "skipped_listeners",
    "stream_module_path",
    "terminate_conf",
]
