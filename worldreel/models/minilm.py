"""A BERT encoder in plain torch for the text encoder's token states, without ``transformers``.

``import transformers`` alone takes ~1.7 s, a third of a ``worldreel generate`` run
(issue 31). The default text encoder, MiniLM-L6, is a 6-layer BERT (Devlin et al. 2019;
post-norm blocks, GELU MLP, learned absolute positions), small enough to spell out here:
``BertEncoder`` reads the folder's ``config.json`` and ``model.safetensors`` (only the
tensors it uses: the pooler is skipped) and the ``tokenizers`` library reads its
``tokenizer.json``. ``tests/test_text.py`` checks the token states against
``transformers.AutoModel`` to ~1e-5. Folders of other architectures go through
``transformers`` (``models/text.py``).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn


def is_plain_bert(folder: Path) -> bool:
    """Whether ``folder`` holds a BERT this module can run: absolute positions, GELU, safetensors + tokenizer.json."""
    try:
        cfg = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return (cfg.get("model_type") == "bert" and cfg.get("hidden_act") == "gelu"
            and cfg.get("position_embedding_type", "absolute") == "absolute"
            and (folder / "model.safetensors").is_file() and (folder / "tokenizer.json").is_file())


def _empty(*shape: int) -> nn.Parameter:
    """A frozen parameter left uninitialised: every one is read from the checkpoint. (Random
    init would cost ~0.1 s on the 12M-number embedding, and building on the meta device
    instead imports torch._dynamo, ~1 s.)"""
    return nn.Parameter(torch.empty(*shape), requires_grad=False)


class Linear(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.weight, self.bias = _empty(cout, cin), _empty(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)


class LayerNorm(nn.Module):
    def __init__(self, width: int, eps: float):
        super().__init__()
        self.weight, self.bias, self.eps = _empty(width), _empty(width), eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, self.eps)


class BertLayer(nn.Module):
    """Post-norm transformer block: x = LN(x + attn(x)); x = LN(x + mlp(x))."""

    def __init__(self, width: int, heads: int, hidden: int, eps: float):
        super().__init__()
        self.heads = heads
        self.qkv = Linear(width, 3 * width)  # query, key, value stacked (the checkpoint's three matrices)
        self.attn_out = Linear(width, width)
        self.attn_norm = LayerNorm(width, eps)
        self.mlp_in = Linear(width, hidden)
        self.mlp_out = Linear(hidden, width)
        self.mlp_norm = LayerNorm(width, eps)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """x (B, L, D); bias (B, 1, 1, L): 0 for real tokens, a large negative number for padding."""
        B, L, D = x.shape
        q, k, v = self.qkv(x).view(B, L, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)  # 3 x (B, H, L, hd)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)  # (B, H, L, hd)
        x = self.attn_norm(x + self.attn_out(out.transpose(1, 2).reshape(B, L, D)))  # (B, L, D)
        return self.mlp_norm(x + self.mlp_out(F.gelu(self.mlp_in(x))))  # (B, L, D); erf GELU, as BERT's "gelu"


class BertEncoder(nn.Module):
    """``forward(ids, mask) -> last hidden states (B, L, D)`` of a BERT checkpoint folder."""

    def __init__(self, cfg: dict):
        super().__init__()
        d, eps = cfg["hidden_size"], cfg.get("layer_norm_eps", 1e-12)
        self.width = d
        self.words = _empty(cfg["vocab_size"], d)  # (vocab, D)
        self.positions = _empty(cfg["max_position_embeddings"], d)  # (max length, D)
        self.types = _empty(cfg.get("type_vocab_size", 2), d)  # (segment types, D)
        self.norm = LayerNorm(d, eps)
        self.layers = nn.ModuleList(
            BertLayer(d, cfg["num_attention_heads"], cfg["intermediate_size"], eps) for _ in range(cfg["num_hidden_layers"])
        )

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """ids (B, L) token ids, mask (B, L) 1 for real tokens -> (B, L, D); one segment (type 0)."""
        L = ids.shape[1]
        x = F.embedding(ids, self.words) + self.positions[:L] + self.types[0]  # (B, L, D)
        x = self.norm(x)
        # Padding keys get the most negative float added to their scores, as transformers does.
        bias = (1.0 - mask[:, None, None, :].to(x.dtype)) * torch.finfo(x.dtype).min  # (B, 1, 1, L)
        for layer in self.layers:
            x = layer(x, bias)
        return x

    @classmethod
    def load(cls, folder: str | Path) -> "BertEncoder":
        """The encoder of a Hugging Face BERT folder, fp32, eval mode, frozen."""
        from safetensors import safe_open

        folder = Path(folder)
        model = cls(json.loads((folder / "config.json").read_text()))
        state = {}
        with safe_open(str(folder / "model.safetensors"), "pt") as f:
            keys = set(f.keys())
            prefix = "bert." if "bert.embeddings.word_embeddings.weight" in keys else ""

            def get(name: str) -> torch.Tensor:
                return f.get_tensor(prefix + name).float()

            state["words"] = get("embeddings.word_embeddings.weight")
            state["positions"] = get("embeddings.position_embeddings.weight")
            state["types"] = get("embeddings.token_type_embeddings.weight")
            state["norm.weight"], state["norm.bias"] = get("embeddings.LayerNorm.weight"), get("embeddings.LayerNorm.bias")
            for i in range(len(model.layers)):
                src, dst = f"encoder.layer.{i}.", f"layers.{i}."
                for kind in ("weight", "bias"):
                    state[dst + f"qkv.{kind}"] = torch.cat([get(src + f"attention.self.{n}.{kind}") for n in ("query", "key", "value")])
                    state[dst + f"attn_out.{kind}"] = get(src + f"attention.output.dense.{kind}")
                    state[dst + f"attn_norm.{kind}"] = get(src + f"attention.output.LayerNorm.{kind}")
                    state[dst + f"mlp_in.{kind}"] = get(src + f"intermediate.dense.{kind}")
                    state[dst + f"mlp_out.{kind}"] = get(src + f"output.dense.{kind}")
                    state[dst + f"mlp_norm.{kind}"] = get(src + f"output.LayerNorm.{kind}")
        model.load_state_dict(state, assign=True)  # every parameter is in ``state``: strict
        return model.eval()


class BertTokenizer:
    """``tokenizers`` over a folder's tokenizer.json: ``(ids, mask)`` (B, L) int64, padded to the longest prompt."""

    def __init__(self, folder: str | Path, max_tokens: int):
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(str(Path(folder) / "tokenizer.json"))
        self.tokenizer.enable_truncation(max_length=max_tokens)
        pad = self.tokenizer.padding or {}
        # Pad to the longest prompt of the call (the file asks for a fixed 128), as HF's padding=True.
        self.tokenizer.enable_padding(pad_id=pad.get("pad_id", 0), pad_token=pad.get("pad_token", "[PAD]"))

    def __call__(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        encodings = self.tokenizer.encode_batch(prompts)
        ids = torch.tensor([e.ids for e in encodings], dtype=torch.long)  # (B, L)
        mask = torch.tensor([e.attention_mask for e in encodings], dtype=torch.long)  # (B, L)
        return ids, mask


