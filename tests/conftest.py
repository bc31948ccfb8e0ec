"""Shared test setup: small, deterministic, CPU-only, and quick on 2 cores."""
import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach a model hub from a test
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _deterministic_torch():
    try:
        import torch
    except ImportError:  # pragma: no cover
        yield
        return
    torch.manual_seed(0)
    yield
