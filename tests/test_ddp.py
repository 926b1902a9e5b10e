"""Distributed data parallel training (sourcelens.train.staged with ``devices: 2``): two CPU processes (gloo)
give the loss curve and the weights of one process, the split of every batch is exact, and a bad batch size is
named."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

from sourcelens.train.determinism import EpochBatchSampler, EpochSampler
from sourcelens.train.modules import AdamPlateauModule
from sourcelens.train.staged import train_stages


class TinyRegression(AdamPlateauModule):
    """A small convolutional regression with an MSE loss and no randomness in its steps."""

    def __init__(self, net: torch.nn.Module, **kw):
        super().__init__(**kw)
        self.net = net

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.net(x), y)
        self.log_train(loss, len(x))
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", torch.nn.functional.mse_loss(self.net(x), y), on_epoch=True, batch_size=len(x))


def _data(n: int, seed: int) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 8, 8, generator=g)
    y = x.mean((1, 2, 3), keepdim=False)[:, None] * 2.0 + 0.1 * x[:, 0, 4, 4, None]
    return TensorDataset(x, y)


def _train(tmp_path, devices: int):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.Tanh(), torch.nn.Flatten(),
                              torch.nn.Linear(4 * 64, 1))
    settings = {"stages": [{"epochs": 3}], "batch_size": 16, "early_stopping_patience": 5, "accelerator": "cpu",
                "precision": "32-true", "devices": devices}
    result = train_stages(lambda stage: TinyRegression(net, learning_rate=3e-3), _data(64, 1), _data(32, 2), settings,
                          tmp_path / f"ckpt{devices}", seed=7)
    return result, {k: v.detach().clone() for k, v in net.state_dict().items()}


def test_two_processes_follow_the_one_process_curve(tmp_path):
    one, w1 = _train(tmp_path, 1)
    two, w2 = _train(tmp_path, 2)
    assert [r["epoch"] for r in two.rows] == [r["epoch"] for r in one.rows] == [0, 1, 2]
    for a, b in zip(one.rows, two.rows):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-4), (a, b)
        assert b["val_loss"] == pytest.approx(a["val_loss"], rel=1e-4), (a, b)
    assert one.rows[-1]["train_loss"] < 0.8 * one.rows[0]["train_loss"]          # it learns
    for name in w1:
        torch.testing.assert_close(w2[name], w1[name], rtol=1e-4, atol=1e-6)
    s1, s2 = one.stages[0], two.stages[0]
    assert s2["epochs_run"] == s1["epochs_run"] == 3 and s2["best_epoch"] == s1["best_epoch"]
    assert s2["best_val_loss"] == pytest.approx(s1["best_val_loss"], rel=1e-4)


def test_the_processes_share_every_batch_of_the_one_process_order(monkeypatch):
    import torch.distributed as dist

    order = EpochSampler(50, 3)
    order.set_epoch(2)
    expect = list(order)
    parts = []
    for rank in range(2):
        monkeypatch.setattr(dist, "is_initialized", lambda: True)
        monkeypatch.setattr(dist, "get_rank", lambda rank=rank: rank)
        sampler = EpochBatchSampler(50, 3, 16, 2)
        sampler.set_epoch(2)
        parts.append(list(sampler))
        assert len(parts[-1]) == len(sampler) == 4
    # batch k of rank 0 then of rank 1 is batch k of the one-process order
    joined = [i for k in range(4) for rank in range(2) for i in parts[rank][k]]
    assert joined == expect
    assert [len(b) for b in parts[0]] == [8, 8, 8, 1] and [len(b) for b in parts[1]] == [8, 8, 8, 1]
    with pytest.raises(ValueError, match="not divisible"):
        EpochBatchSampler(50, 3, 15, 2)


def test_a_batch_size_the_processes_cannot_share_is_named(tmp_path):
    net = torch.nn.Linear(64, 1)
    settings = {"stages": [{"epochs": 1}], "batch_size": 15, "early_stopping_patience": 1, "accelerator": "cpu",
                "devices": 2}
    with pytest.raises(ValueError, match="batch_size 15 must be divisible by devices 2"):
        train_stages(lambda stage: TinyRegression(torch.nn.Sequential(torch.nn.Flatten(), net)), _data(32, 1),
                     _data(8, 2), settings, tmp_path / "ckpt", seed=1)
