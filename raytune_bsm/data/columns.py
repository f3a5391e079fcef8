"""Columns: which Arrow types hold text, and how a column's name is written in a message.

Text comes in several Arrow types, all accepted wherever text is (the dialogue, string labels, string ids):
`string`, `large_string`, `string_view`, and dictionary-encoded text (a pandas `category`, a Parquet
dictionary page). `plain` turns any of them into a `string` column, so later steps see one type.

A column's name is data from the user's file: it may hold an escape sequence or another control character.
`shown` writes it as a quoted literal with such characters visible (`'dia\\x1b[31mlogue'`), so a message
names the column the file really has; every data error names columns through it.
"""

from __future__ import annotations

from typing import Any, Iterable

import pyarrow as pa

from raytune_bsm.text import quoted


def is_text(t: pa.DataType) -> bool:
    """A string type, or a dictionary of strings."""
    if pa.types.is_dictionary(t):
        t = t.value_type
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)


def is_text_list(t: pa.DataType) -> bool:
    """A list of text (a dialogue given as its messages)."""
    lists = (pa.types.is_list, pa.types.is_large_list, pa.types.is_list_view, pa.types.is_large_list_view)
    return any(is_list(t) for is_list in lists) and is_text(t.value_type)


def plain(column: Any) -> Any:
    """A text column (array or chunked array) as `string`: dictionaries decoded, views and large strings cast;
    any other column as it is."""
    if not is_text(column.type) or pa.types.is_string(column.type):
        return column
    if isinstance(column, pa.ChunkedArray):
        return pa.chunked_array([plain(c) for c in column.chunks], pa.string())
    if pa.types.is_dictionary(column.type):  # its values as strings first (Arrow cannot take from a view)
        column = pa.DictionaryArray.from_arrays(column.indices, column.dictionary.cast(pa.string()))
    return column.cast(pa.string())


def shown(name: object) -> str:
    """A column name as a quoted literal, control and other invisible characters escaped: 'dia\\x1b[31mlogue'
    (text.quoted: names are shown, never cleaned)."""
    return quoted(name)


def shown_all(names: Iterable[object]) -> str:
    """Column names for a message: "'a', 'b'", or "none"."""
    return ", ".join(shown(n) for n in names) or "none"
