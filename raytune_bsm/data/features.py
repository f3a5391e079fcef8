"""Side features: the numeric columns a model reads next to the dialogue (`--features a,b,c` or `auto`).

    data.feature_fields         the columns, or "auto": every integer, float or boolean column but the label and id
      -> resolve()              checked on the training files' schema: a string column or an unknown name is an error
      -> check_present()        val/test files must have every one of them
      -> to_matrix()            a table's columns -> raw float32 [n, F]: nulls become NaN, booleans 0/1, infinities stay
      -> Moments / fit          statistics of the training split only, from the same pass that reads it (partial
                                moments per batch, merged): mean, std, min, max and the share missing per feature
      -> model.SideFeatures     clips to [min, max], imputes the mean (plus a missing indicator), standardizes

The statistics travel in the model config (`feature_stats`), so a checkpoint, an export's graphs (where the
preprocessing is baked in as ONNX ops) and `bsm_model.json` all carry them: scoring needs no training data.

Why mean/std and not a robust scale: the values are clipped to the training range first, and the side MLP starts
with a LayerNorm, so an outlier shifts a feature's scale but cannot blow up an input; mean imputation plus an
indicator is what AutoGluon and widedeep do. A constant column gets std 1 (its standardized value is 0).

`fusion: text` (the features-as-text baseline) writes `name: value` lines at the end of the dialogue instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Sequence

import numpy as np
import pyarrow as pa

from raytune_bsm.errors import DataError
from raytune_bsm.side_settings import AUTO, wanted

SIDE_INPUT = "side_features"  # the graphs' input name ("features" already names the chunk graph's output)


def is_numeric(t: pa.DataType) -> bool:
    if pa.types.is_dictionary(t):
        t = t.value_type
    return pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t) or pa.types.is_null(t)


def resolve(given: Any, schema: pa.Schema, where: str, exclude: Sequence[str | None]) -> list[str]:
    """The feature columns of a split whose (first) file `where` has `schema`; errors name the file and column."""
    want = wanted(given)
    if want is None:
        return []
    if want == AUTO:
        return [f.name for f in schema if f.name not in exclude and is_numeric(f.type) and not pa.types.is_null(f.type)]
    for name in want:
        if name not in schema.names:
            raise DataError(
                f"{where}: unknown feature column {name!r} (columns are {', '.join(schema.names) or 'none'}); "
                "name the right ones with --features"
            )
        if name in exclude:
            raise DataError(f"{where}: --features names {name!r}, which is the text, label or id column")
    check_types(schema, want, where)
    return want


def check_types(schema: pa.Schema, names: Sequence[str], where: str) -> None:
    for name in names:
        t = schema.field(name).type
        if not is_numeric(t):
            raise DataError(
                f"{where}: feature column {name!r} has type {t}; a feature must be an integer, float or boolean"
            )


def check_present(schema: pa.Schema, names: Sequence[str], where: str) -> None:
    """A val/test/scored file has every feature the model reads, each numeric."""
    missing = [n for n in names if n not in schema.names]
    if missing:
        raise DataError(
            f"{where}: missing feature column {missing[0]!r}, which the training data has "
            f"(columns are {', '.join(schema.names) or 'none'})"
        )
    check_types(schema, names, where)


def to_matrix(table: pa.Table | pa.RecordBatch, names: Sequence[str]) -> np.ndarray:
    """The feature columns -> raw float32 [n, F]: nulls are NaN, booleans 0/1; infinities stay (the model clips)."""
    out = np.empty((table.num_rows, len(names)), np.float32)
    for k, name in enumerate(names):
        col = table.column(name)
        if isinstance(col, pa.ChunkedArray):
            col = col.combine_chunks() if col.num_chunks else pa.array([], pa.float64())
        if pa.types.is_dictionary(col.type):
            col = col.dictionary_decode()
        out[:, k] = col.cast(pa.float64()).to_numpy(zero_copy_only=False) if len(col) else []
    return out


@dataclass
class Moments:
    """Partial statistics of some rows (mergeable: a Ray Data batch's, then the split's)."""

    rows: int
    count: np.ndarray  # float64 [F]: finite values
    total: np.ndarray  # float64 [F]
    squares: np.ndarray  # float64 [F]
    lo: np.ndarray  # float64 [F]: +inf where none
    hi: np.ndarray

    @classmethod
    def of(cls, x: np.ndarray) -> "Moments":
        finite = np.isfinite(x)
        v = np.where(finite, x, 0.0).astype(np.float64)
        return cls(
            len(x),
            finite.sum(0).astype(np.float64),
            v.sum(0),
            (v * v).sum(0),
            np.where(finite, x, np.inf).min(0, initial=np.inf).astype(np.float64),
            np.where(finite, x, -np.inf).max(0, initial=-np.inf).astype(np.float64),
        )

    def __add__(self, o: "Moments") -> "Moments":
        return Moments(
            self.rows + o.rows,
            self.count + o.count,
            self.total + o.total,
            self.squares + o.squares,
            np.minimum(self.lo, o.lo),
            np.maximum(self.hi, o.hi),
        )

    def to_row(self) -> dict[str, Any]:
        """As one summary row of Ray Data (lists of floats)."""
        return {"rows": self.rows, **{k: getattr(self, k).tolist() for k in ("count", "total", "squares", "lo", "hi")}}

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> "Moments":
        arrays = {k: np.asarray(row[k], np.float64) for k in ("count", "total", "squares", "lo", "hi")}
        return cls(int(row["rows"]), **arrays)

    def stats(self, names: Sequence[str]) -> dict[str, Any]:
        """The model's `feature_stats`: per feature mean, std (1 for a constant or empty column), min, max (the
        mean where nothing was finite) and the share missing (null, NaN or infinite)."""
        n = np.maximum(self.count, 1.0)
        mean = self.total / n
        var = np.maximum(self.squares / n - mean * mean, 0.0)
        std = np.sqrt(var * self.count / np.maximum(self.count - 1, 1.0))
        std = np.where(std > 1e-12 * np.maximum(1.0, np.abs(mean)), std, 1.0)  # constant: harmless
        none = self.count == 0
        return {
            "names": list(names),
            "mean": _floats(mean),
            "std": _floats(std),
            "min": _floats(np.where(none, mean, self.lo)),
            "max": _floats(np.where(none, mean, self.hi)),
            "missing": _floats(1.0 - self.count / max(1, self.rows)),
            "rows": int(self.rows),
        }


def _floats(a: np.ndarray) -> list[float]:
    return [float(v) if math.isfinite(v) else 0.0 for v in a]


def fit(x: np.ndarray, names: Sequence[str]) -> dict[str, Any]:
    """`feature_stats` of the training split's raw matrix [n, F]."""
    return Moments.of(x).stats(names)


