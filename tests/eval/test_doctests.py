"""The examples in rlhfv.eval's docstrings run and hold."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = ["__init__", "objects", "chair", "generate", "llm_objects", "pope", "mmhal"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module("rlhfv.eval" if name == "__init__" else f"rlhfv.eval.{name}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0
