"""The kinds of graph an export holds, named once: their files are in layout.py, their inputs' shapes in
scoring/batching.py. `layout` means the storage contract only; a graph's kind is a `GraphKind`."""

from __future__ import annotations

from enum import Enum


class GraphKind(str, Enum):
    """How a graph takes its records. A `str`, so a kind equals its name ("chunks" == GraphKind.CHUNKS) and
    JSON writes it as the plain name."""

    CHUNKS = "chunks"  # model.chunks.onnx + its head model.head.onnx: any chunks of any records, grouped by length
    PACKED = "packed"  # model.packed.onnx: the non-empty chunks of whole records [N, T] and a pool [R, N]
    BCT = "bct"  # model.onnx: whole records padded to [B, C, T] (every export has it)

    def __str__(self) -> str:  # the name, not "GraphKind.CHUNKS", in messages on every Python version
        return self.value


# The chunk graph's second file (model.head.onnx): a file's role beside the kinds in the export's file maps
# (model/export.py's FP32 / INT8), not a kind of graph of its own
HEAD = "head"