def as_text(texts: Sequence[Any], x: np.ndarray, names: Sequence[str]) -> list[Any]:
    """The features-as-text baseline: each dialogue with a `name: value` line per feature appended (the last
    chunks are the ones kept by default); a missing value reads `name: missing`."""
    out = []
    for text, row in zip(texts, x):
        lines = [f"{n}: {_show(v)}" for n, v in zip(names, row)]
        if text is None:
            text = []
        out.append("\n".join([text, *lines]) if isinstance(text, str) else [*text, *lines])
    return out


def _show(v: float) -> str:
    if not np.isfinite(v):
        return "missing" if np.isnan(v) else ("inf" if v > 0 else "-inf")
    return str(int(v)) if float(v).is_integer() else f"{v:.4g}"


PREFIX = "feature/"  # a prepared split's column per feature (runner/prepare.py, data/ray_data.py)


def resolve_data(cfg: Any, train_uri: str, files: list[Any] | None = None) -> Any:
    """`cfg` (a DataConfig) with feature_fields resolved on the training split's first file: a list, or None."""
    from raytune_bsm.data.readers import ID_CANDIDATES, list_files, read_schema

    if wanted(cfg.feature_fields) is None:
        return replace(cfg, feature_fields=None)
    files = files if files is not None else list_files(train_uri, getattr(cfg, "format", None))
    schema = read_schema(files[0])
    id_field = cfg.id_field or next((c for c in ID_CANDIDATES if c in schema.names), None)
    names = resolve(cfg.feature_fields, schema, files[0].name, (cfg.text_field, cfg.label_field, id_field))
    if not names:
        raise DataError(f"{files[0].name}: --features auto found no integer, float or boolean column")
    return replace(cfg, feature_fields=names)


def model_keys(names: list[str] | None, stats: dict[str, Any] | None) -> dict[str, Any]:
    """The model config's feature keys for a run ({} for a text-only run: its config stays as it was)."""
    return {"feature_fields": names, "feature_stats": stats} if names else {}


def fusion_retokenizes(base: str, space: dict[str, Any]) -> bool:
    """A sweep whose trials differ in whether the features are written into the text: each trial tokenizes its own
    data (the shared preparation has one tokenization)."""
    spec = next((v for k, v in space.items() if k.rsplit(".", 1)[-1] == "fusion"), None)
    if spec is None:
        return False
    values = list(next(iter(spec.values()))) if isinstance(spec, dict) else [spec]
    return any((v == "text") != (base == "text") for v in values)
