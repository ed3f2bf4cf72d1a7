"""Whole-image inference with a PyTorch network (validation and evaluation).

Images are padded by reflection to the network's multiple and cropped back. Tiled,
streaming inference for volumes of any size lives in :mod:`membraind.predict`.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def pad_to_multiple(image: np.ndarray, multiple: int) -> tuple[np.ndarray, tuple[int, int]]:
    """Reflect-pad bottom and right up to a multiple of ``multiple``; returns the original size."""
    h, w = image.shape
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        image = np.pad(image, ((0, ph), (0, pw)), mode="reflect" if min(h, w) > max(ph, pw) else "edge")
    return image, (h, w)


@torch.no_grad()
def predict_probabilities(model: nn.Module, image: np.ndarray, multiple: int, device: torch.device) -> np.ndarray:
    """Class probabilities (C, H, W) float32 for one normalised 2D image."""
    padded, (h, w) = pad_to_multiple(image, multiple)
    x = torch.from_numpy(np.ascontiguousarray(padded, dtype=np.float32))[None, None].to(device)
    was_training = model.training
    model.eval()
    try:
        probabilities = torch.softmax(model(x).float(), dim=1)[0, :, :h, :w]
    finally:
        model.train(was_training)
    return probabilities.cpu().numpy()


def classes_from_probabilities(probabilities: np.ndarray) -> np.ndarray:
    """Label classes (1 = interior, 2 = membrane, 3 = third) from (C, H, W) probabilities."""
    return (probabilities.argmax(axis=0) + 1).astype(np.uint8)


def classes_from_logits(logits: torch.Tensor) -> np.ndarray:
    """Label classes (N, H, W) uint8 from a batch of logits (N, C, H, W): channel k is class k + 1."""
    return (logits.argmax(1) + 1).to(torch.uint8).cpu().numpy()
