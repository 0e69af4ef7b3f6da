"""Limits: the documented defaults, and refusal of nonsense values."""

from __future__ import annotations

import dataclasses

import pytest

from proxy.http1 import Limits


def test_defaults_match_the_documented_sources() -> None:
    limits = Limits()
    assert limits.max_request_line == 8192  # nginx large_client_header_buffers 4 8k
    assert limits.max_field_line == 8192
    assert limits.max_head_size == 4 * 8192
    assert limits.max_fields == 100  # HAProxy tune.http.maxhdr 101
    assert limits.max_body_size == 1 << 30
    assert limits.max_chunk_ext == 4096


def test_limits_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        Limits().max_fields = 5  # type: ignore[misc]


@pytest.mark.parametrize("name", [f.name for f in dataclasses.fields(Limits)])
def test_non_positive_limit_is_refused(name: str) -> None:
    with pytest.raises(ValueError, match=name):
        Limits(**{name: 0})
