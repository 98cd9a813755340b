"""Batched augmentation on tensors, on the training device.

One gather does pad-4 random crop and horizontal flip for the whole batch: output pixel (r, c) of image b reads
padded pixel (oy_b + r, ox_b + c) (or the mirrored column when flipped), with zero padding applied before
normalisation, exactly as torchvision's RandomCrop(32, padding=4) + RandomHorizontalFlip on the uint8 image.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def crop_flip(images: torch.Tensor, generator: torch.Generator, pad: int = 4, flip: bool = True) -> torch.Tensor:
    """Random crop with zero padding and random horizontal flip; ``images`` is [B, C, H, W] of any dtype."""
    b, c, h, w = images.shape
    dev = images.device
    padded = F.pad(images, (pad, pad, pad, pad))
    oy = torch.randint(0, 2 * pad + 1, (b,), device=dev, generator=generator)
    ox = torch.randint(0, 2 * pad + 1, (b,), device=dev, generator=generator)
    rows = oy[:, None] + torch.arange(h, device=dev)
    cols = torch.arange(w, device=dev).expand(b, w)
    if flip:
        flipped = torch.rand(b, device=dev, generator=generator) < 0.5
        cols = torch.where(flipped[:, None], w - 1 - cols, cols)
    cols = ox[:, None] + cols
    bi = torch.arange(b, device=dev)[:, None, None, None]
    ci = torch.arange(c, device=dev)[None, :, None, None]
    return padded[bi, ci, rows[:, None, :, None], cols[:, None, None, :]]


def cutout(images: torch.Tensor, generator: torch.Generator, length: int) -> torch.Tensor:
    """DARTS Cutout: zero a length x length square centred at a uniform pixel (clipped at the border)."""
    b, _, h, w = images.shape
    dev = images.device
    cy = torch.randint(0, h, (b,), device=dev, generator=generator)
    cx = torch.randint(0, w, (b,), device=dev, generator=generator)
    ys = torch.arange(h, device=dev)[None, :]
    xs = torch.arange(w, device=dev)[None, :]
    in_y = (ys >= (cy[:, None] - length // 2)) & (ys < (cy[:, None] + length - length // 2))
    in_x = (xs >= (cx[:, None] - length // 2)) & (xs < (cx[:, None] + length - length // 2))
    mask = ~(in_y[:, :, None] & in_x[:, None, :])
    return images * mask[:, None].to(images.dtype)


class Normalize:
    """uint8 [B, C, H, W] -> float normalised, in one fused multiply-add."""

    def __init__(self, mean, std, device):
        std = torch.tensor(std, device=device).view(1, -1, 1, 1)
        self.scale = 1.0 / (255.0 * std)
        self.shift = -torch.tensor(mean, device=device).view(1, -1, 1, 1) / std

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.shift, images.float(), self.scale)
