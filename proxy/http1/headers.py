"""An ordered, case-insensitive multimap of header (or trailer) fields.

Theory of operation
-------------------
RFC 9110 §5.1: field names are case-insensitive, and §5.3: a field may appear on
several field lines whose order matters (``Set-Cookie``, ``Via``, ``X-Forwarded-For``).
So a dict is the wrong shape: ``Headers`` keeps the field lines as a list, in the
order received, with the name's original spelling (a proxy forwards what it got),
and looks names up case-insensitively.

Names and values are ``str`` decoded as latin-1, which maps each byte to exactly one
code point and back: nothing is lost, and ``encode("latin-1")`` gives the original
bytes for serialisation.  Values are stored without leading or trailing whitespace
(RFC 9112 §5.1: OWS around a field value is not part of it).

``Headers`` does not validate what you ``add``: the parser validates what comes off
the wire, and the serialiser refuses a CR or LF in a name or value (response
splitting, RFC 9112 §11.1), so nothing invalid reaches a socket either way.

Lookups go through an index (lower-cased name -> values) that the parser builds in
the same pass that splits the lines, and that any change simply discards (it is
rebuilt on the next lookup): the proxy looks up Host, Content-Length,
Transfer-Encoding, Connection and Expect on every request, and a dict lookup is
cheaper than a scan of every field line each time.

``tokens(name)`` reads a list-valued field (``Connection``, ``Transfer-Encoding``,
``Expect``) the way RFC 9110 §5.6.1 says: all field lines joined by commas, split,
stripped, empty elements ignored; lower-cased, because the tokens these fields
carry are compared case-insensitively.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator


class Headers:
    """Field lines in order; lookups ignore the case of the name."""

    __slots__ = ("_fields", "_index")

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        # Each entry is (lower-cased name, name as received, value).
        self._fields: list[tuple[str, str, str]] = (
            [(name.lower(), name, value) for name, value in items] if items else []
        )
        self._index: dict[str, list[str]] | None = None

    @classmethod
    def _from_fields(
        cls, fields: list[tuple[str, str, str]], index: dict[str, list[str]] | None = None
    ) -> Headers:
        """Adopt a parser-built list of (lower name, name, value) (and its index) as is."""
        headers = cls.__new__(cls)
        headers._fields = fields
        headers._index = index
        return headers

    def _values(self, key: str) -> list[str] | None:
        """The values of the lower-cased name ``key`` (do not modify), or None."""
        index = self._index
        if index is None:
            index = {}
            for lower, _, value in self._fields:
                if lower in index:
                    index[lower].append(value)
                else:
                    index[lower] = [value]
            self._index = index
        return index.get(key)

    # ------------------------------------------------------------------ lookups
    def get(self, name: str, default: str | None = None) -> str | None:
        """The first value of ``name``, or ``default``."""
        values = self._values(name.lower())
        return values[0] if values else default

    def get_all(self, name: str) -> list[str]:
        """Every value of ``name``, in order (one per field line)."""
        values = self._values(name.lower())
        return list(values) if values else []

    def tokens(self, name: str) -> list[str]:
        """The comma-separated list elements of every ``name`` line, stripped and lower-cased."""
        result: list[str] = []
        for value in self._values(name.lower()) or ():
            for element in value.split(","):
                element = element.strip(" \t")
                if element:  # RFC 9110 §5.6.1: ignore empty list elements
                    result.append(element.lower())
        return result

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        return self._values(name.lower()) is not None

    def __iter__(self) -> Iterator[tuple[str, str]]:
        for _, name, value in self._fields:
            yield name, value

    def __len__(self) -> int:
        return len(self._fields)

    # ------------------------------------------------------------------ changes
    def add(self, name: str, value: str) -> None:
        """Append one field line."""
        self._fields.append((name.lower(), name, value))
        self._index = None

    def set(self, name: str, value: str) -> None:
        """Replace every ``name`` line with one line, kept where the first one was."""
        key = name.lower()
        self._index = None
        fields = self._fields
        for index, (lower, _, _) in enumerate(fields):
            if lower == key:
                fields[index] = (key, name, value)
                self._fields = fields[: index + 1] + [f for f in fields[index + 1 :] if f[0] != key]
                return
        fields.append((key, name, value))

    def remove(self, name: str) -> None:
        """Remove every ``name`` line (no error if there is none)."""
        key = name.lower()
        self._fields = [f for f in self._fields if f[0] != key]
        self._index = None

    def copy(self) -> Headers:
        return Headers._from_fields(list(self._fields))

    # ------------------------------------------------------------------ dunder
    def __eq__(self, other: object) -> bool:
        """Equal when the same field lines (names as spelled, values) come in the same order."""
        if not isinstance(other, Headers):
            return NotImplemented
        return list(self) == list(other)

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"Headers({list(self)!r})"
