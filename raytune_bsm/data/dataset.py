"""The data layer's names in one place, for the modules that import them from here.

Data: files -> checked columns -> processed records -> padded batches. The code lives in
`readers` (URI -> files -> tables), `labels` (the class set), `splits` (checked splits) and `batching`
(padding and the sampler); new code imports from those.
"""

from __future__ import annotations

from raytune_bsm.config import DataConfig
from raytune_bsm.data.batching import Collate, EncodedDataset, LengthGroupedBatchSampler
from raytune_bsm.data.labels import MAX_CLASSES, MAX_SHOWN, Labels, label_kind
from raytune_bsm.data.readers import CSV, ID_CANDIDATES, JSONL, PARQUET, DataFile, expand_path, list_files, read_file
from raytune_bsm.data.splits import Split, check_schema, check_text_type, is_empty, load_split, read_table, split_off

_check_text_type = check_text_type  # the older private name (predict.py)

__all__ = [
    "CSV",
    "ID_CANDIDATES",
    "JSONL",
    "MAX_CLASSES",
    "MAX_SHOWN",
    "PARQUET",
    "Collate",
    "DataConfig",
    "DataFile",
    "EncodedDataset",
    "Labels",
    "LengthGroupedBatchSampler",
    "Split",
    "check_schema",
    "check_text_type",
    "expand_path",
    "is_empty",
    "label_kind",
    "list_files",
    "load_split",
    "read_file",
    "read_table",
    "split_off",
]
