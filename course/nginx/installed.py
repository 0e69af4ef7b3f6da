"""The nginx installed on this machine: where it is, which version, how it was built.

Theory of operation
-------------------
Everything that runs or reads nginx first asks here.  ``nginx_path()`` finds the
binary (PATH, then the sbin directories, where Debian puts it), or None, so a test
can skip and the benchmark can leave nginx out.  ``nginx -V`` (read once per binary
and cached) tells the version and the configure arguments; from the latter,
``stream_module_path()`` decides whether the ``stream {}`` block that passthrough
needs must be loaded as a dynamic module (Debian: the ``libnginx-mod-stream``
package) or is built in.  ``target_version()`` is the version an export writes for:
the installed one, or Debian 12's when there is none (HTTP/2 is spelled differently
before and after nginx 1.25.1, see ``http_block._listen_http2``).
"""

from __future__ import annotations

import functools
import re
import shutil
import subprocess

from proxy.errors import ConfigError

STREAM_MODULE_PACKAGE = "libnginx-mod-stream"
# What an export targets when nginx is not installed here: Debian 12 (bookworm) ships 1.22.1.
DEFAULT_TARGET_VERSION = "1.22.1"


# --------------------------------------------------------------------------- the installed nginx
def nginx_path() -> str | None:
    """The nginx binary (PATH, then /usr/sbin), or None when nginx is not installed."""
    return shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin:/sbin")


def _require_nginx() -> str:
    path = nginx_path()
    if not path:
        raise ConfigError("nginx is not installed (apt-get install nginx-light)")
    return path


@functools.lru_cache(maxsize=None)
def _build_info(path: str) -> str:
    """``nginx -V``: version and configure arguments (nginx prints them on stderr)."""
    done = subprocess.run([path, "-V"], capture_output=True, text=True, timeout=10)
    return done.stderr + done.stdout


def nginx_version() -> str:
    """'1.22.1' for the installed nginx."""
    info = _build_info(_require_nginx())
    match = re.search(r"nginx/(\S+)", info)
    if not match:
        raise ConfigError(f"cannot read the nginx version from: {info.strip()[:80]}")
    return match.group(1)


def target_version() -> tuple[int, ...]:
    """The nginx version an export is written for: the installed one, else ``DEFAULT_TARGET_VERSION``."""
    return parse_version(nginx_version() if nginx_path() else DEFAULT_TARGET_VERSION)


def parse_version(text: str) -> tuple[int, ...]:
    """'1.22.1' -> (1, 22, 1), comparable with a tuple."""
    if not re.fullmatch(r"\d+(\.\d+)*", text):
        raise ConfigError(f"not an nginx version: {text!r} (want something like 1.22.1)")
    return tuple(int(part) for part in text.split("."))


def stream_module_path() -> str | None:
    """Where the dynamic stream module must be, or None when nginx has it built in.

    Debian builds ``--with-stream=dynamic`` and ships the module in its own package,
    so a stock nginx-light cannot read a ``stream {}`` block until that package is
    installed and the module is loaded.
    """
    path = nginx_path()
    info = _build_info(path) if path else "--with-stream=dynamic"
    if "--with-stream=dynamic" not in info:
        return None
    modules = re.search(r"--modules-path=(\S+)", info)
    return f"{modules.group(1) if modules else '/usr/lib/nginx/modules'}/ngx_stream_module.so"
