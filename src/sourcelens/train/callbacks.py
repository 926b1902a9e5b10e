"""Lightning callbacks of staged training: the per-epoch metric rows, and an exact resume.

Why :class:`ExactResume` is needed (Lightning 2.6): the checkpoints are written at the end of each training
epoch (``ModelCheckpoint(save_on_train_epoch_end=True)``, in ``on_train_epoch_end``), and Lightning steps the
epoch-interval ``ReduceLROnPlateau`` schedulers *after* that hook. A run resumed from such a checkpoint
continues with the next epoch and never takes the missed step (the fit loop skips plateau schedulers while
restarting: the metrics they monitor are not in the checkpoint), so its learning rate, ``best`` and
``num_bad_epochs`` differ from the uninterrupted run's. Nor is ``trainer.should_stop`` in the checkpoint: an
early stop decided at the checkpointed epoch would be forgotten. ``EarlyStopping``'s own state (best score,
wait count) is saved after its check and restored correctly, as are the optimiser and ``ModelCheckpoint``.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Mapping, Sequence

import torch
from lightning.pytorch.callbacks import Callback

log = logging.getLogger("sourcelens.train")


class MetricsHistory(Callback):
    """One row per epoch: ``stage``, the stage's labels, ``epoch`` and the logged ``metrics`` (NaN if not
    logged). The rows are saved in (and restored from) the checkpoints, so a resumed stage keeps them."""

    def __init__(self, stage: int, labels: Mapping[str, Any], metrics: Sequence[str]):
        self.stage, self.labels, self.metrics = int(stage), dict(labels), tuple(metrics)
        self.rows: list[dict[str, Any]] = []

    @property
    def state_key(self) -> str:
        return f"MetricsHistory[stage={self.stage}]"

    def on_train_epoch_end(self, trainer, pl_module) -> None:  # runs before ModelCheckpoint saves
        if trainer.sanity_checking:
            return
        values = trainer.callback_metrics
        row: dict[str, Any] = {"stage": self.stage, **self.labels, "epoch": int(trainer.current_epoch)}
        for key in self.metrics:
            value = values.get(key)
            row[key] = float(value) if value is not None else math.nan
        self.rows = [r for r in self.rows if r["epoch"] != row["epoch"]] + [row]
        name = " ".join(map(str, self.labels.values()))
        log.info("stage %d%s epoch %d: %s", self.stage, f" ({name})" if name else "", row["epoch"],
                 "  ".join(f"{k} {row[k]:.5g}" for k in self.metrics))

    def state_dict(self) -> dict[str, Any]:
        return {"rows": [dict(r) for r in self.rows]}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        self.rows = [dict(r) for r in state_dict.get("rows", [])]


class ExactResume(Callback):
    """Makes a run resumed from an epoch-end checkpoint continue exactly as the uninterrupted run did.

    Saves with each checkpoint the epoch, the epoch's scalar metrics and ``trainer.should_stop`` (its state
    is taken when the checkpoint is written, after the early-stopping check); on resume it takes the
    ``ReduceLROnPlateau`` steps that the interrupted run took after writing the checkpoint, and stops if
    that run had decided to stop (see the module docstring).
    """

    def __init__(self) -> None:
        self._trainer = None
        self._restored: dict[str, Any] | None = None

    def setup(self, trainer, pl_module, stage: str) -> None:
        self._trainer = trainer

    def state_dict(self) -> dict[str, Any]:
        trainer = self._trainer
        if trainer is None:
            return {}
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()
                   if isinstance(v, torch.Tensor) and v.numel() == 1}
        return {"epoch": int(trainer.current_epoch), "should_stop": bool(trainer.should_stop), "metrics": metrics}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        self._restored = dict(state_dict) if state_dict else None

    def on_train_start(self, trainer, pl_module) -> None:
        state, self._restored = self._restored, None
        # an epoch-end checkpoint of epoch k resumes at epoch k + 1; anything else has no missed step
        if state is None or int(trainer.current_epoch) != state["epoch"] + 1:
            return
        for config in trainer.lr_scheduler_configs:
            if not (config.reduce_on_plateau and config.interval == "epoch"
                    and (state["epoch"] + 1) % config.frequency == 0):
                continue
            value = state["metrics"].get(config.monitor)
            if value is None:
                if config.strict:
                    raise RuntimeError(f"resuming: the checkpoint lacks {config.monitor!r}, monitored by "
                                       f"{type(config.scheduler).__name__}")
                continue
            pl_module.lr_scheduler_step(config.scheduler, torch.tensor(value))
        if state["should_stop"]:
            trainer.should_stop = True


__all__ = ["ExactResume", "MetricsHistory"]
