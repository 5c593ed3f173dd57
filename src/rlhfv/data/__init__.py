"""Correction records -> dense preference data for any Hugging Face vision-language model.

* ``schema``: :class:`Correction`, :class:`ChangedSegment` (the one record type);
* ``io``: streaming readers/writers (JSONL, parquet, RLHF-V / RLAIF-V layouts),
  exports to ``datasets`` and TRL's preference format;
* ``images``: image decoding for every command (unreadable-image errors, base64 / data URIs);
* ``diff``: :func:`changed_segments`, the word-level diff of original vs corrected;
* ``weights``: changed-token masks (paper and reference alignment), DDPO token weights;
* ``encode``: one record -> token ids with expanded image placeholders + masks;
* ``collator``: :class:`PreferenceCollator`, the ``[chosen; rejected]`` batch;
* ``prepare``: ``rlhfv data prepare`` and :func:`load_prepared`.

Importing this package is cheap: torch, transformers, datasets and pyarrow are imported
by the functions that need them.
"""

from rlhfv.data.collator import PreferenceCollator
from rlhfv.data.diff import apply_segments, changed_segments
from rlhfv.data.encode import encode_correction
from rlhfv.data.io import (
    check_correction,
    read_corrections,
    read_jsonl,
    read_parquet,
    read_rlaifv_dataset,
    read_rlhfv_dataset,
    to_hf_dataset,
    to_trl_dataset,
    write_jsonl,
    write_parquet,
    write_rlaifv_dataset,
    write_rlhfv_dataset,
)
from rlhfv.data.prepare import load_prepared, prepare
from rlhfv.data.schema import CHANGE_CATEGORIES, ChangedSegment, Correction
from rlhfv.data.weights import token_weights

__all__ = [
    "CHANGE_CATEGORIES",
    "ChangedSegment",
    "Correction",
    "PreferenceCollator",
    "apply_segments",
    "changed_segments",
    "check_correction",
    "encode_correction",
    "load_prepared",
    "prepare",
    "read_corrections",
    "read_jsonl",
    "read_parquet",
    "read_rlaifv_dataset",
    "read_rlhfv_dataset",
    "to_hf_dataset",
    "to_trl_dataset",
    "token_weights",
    "write_jsonl",
    "write_parquet",
    "write_rlaifv_dataset",
    "write_rlhfv_dataset",
]
