"""Text from outside (a cluster, a manifest, a job's logs, a data file) made safe for a terminal: the one owner.

A job message, a path in a manifest or a log line can carry escape sequences that move the cursor, rewrite
what is on screen, set the window title or hide text. `safe` drops ANSI escape sequences and shows every other
control character (and the Unicode bidirectional overrides) as a visible escape such as ``\\x07`` (or, for a
progress bar's fixed-width text, as a `placeholder` such as ``?``).

A name the user must recognise (a column of their file, a path listed in a manifest) is shown, never cleaned:
`visible` escapes every unprintable character and drops nothing, `quoted` is the same as a quoted literal
(``'dia\\x1b[31mlogue'``), so a message names what the file really holds.
"""

from __future__ import annotations

import re

# CSI (ESC [ ... final), OSC (ESC ] ... BEL or ESC \), and any other two-byte ESC sequence; also the 8-bit CSI.
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-_]?|\x9b[0-?]*[ -/]*[@-~]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _escape(m: re.Match[str]) -> str:
    c = m.group()
    return f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}"


def safe(s: object, *, multiline: bool = False, placeholder: str | None = None) -> str:
    """`s` as text that cannot drive a terminal: ANSI sequences removed, other control characters escaped
    (each replaced by `placeholder` instead, when given).

    With `multiline` (whole log texts), newlines and tabs are kept (``\\r\\n`` becomes ``\\n``); otherwise they
    are escaped too, so a message stays on one line."""
    text = _ANSI.sub("", str(s))
    mark = _escape if placeholder is None else (lambda m: placeholder)
    if not multiline:
        return _CONTROL.sub(mark, text)
    text = text.replace("\r\n", "\n")
    return _CONTROL.sub(lambda m: m.group() if m.group() in "\n\t" else mark(m), text)


def visible(s: object) -> str:
    """`s` with every unprintable character (controls, escape sequences' ESC, invisible Unicode) shown as its
    Python escape and nothing dropped: a name from a file or a manifest, as the user must find it."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(s))


def quoted(s: object) -> str:
    """`visible` as a quoted literal (Python's quoting): 'dia\\x1b[31mlogue'."""
    return repr(str(s))
