"""Headers: ordered, case-insensitive, multi-valued field lines."""

from __future__ import annotations

from proxy.http1 import Headers


def sample() -> Headers:
    return Headers([("Host", "a"), ("Accept", "*/*"), ("X-Forwarded-For", "1.1.1.1"), ("x-forwarded-for", "2.2.2.2")])


def test_order_and_original_case_are_kept() -> None:
    assert list(sample()) == [
        ("Host", "a"),
        ("Accept", "*/*"),
        ("X-Forwarded-For", "1.1.1.1"),
        ("x-forwarded-for", "2.2.2.2"),
    ]
    assert len(sample()) == 4


def test_lookups_ignore_case() -> None:
    headers = sample()
    assert headers.get("HOST") == "a"
    assert headers.get("x-FORWARDED-for") == "1.1.1.1"  # the first value
    assert headers.get_all("X-Forwarded-For") == ["1.1.1.1", "2.2.2.2"]
    assert "accept" in headers and "ACCEPT" in headers
    assert "missing" not in headers
    assert 42 not in headers  # type: ignore[operator]


def test_missing_name() -> None:
    headers = sample()
    assert headers.get("missing") is None
    assert headers.get("missing", "dflt") == "dflt"
    assert headers.get_all("missing") == []
    assert headers.tokens("missing") == []


def test_get_all_returns_a_copy() -> None:
    headers = sample()
    headers.get_all("x-forwarded-for").append("mutated")
    assert headers.get_all("x-forwarded-for") == ["1.1.1.1", "2.2.2.2"]


def test_add_appends_and_is_visible_to_lookups() -> None:
    headers = sample()
    assert headers.get("Via") is None  # builds the lookup index
    headers.add("Via", "1.1 a")
    headers.add("via", "1.1 b")
    assert headers.get_all("VIA") == ["1.1 a", "1.1 b"]
    assert list(headers)[-2:] == [("Via", "1.1 a"), ("via", "1.1 b")]


def test_set_replaces_every_line_at_the_first_position() -> None:
    headers = sample()
    headers.get("x-forwarded-for")
    headers.set("X-FORWARDED-FOR", "9.9.9.9")
    assert list(headers) == [("Host", "a"), ("Accept", "*/*"), ("X-FORWARDED-FOR", "9.9.9.9")]
    assert headers.get_all("x-forwarded-for") == ["9.9.9.9"]


def test_set_appends_when_absent() -> None:
    headers = sample()
    headers.set("Via", "1.1 p")
    assert list(headers)[-1] == ("Via", "1.1 p")


def test_remove_removes_every_occurrence() -> None:
    headers = sample()
    headers.get("x-forwarded-for")
    headers.remove("X-Forwarded-FOR")
    assert "x-forwarded-for" not in headers
    assert list(headers) == [("Host", "a"), ("Accept", "*/*")]
    headers.remove("not-there")  # no error
    assert len(headers) == 2


def test_copy_is_independent() -> None:
    original = sample()
    duplicate = original.copy()
    duplicate.add("X-New", "1")
    duplicate.remove("Host")
    assert "x-new" not in original and original.get("host") == "a"
    assert duplicate == Headers([("Accept", "*/*"), ("X-Forwarded-For", "1.1.1.1"),
                                 ("x-forwarded-for", "2.2.2.2"), ("X-New", "1")])


def test_tokens_split_strip_lowercase_and_skip_empty_elements() -> None:
    headers = Headers([("Connection", "Keep-Alive, Upgrade"), ("connection", " ,X-Foo\t, ,")])
    assert headers.tokens("CONNECTION") == ["keep-alive", "upgrade", "x-foo"]


def test_equality_is_by_lines_in_order() -> None:
    assert Headers([("A", "1"), ("B", "2")]) == Headers([("A", "1"), ("B", "2")])
    assert Headers([("A", "1"), ("B", "2")]) != Headers([("B", "2"), ("A", "1")])
    assert Headers() == Headers([])
    assert repr(Headers([("A", "1")])) == "Headers([('A', '1')])"
