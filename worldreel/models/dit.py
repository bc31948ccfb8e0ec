"""Diffusion transformer over spacetime patches of the autoencoder's latents.

The network predicts the rectified-flow velocity ``v = noise - x0`` (``diffusion/flow.py``)
for a latent video ``x`` (B, C, f, h, w) at a per-latent-frame time ``t`` (B, f), given
text token states. Read top to bottom:

- ``patchify``: (1 x 2 x 2 by default) spacetime patches -> tokens, one linear layer.
- ``DiTBlock``: adaLN-Zero (DiT, Peebles & Xie 2023) self-attention over all spacetime
  tokens + cross-attention to the text + MLP. The modulation comes from the timestep of
  *each latent frame* and is broadcast to that frame's tokens, which is how given frames
  (t = 0, clean latents) sit next to noisy ones in one sequence: every generation mode is
  "which frames are given" (DESIGN.md).
- Attention (``attention``): RMS-normalised queries and keys (qk-norm, as in SD3 / Wan)
  and 3-D rotary embeddings (RoPE, Su et al. 2021) whose head dimension is split across
  the time, height and width axes; no position table, so any size and length that fits in
  memory works. ``F.scaled_dot_product_attention`` everywhere but bf16 on a CPU at our
  short lengths, where a plain matmul-softmax-matmul is faster (see ``attention``).
- ``skips="uvit"``: U-ViT long skip connections (Bao et al. 2023, the design behind Vidu):
  the input of first-half block ``i`` is concatenated to the input of its mirror
  ``depth - 1 - i`` and fused by a linear layer.
- ``FinalLayer``: adaLN-Zero output head, then ``unpatchify``.

All initialisation is in ``DiT.initialize_weights``; the model outputs exactly zero at init.

Precision: the weights stay fp32; under ``torch.autocast(dtype=torch.bfloat16)`` (the
trainer's and the generator's bf16 mode) every op after the patch embedding runs in
bf16: the norms cast their small weights to the activations' dtype, RoPE's angles are
cast once per forward, and the residual stream stays bf16, so there is no fp32 round
trip per op (issue 31). Without autocast everything is fp32, as before.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn
from torch.utils.checkpoint import checkpoint


@dataclass
class DiTConfig:
    in_channels: int = 16  # latent channels (= VAEConfig.latent_channels)
    patch: tuple[int, int, int] = (1, 2, 2)  # (time, height, width) patch size in latent cells
    width: int = 256  # hidden size
    depth: int = 8  # transformer blocks
    heads: int = 4  # attention heads
    text_dim: int = 384  # width of the text encoder's token states (MiniLM-L6)
    skips: str = "none"  # "none" or "uvit" (U-ViT long skip connections)
    mlp_ratio: float = 4.0  # MLP hidden width = mlp_ratio * width
    rope_theta: float = 10000.0  # RoPE base period, shared by the three axes
    pooled_text: bool = True  # add the masked mean of the text states to the adaLN conditioning (as SD3 adds a pooled text vector)
    fact_cond: bool = False  # add the caption's parsed facts to the adaLN conditioning (models/fact_cond.py; issue 32 lever 3)
    grad_checkpoint: bool = False  # recompute block activations in backward: less memory, ~30 % more time (training switch)


# ---------------------------------------------------------------------------------------------
# Small pieces


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN: x (B, f, S, D) with shift/scale (B, f, 1, D), one pair per latent frame."""
    return torch.addcmul(shift, x, 1 + scale)  # (B, f, S, D): x * (1 + scale) + shift in one kernel


class LayerNorm(nn.LayerNorm):
    """``nn.LayerNorm`` whose affine weights follow the input's dtype: under bf16 autocast
    the fused bf16 kernel runs instead of an fp32 one on an upcast copy (same state dict)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = None if self.weight is None else self.weight.to(x.dtype)
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return F.layer_norm(x, self.normalized_shape, weight, bias, self.eps)


class RMSNorm(nn.RMSNorm):
    """``nn.RMSNorm`` whose weight follows the input's dtype (see ``LayerNorm``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = None if self.weight is None else self.weight.to(x.dtype)
        return F.rms_norm(x, self.normalized_shape, weight, self.eps)


