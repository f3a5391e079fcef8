"""raytune_bsm/text.py, the one sanitizer: what a cluster, a manifest or a file says cannot drive a terminal."""

from __future__ import annotations

import pytest

from raytune_bsm.text import quoted, safe, visible


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("plain text, ünïcode ok", "plain text, ünïcode ok"),
        ("\x1b[31mred\x1b[0m", "red"),  # colours (SGR) removed
        ("\x1b]0;owned title\x07job", "job"),  # OSC: window title
        ("ok\x1b[2J\x1b[Hcleared", "okcleared"),  # clear screen, cursor home
        ("bell\x07", "bell\\x07"),
        ("two\nlines\ttab\rback", "two\\x0alines\\x09tab\\x0dback"),  # one line stays one line
        ("\u202eevil.exe", "\\u202eevil.exe"),  # bidi override shown, not obeyed
        ("\x9b31mc1", "c1"),  # 8-bit CSI
        ("nul\x00del\x7f", "nul\\x00del\\x7f"),
    ],
)
def test_safe_single_line(raw: str, shown: str) -> None:
    assert safe(raw) == shown


def test_safe_multiline_keeps_newlines_and_tabs_only() -> None:
    logs = "epoch 1\r\n\tloss 0.5\n\x1b[1mbold\x1b[0m\rprogress\x08"
    assert safe(logs, multiline=True) == "epoch 1\n\tloss 0.5\nbold\\x0dprogress\\x08"


def test_safe_of_non_strings() -> None:
    assert safe(None) == "None" and safe(3) == "3"


def test_the_bar_variant_and_the_name_variants_share_the_rules() -> None:
    # a progress bar: one '?' per control character, escape sequences dropped, newlines and tabs kept
    assert safe("run\x1b[2J\rname\x07\u202e\tx", multiline=True, placeholder="?") == "run?name??\tx"
    # a name from a file or a manifest: shown as it is, every unprintable escaped, nothing dropped
    assert visible("a\x1b[31mb\u202ec") == "a\\x1b[31mb\\u202ec"
    assert quoted("dia\x1b[31mlogue") == "'dia\\x1b[31mlogue'"
