"""The predictor variant of EPS (spec §1.8, reference ``search_cnn_nasbench_MLP/``; decisions §5 item 13).

Instead of mutating the trained group's best, each selection trains a small MLP on the measured members (their
encoding -> fitness loss) and lets it pick, ``proposals`` times, the architecture with the lowest predicted loss
among ``candidates`` fresh random ones. The controller stays space-agnostic: the MLP sees the space's own encoding
(``eps.space.Featurizable``), ordinal (the reference: op indices) or one-hot.

Reference architecture: MLP in -> 100 -> 100 -> 1 with ReLUs, Adam lr 1e-3, MSE, 20 steps per selection on
mini-batches of 32 members taken cyclically in queue order. The reference compares an output of shape [B, 1] with a
target of shape [B], so its MSE broadcasts to a B x B comparison and learns little beyond the batch mean; eps fixes
the shapes by default (``predictor_reference_shapes: true`` restores the reference).
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn as nn


class Predictor:
    """An MLP fitness predictor with its optimiser and its place in the cyclic mini-batch order; all on the CPU.

    ``in_features``: length of the space's feature vector. Weights are initialised from ``seed`` (drawn from the
    controller's generator), so a run is reproducible and ``state_dict`` resumes it exactly.
    """

    def __init__(self, in_features: int, seed: int, hidden: int = 100, lr: float = 1e-3, steps: int = 20,
                 batch_size: int = 32, reference_shapes: bool = False):
        gen = torch.Generator().manual_seed(int(seed))
        self.net = nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                 nn.Linear(hidden, 1))
        with torch.no_grad():  # nn.Linear's own init rule, from our generator instead of the global one
            for layer in self.net:
                if isinstance(layer, nn.Linear):
                    bound = 1.0 / layer.in_features ** 0.5
                    layer.weight.uniform_(-bound, bound, generator=gen)
                    layer.bias.uniform_(-bound, bound, generator=gen)
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=lr)
        self.steps, self.batch_size, self.reference_shapes = steps, batch_size, reference_shapes
        self.cursor = 0

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """MSE of predictions for ``x`` (B, F) against targets ``y`` (B,): fixed shapes, or the reference's
        broadcast of (B, 1) against (B,) into a B x B comparison."""
        out = self.net(x)                      # (B, 1)
        if self.reference_shapes:
            return ((out - y) ** 2).mean()     # (B, 1) - (B,) broadcasts to (B, B), as the reference's MSE
        return nn.functional.mse_loss(out.squeeze(-1), y)

    def fit(self, features: np.ndarray, targets: np.ndarray) -> float | None:
        """``steps`` Adam steps on mini-batches taken cyclically (queue order) from ``features`` (N, F) and
        ``targets`` (N,); returns the last mini-batch loss, or None when there is nothing to learn from."""
        n = len(targets)
        if n == 0:
            return None
        x = torch.as_tensor(np.asarray(features, dtype=np.float32))
        y = torch.as_tensor(np.asarray(targets, dtype=np.float32))
        self.net.train()
        last = None
        for _ in range(self.steps):
            idx = (self.cursor + np.arange(min(self.batch_size, n))) % n
            self.cursor = int((self.cursor + len(idx)) % n)
            loss = self.loss(x[idx], y[idx])
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            last = float(loss.detach())
        return last

    @torch.no_grad()
    def predict(self, features: np.ndarray) -> np.ndarray:
        """Predicted fitness loss of each row of ``features`` (N, F); shape (N,)."""
        self.net.eval()
        return self.net(torch.as_tensor(np.asarray(features, dtype=np.float32))).squeeze(-1).numpy()

    def state_dict(self) -> dict:
        return {"net": self.net.state_dict(), "optimizer": self.optimizer.state_dict(), "cursor": self.cursor}

    def load_state_dict(self, state: dict) -> None:
        self.net.load_state_dict(state["net"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.cursor = int(state["cursor"])


@runtime_checkable
class Featurizable(Protocol):
    """A space that encodes an architecture as a fixed-length vector (the predictor variant, spec §1.8)."""

    def features(self, arch: Arch, kind: str = "ordinal") -> np.ndarray:
        """``ordinal``: the architecture's op indices as numbers (the reference); ``one_hot``: one indicator per
        (position, op). Shape (F,), float32, the same F for every arch of the space."""
