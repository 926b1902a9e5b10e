"""Randomness that is a function of (stage seed, epoch, batch) only, so that a run resumed from a
checkpoint draws exactly what an uninterrupted run draws.

A checkpoint holds the weights, the optimiser and the loops but not the random number generators, so
nothing random may carry over from one batch to the next. The training order comes from
:class:`EpochSampler`, a permutation seeded by (stage seed, epoch) (Lightning calls its ``set_epoch`` before
every epoch; torch's ``RandomSampler`` would draw from the global generator instead). Every other draw of
a training step (the VAE's reparameterisation noise, dropout, augmentations in the main process) comes from
the global generators, which :class:`ReseedEachBatch` reseeds from (stage seed, epoch, batch) before every
training batch. Reseeding once per epoch is not enough with Lightning 2.6: the first epoch of a ``fit``
creates the DataLoader iterator (which draws a base seed from the global generator) before
``on_train_epoch_start``, later epochs after it, so a resumed run and an uninterrupted one would draw
different noise in the epoch after the checkpoint. Randomness inside DataLoader worker processes
(``num_workers > 0``) is not covered; the datasets used here have none.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from torch.utils.data import Sampler

from ..config import rng_for


def derived_seed(seed: int, *keys: object) -> int:
    """A 31-bit seed derived from ``seed`` and ``keys`` (stable across processes and platforms)."""
    return int(rng_for(int(seed), "train", *keys).integers(0, 2**31 - 1))


def epoch_seed(stage_seed: int, epoch: int, *keys: object) -> int:
    """The seed of one epoch of one stage (and of ``keys`` within it, e.g. a batch index)."""
    return derived_seed(stage_seed, "epoch", int(epoch), *keys)


class EpochSampler(Sampler[int]):
    """Random order of ``n`` items, a function of (seed, epoch): ``set_epoch`` picks the epoch."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self.epoch = int(n), int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
        return iter(torch.randperm(self.n, generator=generator).tolist())

    def __len__(self) -> int:
        return self.n


class EpochBatchSampler(Sampler[list[int]]):
    """The batches of :class:`EpochSampler`'s order for one of ``world_size`` data-parallel processes: each
    global batch of ``batch_size`` items is cut into ``world_size`` consecutive parts and this process (its
    rank in the default process group, 0 outside one) takes its part, so the processes together see exactly
    the batches of one process (a final batch too small to give every process an item is dropped)."""

    def __init__(self, n: int, seed: int, batch_size: int, world_size: int):
        if batch_size % world_size:
            raise ValueError(f"batch_size {batch_size} is not divisible by the {world_size} processes")
        self.sampler = EpochSampler(n, seed)   # `sampler`: where Lightning sets the epoch of a batch sampler
        self.batch_size, self.world_size = int(batch_size), int(world_size)

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator[list[int]]:
        import torch.distributed as dist

        rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
        order = list(self.sampler)
        for start in range(0, len(order), self.batch_size):
            batch = order[start:start + self.batch_size]
            if len(batch) < self.world_size:
                return
            cuts = np.linspace(0, len(batch), self.world_size + 1).round().astype(int)
            yield batch[cuts[rank]:cuts[rank + 1]]

    def __len__(self) -> int:
        full, rest = divmod(self.sampler.n, self.batch_size)
        return full + (rest >= self.world_size)


class ReseedEachBatch(Callback):
    """Reseeds torch, numpy and ``random`` from (stage seed, epoch, batch) before every training batch."""

    def __init__(self, stage_seed: int):
        self.stage_seed = int(stage_seed)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        seed = epoch_seed(self.stage_seed, trainer.current_epoch, "batch", int(batch_idx))
        L.seed_everything(seed, workers=True, verbose=False)


@contextlib.contextmanager
def torch_settings_restored() -> Iterator[None]:
    """Restore torch's process-wide determinism settings on exit.

    Lightning's ``deterministic=True`` switches torch to deterministic algorithms for the whole process;
    the caller's settings come back afterwards. Inside, the NaN-filling of fresh tensors that deterministic
    mode adds (a debugging aid costing ~20 %) is off.
    """
    enabled = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    filling = torch.utils.deterministic.fill_uninitialized_memory
    benchmark = torch.backends.cudnn.benchmark
    torch.utils.deterministic.fill_uninitialized_memory = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(enabled, warn_only=warn_only)
        torch.utils.deterministic.fill_uninitialized_memory = filling
        torch.backends.cudnn.benchmark = benchmark


__all__ = ["EpochBatchSampler", "EpochSampler", "ReseedEachBatch", "derived_seed", "epoch_seed", "torch_settings_restored"]
