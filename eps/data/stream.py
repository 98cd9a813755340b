"""Endless, resumable batch streams over tensors that live on the training device.

Each pass draws a fresh permutation; the last partial batch of a pass is kept (as the reference's loaders do). The
whole state (generator, permutation, position) goes into checkpoints, so a resumed run sees the same batches.
"""
from __future__ import annotations

from typing import Callable

import torch


class BatchStream:
    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int, generator: torch.Generator,
                 transform: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
                 shuffle: bool = True, shard: tuple[int, int] = (0, 1)):
        self.images, self.labels = images, labels
        self.batch_size, self.generator, self.transform, self.shuffle = batch_size, generator, transform, shuffle
        self.rank, self.world = shard  # DDP: each rank reads its own slice of every pass's permutation
        self.perm: torch.Tensor | None = None
        self.pos = 0
        self.passes = 0

    @property
    def batches_per_pass(self) -> int:
        n = len(self._shard_indices(torch.arange(len(self.labels))))
        return -(-n // self.batch_size)

    def _shard_indices(self, perm: torch.Tensor) -> torch.Tensor:
        if self.world == 1:
            return perm
        per_rank = len(perm) // self.world  # equal shards so all ranks step together
        return perm[self.rank * per_rank:(self.rank + 1) * per_rank]

    def _new_pass(self) -> None:
        n = len(self.labels)
        dev = self.images.device
        perm = (torch.randperm(n, device=dev, generator=self.generator) if self.shuffle
                else torch.arange(n, device=dev))
        self.perm = self._shard_indices(perm)
        self.pos = 0
        self.passes += 1

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.perm is None or self.pos >= len(self.perm):
            self._new_pass()
        idx = self.perm[self.pos:self.pos + self.batch_size]
        self.pos += len(idx)
        x = self.images.index_select(0, idx)
        if self.transform is not None:
            x = self.transform(x, self.generator)
        return x, self.labels.index_select(0, idx)

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state(), "perm": None if self.perm is None else self.perm.cpu(),
                "pos": self.pos, "passes": self.passes}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self.perm = None if state["perm"] is None else state["perm"].to(self.images.device)
        self.pos, self.passes = state["pos"], state["passes"]
