"""Labels: a label column -> the class set -> class indices.

The classes are the distinct values present in the training labels (sorted), or 0..num_classes-1 for integer
labels when `num_classes` is given. Nothing is sized by a label's value: a label of 1,000,000,000 next to 0 and 1
is a three-class problem named "0", "1", "1000000000", not a billion-class one. A column with more than
MAX_CLASSES distinct values, or with a single one, is refused, whatever its type.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Literal, Sequence

import numpy as np
import pyarrow as pa

from raytune_bsm.data.columns import is_text, plain, shown
from raytune_bsm.errors import ConfigError, DataError

log = logging.getLogger(__name__)

MAX_CLASSES = 10_000  # more distinct labels than this: the label column is almost surely the wrong one
MAX_SHOWN = 5  # offending rows named in an error

LabelKind = Literal["int", "bool", "str"]


def rows_text(rows: Sequence[int], values: Sequence[Any] | None = None) -> str:
    """The first offending rows: "rows 1, 3" or "row 1 ('x'), row 3 ('y')"."""
    rows = [int(i) for i in rows[:MAX_SHOWN]]
    if values is None:
        return ("row " if len(rows) == 1 else "rows ") + ", ".join(str(i) for i in rows)
    return ", ".join(f"row {i} ({values[i]!r})" for i in rows)


def label_kind(t: pa.DataType, path: str, label_field: str) -> LabelKind:
    """The kind of a label column's values; a dictionary's (a pandas `category`) are its values' kind."""
    if is_text(t):
        return "str"
    if pa.types.is_dictionary(t):
        t = t.value_type
    if pa.types.is_boolean(t):
        return "bool"
    if pa.types.is_integer(t):
        return "int"
    raise DataError(f"{path}: column {shown(label_field)} has type {t}; labels must be integers, booleans or strings")


@dataclass
class Labels:
    """Class names in index order; `index` maps a label value to its class index."""

    names: list[str]
    kind: LabelKind
    index: dict[Any, int] = field(default_factory=dict)

    @classmethod
    def infer(cls, column: pa.ChunkedArray, path: str, label_field: str, num_classes: int | None) -> "Labels":
        """The classes of a training label column (no nulls: those are checked before)."""
        kind = label_kind(column.type, path, label_field)
        if num_classes is not None and not 2 <= num_classes <= MAX_CLASSES:
            raise ConfigError(f"num_classes must be between 2 and {MAX_CLASSES}, got {num_classes}")
        distinct = _values(column, kind, path, label_field).unique()  # bounded by the row count, never by a value
        if len(distinct) > MAX_CLASSES:
            raise DataError(
                f"{path}: column {shown(label_field)} has {len(distinct):,} distinct labels, more than the "
                f"{MAX_CLASSES:,} classes bsm accepts; is it the label column? (name the right one with --label-field)"
            )
        values = sorted(distinct.to_pylist())
        if len(values) < 2:
            raise DataError(
                f"{path}: column {shown(label_field)} has a single class {str(values[0])!r} in every row; "
                "need at least two classes"
            )
        if kind == "bool":
            if num_classes not in (None, 2):
                raise DataError(
                    f"{path}: column {shown(label_field)} holds booleans (2 classes) but num_classes={num_classes}"
                )
            return cls(names=["False", "True"], kind=kind, index={False: 0, True: 1})
        if kind == "int" and num_classes is not None:
            if values[0] < 0 or values[-1] >= num_classes:
                col = _values(column, kind, path, label_field)
                bad = np.flatnonzero(~_in_range(col, num_classes))
                sample = col.take(pa.array(bad[:MAX_SHOWN])).to_pylist()
                raise DataError(
                    f"{path}: column {shown(label_field)} has {len(bad)} label(s) outside 0..{num_classes - 1} (num_classes): "
                    + ", ".join(f"row {int(i)} ({v!r})" for i, v in zip(bad, sample))
                )
            return cls(names=[str(i) for i in range(num_classes)], kind=kind, index={i: i for i in range(num_classes)})
        if kind == "int" and values != list(range(len(values))):
            listed = ", ".join(map(str, values[:8])) + (", ..." if len(values) > 8 else "")
            log.info(
                "%s: column %r holds %d distinct integer labels (%s), not 0..%d: %d classes named by their values",
                path,
                label_field,
                len(values),
                listed,
                len(values) - 1,
                len(values),
            )
        if kind == "str" and num_classes is not None and num_classes != len(values):
            raise DataError(
                f"{path}: column {shown(label_field)} has {len(values)} classes but num_classes={num_classes}"
            )
        return cls(names=[str(v) for v in values], kind=kind, index={v: i for i, v in enumerate(values)})

    def encode(self, column: pa.ChunkedArray, path: str, label_field: str) -> np.ndarray:
        """A label column -> int64 class indices; a label not among the classes is a DataError naming its rows."""
        kind = label_kind(column.type, path, label_field)
        if kind != self.kind:
            raise DataError(
                f"{path}: column {shown(label_field)} holds {kind} labels but training labels are {self.kind}"
            )
        import pyarrow.compute as pc

        values = _values(column, kind, path, label_field)
        value_set = pa.array(list(self.index), type=values.type)
        idx = pc.index_in(values, value_set=value_set)  # null where the label is not a class
        if idx.null_count:
            bad = np.flatnonzero(idx.is_null().to_numpy(zero_copy_only=False))
            sample = values.take(pa.array(bad[:MAX_SHOWN])).to_pylist()
            raise DataError(
                f"{path}: column {shown(label_field)} has {len(bad)} label(s) not among the classes {self.names}: "
                + ", ".join(f"row {int(i)} ({v!r})" for i, v in zip(bad, sample))
            )
        order = np.asarray([self.index[v] for v in value_set.to_pylist()], dtype=np.int64)
        return order[idx.to_numpy(zero_copy_only=False).astype(np.int64)]


def _values(column: pa.ChunkedArray, kind: LabelKind, path: str, label_field: str) -> pa.Array:
    """One array of comparable values: dictionaries decoded, text as string, integers as int64."""
    if kind == "str":
        column = plain(column)
    elif pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if kind == "int" and arr.type != pa.int64():
        try:
            return arr.cast(pa.int64())
        except pa.ArrowInvalid:  # uint64 above 2**63
            raise DataError(f"{path}: column {shown(label_field)} holds integers beyond the 64-bit range") from None
    return arr


def _in_range(values: pa.Array, n: int) -> np.ndarray:
    import pyarrow.compute as pc

    return pc.and_(pc.greater_equal(values, 0), pc.less(values, n)).to_numpy(zero_copy_only=False)