# Largest query x key count (per head) at which bf16 attention on a CPU *in training* runs as
# explicit matmuls and a softmax. PyTorch's CPU flash kernel is fast in fp32 but its bf16
# backward is slow at short lengths (issue 31: 394 ms against 108 ms in fp32 at world-tiny's
# 144 tokens, batch 32), while bf16 matmuls run on AMX. Forward + backward, bf16, 2 shared
# (loaded) cores, 4 heads of 64: explicit 148 ms against SDPA 188 ms at 144 tokens x batch
# 32, 209 against 294 at 576 x 8, but 1149 against 653 at 2304 x 2, where the N x N score
# matrix no longer fits in cache. Without gradients (sampling) the flash kernel's bf16 forward
# wins at every length: 99 against 208 us at 144 x 144 tokens, batch 2 (self-attention while
# sampling), 75 against 158 us for cross-attention to 48 text tokens, 1.0 against 4.0 ms at 576.
EXPLICIT_ATTENTION_MAX = 576 * 576


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """softmax(q k^T / sqrt(hd) + mask) v: q (B, H, N, hd), k and v (B, H, L, hd), mask (B, 1, 1, L) bool or None.

    GPU, fp32 and inference use ``F.scaled_dot_product_attention`` (fused kernels); bf16
    training on a CPU at up to ``EXPLICIT_ATTENTION_MAX`` scores per head spells it out
    (its backward is faster there, see above).
    """
    if (q.device.type != "cpu" or q.dtype != torch.bfloat16 or not torch.is_grad_enabled()
            or q.shape[-2] * k.shape[-2] > EXPLICIT_ATTENTION_MAX):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, H, N, hd)
    scores = torch.matmul(q * q.shape[-1] ** -0.5, k.transpose(-1, -2))  # (B, H, N, L)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))  # padded text tokens get no weight
    return torch.matmul(torch.softmax(scores, dim=-1), v)  # (B, H, N, hd); softmax accumulates in fp32 internally


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal features of t in [0, 1] (scaled by 1000, the range DiT's frequencies were made for)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)  # (half,)
    args = t.float()[..., None] * 1000.0 * freqs  # (..., half)
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)  # (..., dim)


class TimestepEmbedder(nn.Module):
    """t (B, f) -> (B, f, D): sinusoidal features, then a 2-layer MLP (as in DiT)."""

    def __init__(self, width: int, freq_dim: int = 256):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, width), nn.SiLU(), nn.Linear(width, width))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(timestep_embedding(t, self.freq_dim))  # (B, f) -> (B, f, D)


