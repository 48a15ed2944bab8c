"""Validation preprocessing as plain torch, for prediction and export.

Training runs fastai's transforms; in validation mode they resize the shorter side to the
presize and centre-crop (an item transform, on PIL images: ``petclf.data.images.Presizer``
does the same), then resample to ``size`` with
``grid_sample(align_corners=True)`` on an identity grid — the same as
``F.interpolate(mode='bilinear', align_corners=True)`` — and normalise. Doing the batch part
here skips fastai's per-call dispatch, which costs more than the maths for small batches.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from petclf.data.pipeline import Pipeline

__all__ = ["PixelClassifier"]


class PixelClassifier(nn.Module):
    """Raw RGB pixels (N, presize, presize, 3), uint8 or floats in 0..255, in → class scores out."""

    def __init__(self, model: nn.Module, pipeline: Pipeline, *, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.model, self.size, self.dtype = model, pipeline.size, dtype
        self.register_buffer("mean", torch.tensor(pipeline.mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(pipeline.std).view(1, 3, 1, 1))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = pixels.permute(0, 3, 1, 2).float() / 255.0
        x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=True)
        x = ((x - self.mean) / self.std).to(self.dtype)
        return self.model(x.contiguous(memory_format=torch.channels_last)).float()
