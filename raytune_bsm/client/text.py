"""Text from outside (a cluster, a manifest, a job's logs) made safe for a terminal.

A job message, a path in a manifest or a log line can carry escape sequences that move the cursor, rewrite
what is on screen, set the window title or hide text. `safe` drops ANSI escape sequences and shows every other
control character (and the Unicode bidirectional overrides) as a visible escape such as ``\\x07``.
"""

from __future__ import annotations

import re

# CSI (ESC [ ... final), OSC (ESC ] ... BEL or ESC \), and any other two-byte ESC sequence; also the 8-bit CSI.
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-_]?|\x9b[0-?]*[ -/]*[@-~]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _escape(m: re.Match[str]) -> str:
    c = m.group()
    return f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}"


def safe(s: object, *, multiline: bool = False) -> str:
    """`s` as text that cannot drive a terminal: ANSI sequences removed, other control characters escaped.

    With `multiline` (whole log texts), newlines and tabs are kept (``\\r\\n`` becomes ``\\n``); otherwise they
    are escaped too, so a message stays on one line."""
    text = _ANSI.sub("", str(s))
    if not multiline:
        return _CONTROL.sub(_escape, text)
    text = text.replace("\r\n", "\n")
    return _CONTROL.sub(lambda m: m.group() if m.group() in "\n\t" else _escape(m), text)
