"""Where the proxy's CPU goes: cProfile of every thread of a real proxy process under load.

Theory of operation
-------------------
The benchmark says *how much* CPU the proxy spends per request; a profile says
*where*.  ``profile_proxy`` starts a fresh terminate setup whose proxy runs under
``python -m course.bench.serve --profile FILE`` (every thread profiled, timed by its
own CPU clock), drives it with the load generator for a few seconds, stops it
(SIGTERM: the statistics are written at shutdown) and reads the file back::

    own s    cum s     calls  function
    0.176    0.176      2453  ~:0(<method 'recv' of '_socket.socket' objects>)
    0.101    0.191      4856  fields.py:69(parse_field_lines)
    ...

"Own" time (``tottime``) is time spent in the function itself, not in what it
calls: the column that says where to optimise.  C functions appear as ``~:0``;
``_profile_group`` names them by their object (OpenSSL I/O, socket syscalls), and
the by-module table adds everything up per file.  Profiling costs about as much as
the work it watches, so compare shares, not absolute times, and never measure a
profiled proxy.
"""

from __future__ import annotations

import io
import pstats
import sys
from pathlib import Path

from course.bench.measure import run_cell
from course.bench.setups import SetupLauncher, instance_key
from course.bench.workloads import BY_NAME


def profile_proxy(pki, workdir: Path, out: Path, *, seconds: float = 5.0, warmup: float = 0.5,
                  workload_name: str = "keepalive-1k", top: int = 15) -> dict:
    """Run the terminate proxy under cProfile with one workload; the top functions by own time.

    ``out/profile.txt`` gets pstats' own listing; the answer lists the ``top``
    functions and modules by own time (the ``pstats`` file stays in ``workdir``).
    """
    profile_dir = workdir / "profile"
    profile_dir.mkdir(parents=True, exist_ok=True)
    workload = BY_NAME[workload_name]
    launcher = SetupLauncher(pki, profile_dir, profile_dir=profile_dir)
    key = instance_key("terminate", workload.cert)
    print(f"bench: profiling the proxy under {workload_name} for {seconds:g}s", file=sys.stderr)
    try:
        target = launcher.start([key])[key]
        measured = run_cell(target, workload, str(pki.ca), warmup=warmup, duration=seconds,
                            max_requests=10_000_000)
    finally:
        launcher.stop()
    stats_path = profile_dir / "terminate.pstats"
    text = io.StringIO()
    stats = pstats.Stats(str(stats_path), stream=text)
    stats.sort_stats("tottime").print_stats(top)
    (Path(out) / "profile.txt").write_text(text.getvalue())
    rows = []
    for (filename, line, name), (_cc, calls, tottime, cumtime, _callers) in sorted(
            stats.stats.items(), key=lambda item: item[1][2], reverse=True)[:top]:
        rows.append({"function": f"{Path(filename).name}:{line}({name})", "calls": calls,
                     "tottime_s": round(tottime, 4), "cumtime_s": round(cumtime, 4)})
    total = sum(v[2] for v in stats.stats.values())
    by_file: dict[str, float] = {}
    for (filename, _line, name), value in stats.stats.items():
        where = _profile_group(filename, name)
        by_file[where] = by_file.get(where, 0.0) + value[2]
    groups = [{"where": k, "tottime_s": round(v, 4), "share": round(v / total, 3) if total else None}
              for k, v in sorted(by_file.items(), key=lambda item: item[1], reverse=True)[:top]]
    return {"workload": workload_name, "requests": measured["requests"], "pstats": str(stats_path),
            "total_tottime_s": round(total, 3), "top": rows, "by_module": groups}


def _profile_group(filename: str, name: str) -> str:
    """A profile entry's module: ``proxy/http1/head.py``, ``socket``, ``ssl`` (C calls by their object)."""
    if filename == "~":  # a C function: name it by its object ("<method 'read' of '_ssl._SSLSocket' objects>")
        for marker, group in (("_ssl.", "C: _ssl (OpenSSL I/O)"), ("_socket.", "C: _socket (syscalls)"),
                              ("select", "C: select"), ("_thread.", "C: locks")):
            if marker in name:
                return group
        return "C: other built-ins"
    path = Path(filename)
    parts = path.parts
    if "proxy" in parts:
        return "/".join(parts[parts.index("proxy"):])
    return f"stdlib: {path.name}"


def format_profile(profile: dict) -> str:
    lines = [f"\nprofile of the proxy under {profile['workload']} ({profile['requests']} requests, cProfile, "
             f"all threads; own time total {profile['total_tottime_s']} s)",
             f"  {'own s':>8}{'cum s':>9}{'calls':>10}  function"]
    for row in profile["top"]:
        lines.append(f"  {row['tottime_s']:>8.3f}{row['cumtime_s']:>9.3f}{row['calls']:>10}  {row['function']}")
    lines.append("  own time by module:")
    for group in profile.get("by_module", []):
        lines.append(f"  {group['tottime_s']:>8.3f}{group['share'] * 100:>8.1f}%  {group['where']}")
    return "\n".join(lines)
