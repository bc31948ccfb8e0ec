"""The autoencoder's training losses and the pixel masks that weight them (``train/vae_task.py``).

Pixel L1 + MSE (optionally weighted by ``detail_mask`` and ``motion_mask``), a gradient loss
(finite differences: sharp edges without a downloaded perceptual network), and a spectral
amplitude loss; ``psnr`` and ``ssim`` are the scores the evaluation and ``bench vae`` report.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def gradient_loss(recon: torch.Tensor, video: torch.Tensor) -> torch.Tensor:
    """L1 between finite differences along height, width and (for clips) time: edges stay sharp."""
    loss = (recon.diff(dim=3) - video.diff(dim=3)).abs().mean() + (recon.diff(dim=4) - video.diff(dim=4)).abs().mean()
    if video.shape[2] > 1:
        loss = loss + (recon.diff(dim=2) - video.diff(dim=2)).abs().mean()
    return loss


def spectral_loss(recon: torch.Tensor, video: torch.Tensor) -> torch.Tensor:
    """L1 between the spatial amplitude spectra of each frame (B, C, F, H, W), per element.

    Orthonormal 2-D FFT over (H, W), so its scale does not depend on the frame size the way
    an unnormalised sum would (per bin, a pattern's amplitude grows as sqrt(H*W)). It does not
    change when a frame is shifted circularly and grows when a pattern is faded or blurred.
    """
    amp = torch.fft.rfft2(torch.stack([recon, video]).float(), norm="ortho").abs()  # (2, B, C, F, H, W//2+1)
    return (amp[0] - amp[1]).abs().mean()


def detail_mask(video: torch.Tensor, threshold: float) -> torch.Tensor:
    """(B, 1, F, H, W) float 0/1: pixels whose colour differs by more than ``threshold``
    (max over channels) from their frame's median colour, grown by one pixel in space."""
    median = video.flatten(3).median(dim=3).values[..., None, None]  # (B, C, F, 1, 1)
    far = ((video - median).abs().amax(dim=1, keepdim=True) > threshold).float()  # (B, 1, F, H, W)
    return F.max_pool3d(far, kernel_size=(1, 3, 3), stride=1, padding=(0, 1, 1))


def motion_mask(video: torch.Tensor, threshold: float) -> torch.Tensor:
    """(B, 1, F, H, W) float 0/1: pixels whose colour changes by more than ``threshold`` (max
    over channels) from the frame before or to the frame after, grown by one pixel in space."""
    step = (video.diff(dim=2).abs().amax(dim=1, keepdim=True) > threshold).float()  # (B, 1, F-1, H, W)
    moved = F.pad(step, (0, 0, 0, 0, 1, 0)).maximum(F.pad(step, (0, 0, 0, 0, 0, 1)))  # changed into or out of frame f
    return F.max_pool3d(moved, kernel_size=(1, 3, 3), stride=1, padding=(0, 1, 1))


def psnr(recon: torch.Tensor, video: torch.Tensor) -> torch.Tensor:
    """Per-item PSNR in dB on the [0, 1] pixel scale (inputs in [-1, 1]), (B,)."""
    mse = ((recon.clamp(-1, 1) - video) / 2).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(1.0 / mse.clamp_min(1e-10))


def ssim(recon: torch.Tensor, video: torch.Tensor) -> torch.Tensor:
    """Per-item mean per-frame SSIM on the [0, 1] pixel scale (inputs (B, 3, F, H, W) in [-1, 1]), (B,):
    pytorch-msssim's, 11-px Gaussian window."""
    from einops import rearrange
    from pytorch_msssim import ssim as image_ssim

    a = rearrange((recon.clamp(-1, 1) + 1) / 2, "b c f h w -> (b f) c h w")  # frames as images
    b = rearrange((video + 1) / 2, "b c f h w -> (b f) c h w")
    return image_ssim(a, b, data_range=1.0, size_average=False).view(len(video), -1).mean(1)