class Rope3D(nn.Module):
    """Rotary position angles over a (frames, rows, cols) token grid; no parameters.

    The head dimension is split into three even parts, time gets what the two equal
    spatial parts leave (64 -> 24 + 20 + 20). Positions are integer grid indices, so the
    attention score between two tokens depends only on their offset in each axis.
    """

    def __init__(self, head_dim: int, theta: float):
        super().__init__()
        spatial = 2 * (head_dim // 6)
        self.dims = (head_dim - 2 * spatial, spatial, spatial)  # (time, height, width) rotary dims
        self.theta = theta

    def forward(self, grid: tuple[int, int, int], device: torch.device, offset: tuple[int, int, int] = (0, 0, 0)):
        """(cos, sin), each (N, head_dim / 2) for the N = f*h*w tokens in (f, h, w) order."""
        angles = []
        for axis, (n, dim) in enumerate(zip(grid, self.dims)):
            freqs = self.theta ** (-torch.arange(0, dim, 2, device=device, dtype=torch.float32) / dim)  # (dim/2,)
            pos = torch.arange(n, device=device, dtype=torch.float32) + offset[axis]  # (n,)
            ang = torch.outer(pos, freqs)  # (n, dim/2)
            view = [1, 1, 1, dim // 2]
            view[axis] = n
            angles.append(ang.view(view).expand(*grid, dim // 2))  # (f, h, w, dim/2)
        ang = torch.cat(angles, dim=-1).reshape(-1, sum(self.dims) // 2)  # (f, h, w, hd/2) -> (N, hd/2)
        return torch.cos(ang), torch.sin(ang)


def rope_tables(cos: torch.Tensor, sin: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """RoPE angles (N, hd/2) -> per-channel tables (N, hd) in ``dtype`` for ``rotate``: each
    cosine twice, the sines as (-sin, sin) per pair. Made once per forward, not per layer."""
    cos2 = cos.repeat_interleave(2, dim=-1)  # (N, hd)
    sin2 = torch.stack([-sin, sin], dim=-1).flatten(-2)  # (N, hd)
    return cos2.to(dtype), sin2.to(dtype)


def rotate(x: torch.Tensor, cos2: torch.Tensor, sin2: torch.Tensor) -> torch.Tensor:
    """RoPE with ``rope_tables``: pair (a, b) -> (a cos - b sin, b cos + a sin), in x's dtype.

    x (B, H, N, hd) * cos2 + pair-swapped x * sin2: three kernels and no upcast, so bf16
    activations stay bf16 (the angles were rounded once, when the tables were made).
    """
    swapped = x.unflatten(-1, (-1, 2)).flip(-1).flatten(-2)  # (B, H, N, hd): (a, b) -> (b, a)
    return torch.addcmul(x * cos2, swapped, sin2)  # (B, H, N, hd)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate consecutive channel pairs of x (B, H, N, hd) by the angles (N, hd/2)."""
    return rotate(x, *rope_tables(cos, sin, x.dtype))  # (B, H, N, hd)


class SelfAttention(nn.Module):
    """Full 3-D self-attention with qk RMS-norm and RoPE."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.q_norm = RMSNorm(width // heads, eps=1e-6)
        self.k_norm = RMSNorm(width // heads, eps=1e-6)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """x (B, N, D); rope: ``rope_tables`` (cos2, sin2), each (N, hd)."""
        q, k, v = rearrange(self.qkv(x), "b n (three h d) -> three b h n d", three=3, h=self.heads)  # 3 x (B, H, N, hd)
        q, k = rotate(self.q_norm(q), *rope), rotate(self.k_norm(k), *rope)  # (B, H, N, hd)
        out = attention(q, k, v)  # (B, H, N, hd)
        return self.proj(rearrange(out, "b h n d -> b n (h d)"))  # (B, N, D)


class CrossAttention(nn.Module):
    """Tokens attend to the text token states; padded text tokens are masked out."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(width, width)
        self.kv = nn.Linear(width, 2 * width)
        self.q_norm = RMSNorm(width // heads, eps=1e-6)
        self.k_norm = RMSNorm(width // heads, eps=1e-6)
        self.proj = nn.Linear(width, width)

    def text_kv(self, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The text's normalised keys and values, 2 x (B, H, L, hd): the same at every sampler step."""
        k, v = rearrange(self.kv(text), "b l (two h d) -> two b h l d", two=2, h=self.heads)  # 2 x (B, H, L, hd)
        return self.k_norm(k), v

    def forward(self, x: torch.Tensor, kv: tuple[torch.Tensor, torch.Tensor], text_mask: torch.Tensor) -> torch.Tensor:
        """x (B, N, D); kv: ``text_kv`` of the text; text_mask (B, L) bool."""
        q = self.q_norm(rearrange(self.q(x), "b n (h d) -> b h n d", h=self.heads))  # (B, H, N, hd)
        out = attention(q, *kv, text_mask[:, None, None, :])  # (B, H, N, hd)
        return self.proj(rearrange(out, "b h n d -> b n (h d)"))  # (B, N, D)


class DiTBlock(nn.Module):
    """adaLN-Zero block: x + g1*attn(mod(x)), + cross(x, text), + g2*mlp(mod(x))."""

    def __init__(self, cfg: DiTConfig, *, long_skip: bool = False):
        super().__init__()
        d = cfg.width
        self.skip = nn.Linear(2 * d, d) if long_skip else None  # U-ViT fusion of [x, skip]
        self.norm1 = LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.attn = SelfAttention(d, cfg.heads)
        self.norm_cross = LayerNorm(d, eps=1e-6)  # cross-attention is not modulated (as in PixArt-alpha)
        self.cross = CrossAttention(d, cfg.heads)
        self.norm2 = LayerNorm(d, elementwise_affine=False, eps=1e-6)
        hidden = int(d * cfg.mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(d, hidden), nn.GELU(), nn.Linear(hidden, d))
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(d, 6 * d))  # per-frame shift/scale/gate x 2

    def forward(self, x, c, rope, kv, text_mask, skip=None):
        """x (B, N, D) tokens in (f, h, w) order; c (B, f, D) per-frame conditioning; kv: this block's
        ``CrossAttention.text_kv``; text_mask (B, L); skip (B, N, D) or None."""
        f = c.shape[1]
        if self.skip is not None:
            x = self.skip(torch.cat([x, skip], dim=-1))  # (B, N, 2D) -> (B, N, D)
        shift1, scale1, gate1, shift2, scale2, gate2 = self.ada(c).unsqueeze(2).chunk(6, dim=-1)  # 6 x (B, f, 1, D)
        h = modulate(self.norm1(x).unflatten(1, (f, -1)), shift1, scale1).flatten(1, 2)  # (B, N, D)
        x = x + (gate1 * self.attn(h, rope).unflatten(1, (f, -1))).flatten(1, 2)  # (B, N, D)
        x = x + self.cross(self.norm_cross(x), kv, text_mask)  # (B, N, D)
        h = modulate(self.norm2(x).unflatten(1, (f, -1)), shift2, scale2).flatten(1, 2)  # (B, N, D)
        x = x + (gate2 * self.mlp(h).unflatten(1, (f, -1))).flatten(1, 2)  # (B, N, D)
        return x


class FinalLayer(nn.Module):
    """adaLN-Zero output head: tokens -> patch values (B, N, pt*ph*pw*C)."""

    def __init__(self, width: int, patch_values: int):
        super().__init__()
        self.norm = LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(width, 2 * width))
        self.linear = nn.Linear(width, patch_values)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        f = c.shape[1]
        shift, scale = self.ada(c).unsqueeze(2).chunk(2, dim=-1)  # 2 x (B, f, 1, D)
        h = modulate(self.norm(x).unflatten(1, (f, -1)), shift, scale).flatten(1, 2)  # (B, N, D)
        return self.linear(h)  # (B, N, P*C)


# ---------------------------------------------------------------------------------------------
# The model


@dataclass
class TextContext:
    """What the denoiser takes from the text, made once per prompt by ``DiT.text_context``: a
    sampler reuses it at every step (the text does not change, only x and t do)."""

    mask: torch.Tensor  # (B, L) bool; a row with no real token sees its first (padding) token
    pooled: torch.Tensor | None  # (B, D): the pooled text's (and the facts') part of the adaLN conditioning
    kv: list[tuple[torch.Tensor, torch.Tensor]]  # per block: cross-attention keys and values, 2 x (B, H, L, hd)


class DiT(nn.Module):
    """``forward(x, t, text, text_mask) -> v``; see the module docstring."""

    def __init__(self, cfg: DiTConfig):
        super().__init__()
        if cfg.width % cfg.heads:
            raise ValueError(f"width {cfg.width} is not divisible by heads {cfg.heads}")
        head_dim = cfg.width // cfg.heads
        if head_dim % 2 or head_dim < 6:
            raise ValueError(f"head dim {head_dim} must be even and >= 6 to split RoPE over 3 axes")
        if cfg.skips not in ("none", "uvit"):
            raise ValueError(f"skips must be 'none' or 'uvit', got {cfg.skips!r}")
        self.cfg = cfg
        self.grad_checkpoint = cfg.grad_checkpoint
        d = cfg.width
        patch_values = cfg.in_channels * math.prod(cfg.patch)
        self.patch_embed = nn.Linear(patch_values, d)
        self.t_embed = TimestepEmbedder(d)
        # Text states -> model width once, so every block's cross-attention is D x D.
        self.text_proj = nn.Sequential(LayerNorm(cfg.text_dim), nn.Linear(cfg.text_dim, d), nn.GELU(), nn.Linear(d, d))
        self.pool_proj = nn.Sequential(nn.SiLU(), nn.Linear(d, d)) if cfg.pooled_text else None
        self.fact_embed = None
        if cfg.fact_cond:
            from worldreel.models.fact_cond import FactEmbedder

            self.fact_embed = FactEmbedder(d)
        self.rope = Rope3D(head_dim, cfg.rope_theta)
        # U-ViT: block depth-1-i (second half) receives the input of block i (first half);
        # with an odd depth the middle block has no partner.
        half = cfg.depth // 2
        self.blocks = nn.ModuleList(
            DiTBlock(cfg, long_skip=cfg.skips == "uvit" and i >= cfg.depth - half) for i in range(cfg.depth)
        )
        self.final = FinalLayer(d, patch_values)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """All initialisation in one place (as DiT's ``initialize_weights``)."""
        # 1. Every linear layer: Xavier-uniform weights, zero bias (patch embedding included:
        #    it is a linear map of the flattened patch, like DiT's flattened conv kernel).
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        # 2. Timestep MLP: N(0, 0.02) as in DiT.
        nn.init.normal_(self.t_embed.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embed.mlp[2].weight, std=0.02)
        for block in self.blocks:
            # 3. adaLN-Zero: zero modulation -> shift = scale = gate = 0, so both gated
            #    residual branches start at zero and every block starts as the identity.
            nn.init.zeros_(block.ada[-1].weight)
            nn.init.zeros_(block.ada[-1].bias)
            # 4. Cross-attention has no gate: zero its output projection for the same reason.
            nn.init.zeros_(block.cross.proj.weight)
            nn.init.zeros_(block.cross.proj.bias)
        # 5. Output head: zero modulation and zero projection -> v = 0 exactly at init.
        nn.init.zeros_(self.final.ada[-1].weight)
        nn.init.zeros_(self.final.ada[-1].bias)
        nn.init.zeros_(self.final.linear.weight)
        nn.init.zeros_(self.final.linear.bias)
        # 6. Fact conditioning (when on): its own init, whose output layer is zero.
        if self.fact_embed is not None:
            self.fact_embed.reset_parameters()
        # Norm layers keep their defaults (weight 1, bias 0).

    def set_grad_checkpointing(self, enabled: bool) -> None:
        """Trainer switch: recompute each block in backward instead of storing its activations."""
        self.grad_checkpoint = enabled

    def text_context(self, text: torch.Tensor, text_mask: torch.Tensor, facts: torch.Tensor | None = None) -> TextContext:
        """text (B, L, text_dim), text_mask (B, L) bool, facts (B, fact_cond.NUM_IDS) long or None
        (none stated; ignored without ``cfg.fact_cond``) -> everything the blocks need from them."""
        # A row with no real token would make attention NaN; let it see its first (padding) token.
        text_mask = text_mask.clone()  # (B, L)
        text_mask[~text_mask.any(dim=1), 0] = True
        txt = self.text_proj(text)  # (B, L, D)
        pooled = None
        if self.pool_proj is not None:
            weights = text_mask.to(txt.dtype)[..., None]  # (B, L, 1)
            pooled = self.pool_proj((txt * weights).sum(1) / weights.sum(1))  # (B, D)
        if self.fact_embed is not None:
            if facts is None:
                from worldreel.models.fact_cond import NUM_IDS

                facts = torch.zeros(text.shape[0], NUM_IDS, dtype=torch.long, device=text.device)
            stated = self.fact_embed(facts.to(text.device))  # (B, D)
            pooled = stated if pooled is None else pooled + stated
        return TextContext(text_mask, pooled, [block.cross.text_kv(txt) for block in self.blocks])

    def forward(self, x: torch.Tensor, t: torch.Tensor, text: torch.Tensor | None = None,
                text_mask: torch.Tensor | None = None, *, facts: torch.Tensor | None = None,
                context: TextContext | None = None) -> torch.Tensor:
        """x (B, C, f, h, w), t (B, f) in [0, 1], text (B, L, text_dim), text_mask (B, L) bool,
        facts (B, NUM_IDS) (``text_context``) -> v (B, C, f, h, w).

        ``context`` (``text_context(text, text_mask)``, made once) replaces text and text_mask:
        the sampler's way to skip the text's share of the work at every step after the first.
        """
        if context is None:
            context = self.text_context(text, text_mask, facts)
        B, C, f, h, w = x.shape
        pt, ph, pw = self.cfg.patch
        if f % pt or h % ph or w % pw:
            raise ValueError(f"latent grid {(f, h, w)} is not divisible by the patch {self.cfg.patch}")
        grid = (f // pt, h // ph, w // pw)  # token grid (gf, gh, gw)
        # 1. Patches -> tokens.
        tokens = rearrange(x, "b c (f pf) (h ph) (w pw) -> b (f h w) (pf ph pw c)", pf=pt, ph=ph, pw=pw)  # (B, N, P*C)
        x = self.patch_embed(tokens)  # (B, N, D)
        # 2. Per-frame conditioning c (B, gf, D): the time of each latent frame (averaged over
        #    a temporal patch when pt > 1), plus the pooled text.
        c = self.t_embed(t.reshape(B, grid[0], pt).mean(-1))  # (B, gf, D)
        if context.pooled is not None:
            c = c + context.pooled[:, None]  # (B, gf, D)
        rope = rope_tables(*self.rope(grid, x.device), x.dtype)  # 2 x (N, hd), in the compute dtype (bf16 under autocast)
        # 3. Blocks; U-ViT keeps the first-half inputs for the mirrored second half.
        half = len(self.blocks) // 2
        saved = []
        for i, block in enumerate(self.blocks):
            skip = saved.pop() if block.skip is not None else None  # (B, N, D) or None
            if self.cfg.skips == "uvit" and i < half:
                saved.append(x)
            if self.grad_checkpoint and torch.is_grad_enabled():
                x = checkpoint(block, x, c, rope, context.kv[i], context.mask, skip, use_reentrant=False)  # (B, N, D)
            else:
                x = block(x, c, rope, context.kv[i], context.mask, skip)  # (B, N, D)
        # 4. Head and tokens -> latent video.
        x = self.final(x, c)  # (B, N, P*C)
        return rearrange(
            x, "b (f h w) (pf ph pw c) -> b c (f pf) (h ph) (w pw)", f=grid[0], h=grid[1], w=grid[2], pf=pt, ph=ph, pw=pw
        )  # (B, C, f, h, w)


def grown_positions(old_depth: int, new_depth: int) -> list[int]:
    """Where the blocks of a depth-``old_depth`` denoiser sit in a deeper one: spread evenly,
    the first at 0 (8 -> 12: 0 1 3 4 6 7 9 10, new blocks at 2 5 8 11)."""
    if not 0 < old_depth <= new_depth:
        raise ValueError(f"cannot grow a depth-{old_depth} denoiser to depth {new_depth}")
    return [i * new_depth // old_depth for i in range(old_depth)]


def deeper_only(old: dict, new: dict) -> bool:
    """Whether denoiser layout ``new`` is ``old`` with more blocks and nothing else changed
    (both as dicts: ``to_dict(DiTConfig)`` or config.json's "dit" section)."""
    return {**old, "depth": new.get("depth")} == new and 0 < old.get("depth", 0) < new.get("depth", 0)


def identity_block(block: dict[str, torch.Tensor], width: int) -> dict[str, torch.Tensor]:
    """One block's weights (keys relative to it, e.g. "ada.1.weight") with what makes the block
    the identity zeroed, everything else kept: the attention and MLP gates (chunks 2 and 5 of
    the six ``DiTBlock.forward`` splits its adaLN output into) and the cross-attention output
    projection (it has no gate)."""
    out = {}
    for key, value in block.items():
        value = value.clone()
        if key in ("ada.1.weight", "ada.1.bias"):
            value[2 * width:3 * width] = 0  # gate1: attention
            value[5 * width:6 * width] = 0  # gate2: MLP
        elif key.startswith("cross.proj."):
            value.zero_()
        out[key] = value
    return out


def grown_key(key: str, positions: list[int]) -> str:
    """A shallow denoiser's state-dict key in the deeper layout: block i moves to positions[i]."""
    if not key.startswith("blocks."):
        return key
    _, index, rest = key.split(".", 2)
    return f"blocks.{positions[int(index)]}.{rest}"


def grow_depth(model: DiT, shallow: DiT) -> list[int]:
    """Copy a shallower trained denoiser into ``model`` (freshly initialised, same layout but
    deeper); return the positions of the new blocks.

    Every weight outside the blocks is copied, and old block i goes to position
    ``grown_positions(...)[i]``. The new blocks keep their adaLN-Zero initialisation (zero
    gates, zero cross-attention output), so each is the identity and ``model`` computes
    exactly what ``shallow`` does until training moves them (depth up-scaling).
    """
    old, new = shallow.cfg, model.cfg
    if old.skips != "none" or new.skips != "none":
        raise ValueError("growing a denoiser needs skips='none' (U-ViT long skips pair blocks by depth)")
    positions = grown_positions(old.depth, new.depth)
    state = model.state_dict()
    for key, value in shallow.state_dict().items():
        key = grown_key(key, positions)
        if key not in state or state[key].shape != value.shape:
            raise ValueError(f"denoiser weight {key} has no place of shape {tuple(value.shape)} in the deeper layout")
        state[key] = value
    model.load_state_dict(state)
    return [i for i in range(new.depth) if i not in positions]


def count_params(cfg: DiTConfig) -> int:
    """Number of parameters of a DiT built from ``cfg`` (built on the meta device: no memory)."""
    with torch.device("meta"):
        model = DiT(cfg)
    return sum(p.numel() for p in model.parameters())
