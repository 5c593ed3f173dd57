"""Shared test set-up: deterministic, CPU-friendly torch; the path of ../shared data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Tests run two at a time under pytest-xdist on 2 cores: one thread each avoids
# oversubscription, which slows small-tensor work many times over.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

try:
    import torch

    torch.set_num_threads(1)
except ImportError:  # the annotate tests need no torch
    pass

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` beside the checkout (real COCO captions, CHAIR synonyms, photos)."""
    path = (SHARED / "data").resolve()
    if not path.is_dir():
        pytest.fail(f"test data folder {path} is missing (expected ../shared/data beside the repo)")
    return path
