"""Helpers for tests that drive real outside tools (curl, openssl, nginx, tshark ...).

Locally a missing tool skips the test with a reason; in CI (``CI=true``) a missing
tool is a failure, so a green CI run really exercised every tool.
"""

from __future__ import annotations

import os
import shutil

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_tool(name: str) -> str:
    """Return the path of ``name`` on PATH (or /usr/sbin), or skip/fail without it."""
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/bin")
    if path:
        return path
    message = f"{name} is not installed (install it with apt-get install {name})"
    if IN_CI:
        pytest.fail(message + "; CI must have every tool", pytrace=False)
    pytest.skip(message)


def require_root(reason: str) -> None:
    """Skip (or fail in CI) a test that needs root, e.g. for namespaces or live capture."""
    if os.geteuid() != 0:
        if IN_CI:
            pytest.fail(f"needs root: {reason}", pytrace=False)
        pytest.skip(f"needs root: {reason}")


def require_live_capture() -> None:
    """Root and tshark, or skip (fail in CI); as root, a capture that cannot start fails."""
    require_root("live packet capture")
    require_tool("tshark")
    from course.capture.sniff import capture_available  # needs scapy: callers importorskip it

    reason = capture_available()
    if reason:
        pytest.fail(f"running as root, yet capture is not possible: {reason}")
