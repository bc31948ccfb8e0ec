"""Shared test setup: small, deterministic, CPU-only, and quick on 2 cores."""
import os
import tempfile
from pathlib import Path

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


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> str:
    """A randomly initialised ``world-micro`` model folder, shared by every test (never write to it)."""
    from worldreel.model_folder import save_random_model

    return str(save_random_model(tmp_path_factory.mktemp("model") / "tiny", "world-micro"))


@pytest.fixture
def tiny_folder(tmp_path):
    """``tiny_folder(name, seed=0, overrides=())``: a fresh random ``world-micro`` model folder of this test's own."""
    from worldreel.model_folder import save_random_model

    def make(name: str = "tiny", seed: int = 0, overrides: tuple[str, ...] = ()) -> Path:
        return save_random_model(tmp_path / name, "world-micro", list(overrides), seed=seed)

    return make


@pytest.fixture
def dit_times():
    """``dit_times(gen, call) -> (call(), [t of every DiT forward])``: the per-frame noise levels
    (B, f) a Generator's denoiser is shown while ``call`` runs."""
    def run(gen, call):
        seen, dit = [], gen.dit
        forward = dit.forward

        def spy(x, t, *args, **kwargs):
            seen.append(t.clone())
            return forward(x, t, *args, **kwargs)

        dit.forward = spy
        try:
            return call(), seen
        finally:
            del dit.forward

    return run


@pytest.fixture(scope="module")
def probed_gen(tiny_model):
    """The tiny model's Generator with a random state probe (diffusion/steer.py): steering and picking the start run."""
    import torch

    from worldreel.diffusion.steer import StateProbe
    from worldreel.pipelines.generate import Generator

    gen = Generator.load(tiny_model)
    torch.manual_seed(7)
    gen.probe = StateProbe(16, width=8).eval().requires_grad_(False)
    return gen
