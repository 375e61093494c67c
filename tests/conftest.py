"""Shared fixtures (the helpers they use live in `tests/testing_utils.py`)."""

from __future__ import annotations

import pytest

from .testing_utils import FAMILIES, make_tiny_target, train_tiny_drafter


@pytest.fixture(params=FAMILIES)
def tiny_target(request):
    return make_tiny_target(request.param)


@pytest.fixture(scope="module")
def trained_llama_pair():
    target = make_tiny_target("llama", seed=1)
    return target, train_tiny_drafter(target)
