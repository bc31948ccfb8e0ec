"""Shared test setup: small, deterministic, CPU-only, and quick on 2 cores."""
import os
import tempfile

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach a model hub from a test
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Watermark and signing keys are made on first use in the user's data folder: never the real one
# in tests (subprocesses such as service workers inherit this).
os.environ["XDG_DATA_HOME"] = tempfile.mkdtemp(prefix="worldreel-test-data-")


@pytest.fixture(autouse=True)
def _deterministic_torch():
    try:
        import torch
    except ImportError:  # pragma: no cover
        yield
        return
    torch.manual_seed(0)
    yield
