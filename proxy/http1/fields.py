"""Field lines (RFC 9112 §5, RFC 9110 §5): the grammar shared by heads and trailers.

Theory of operation
-------------------
A header or trailer section is a list of lines ``field-name ":" OWS field-value OWS``.
Differences between how two HTTP implementations read these lines are where request
smuggling lives (RFC 9112 §11.2): if the proxy reads ``Transfer-Encoding : chunked``
as a framing header and the backend does not (or the reverse), they disagree about
where the body ends, and the attacker's second request hides inside the first one's
body.  So this module accepts exactly the grammar and rejects everything else:

* a field-name is a ``token`` (RFC 9110 §5.6.2); in particular there is no
  whitespace between the name and the colon (RFC 9112 §5.1: a server MUST reject it
  with 400, because lenient parsers disagreed about it);
* a line starting with SP or HTAB is obs-fold (RFC 9112 §5.2), which we reject:
  folding is how ``X: a\\r\\n Transfer-Encoding: chunked`` means two different things
  to two different parsers;
* a field-value holds only VCHAR, obs-text, SP and HTAB: never NUL, CR, LF or
  another control (RFC 9110 §5.5: "invalid and dangerous");
* lines end in CRLF, never a bare CR or a bare LF (RFC 9112 §2.2).

Speed matters: a keep-alive request pays this once per head.  The checks are arranged
so the common path is a few C-level passes over the whole head (``bytes.translate``
to find forbidden bytes, ``str.count`` for bare CR/LF) plus one ``partition`` and one
compiled-regex match per line.  Only when something is wrong do we take the slow
path (``explain_field_line``) to say *what* is wrong.
"""

from __future__ import annotations

import re

from proxy.errors import ProtocolError
from proxy.http1.headers import Headers

# RFC 9110 §5.6.2: tchar = "!" / "#" / "$" / "%" / "&" / "'" / "*" / "+" / "-" / "."
#                        / "^" / "_" / "`" / "|" / "~" / DIGIT / ALPHA
TCHAR = r"!#$%&'*+\-.^_`|~0-9A-Za-z"
TOKEN = re.compile(f"[{TCHAR}]+")
_is_token = TOKEN.fullmatch

# Bytes allowed anywhere in a head: HTAB, LF, CR, SP, VCHAR (0x21-0x7E), obs-text
# (0x80-0xFF).  `head.translate(None, _HEAD_BYTES)` deletes them; whatever is left is
# a NUL, another C0 control or DEL, each a 400 (RFC 9110 §5.5, RFC 9112 §2.2).
HEAD_BYTES = b"\t\n\r" + bytes(range(0x20, 0x7F)) + bytes(range(0x80, 0x100))


def find_forbidden_byte(block: bytes) -> int | None:
    """The first NUL/control/DEL in ``block`` (CR and LF are checked separately), or None."""
    leftover = block.translate(None, HEAD_BYTES)
    if not leftover:
        return None
    return leftover[0]


def check_line_endings(text: str, separators: int, what: str) -> None:
    """Every CR and LF in ``text`` must be one of its ``separators`` CRLF pairs.

    RFC 9112 §2.2: a bare CR MUST be treated as invalid (or replaced by SP); a bare
    LF MAY be accepted as a line end.  We accept neither: a proxy that ends lines at
    LF in front of a backend that does not is a smuggling pair.
    """
    if text.count("\r") != separators:
        raise ProtocolError(f"bare CR in {what} (RFC 9112 §2.2)")
    if text.count("\n") != separators:
        raise ProtocolError(f"bare LF in {what}: lines must end in CRLF (RFC 9112 §2.2)")


def parse_field_lines(lines: list[str], what: str = "header section") -> Headers:
    """Turn field lines (already split on CRLF, already free of controls) into Headers.

    The caller has already checked, for the whole block, that no NUL, control, bare
    CR or bare LF is present, and the sizes against the limits.
    """
    fields: list[tuple[str, str, str]] = []
    append = fields.append
    index: dict[str, list[str]] = {}  # built in the same pass (see headers.py)
    for line in lines:
        name, colon, value = line.partition(":")
        if not colon or _is_token(name) is None:
            raise ProtocolError(explain_field_line(line, what))
        lower = name.lower()
        value = value.strip(" \t")
        append((lower, name, value))
        if lower in index:
            index[lower].append(value)
        else:
            index[lower] = [value]
    return Headers._from_fields(fields, index)


def explain_field_line(line: str, what: str) -> str:
    """Say why ``line`` is not ``field-name ":" OWS field-value OWS`` (the slow path)."""
    if line[:1] in (" ", "\t"):
        # RFC 9112 §5.2: obs-fold is obsolete; a server MUST reject it (400) or unfold
        # it.  Also covers RFC 9112 §2.2: whitespace between the start-line and the
        # first field line, which a recipient MUST reject or ignore.
        return f"line folding (obs-fold) or leading whitespace in {what} (RFC 9112 §5.2)"
    name, colon, _ = line.partition(":")
    if not colon:
        return f"field line without a colon in {what} (RFC 9112 §5)"
    if not name:
        return f"empty field name in {what} (RFC 9110 §5.1)"
    if name.rstrip(" \t") != name:
        # RFC 9112 §5.1: "No whitespace is allowed between the field name and colon
        # ... A server MUST reject [it] with 400": lenient parsers have read
        # "Transfer-Encoding : chunked" differently (request smuggling).
        return f"whitespace between field name and colon in {what} (RFC 9112 §5.1)"
    return f"field name {name[:40]!r} is not a token in {what} (RFC 9110 §5.6.2)"
