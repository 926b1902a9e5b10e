"""Staged training of any model with Lightning, with checkpoints, exact resume and skipped finished stages.

A model's training is a list of stages (e.g. MAE pretraining, then MSE) run in order. Each stage is a
``Trainer.fit`` of at most ``epochs`` epochs of a LightningModule made for it by the caller's factory, which
wraps the one shared ``nn.Module`` and configures its own (fresh) optimiser and scheduler; so a stage starts
from the best weights of the previous one. Per stage, in ``checkpoint_dir/stage{i}[_{label}]/``:
``best.ckpt`` (``ModelCheckpoint`` on ``val_loss``), ``last.ckpt`` (written at the end of every epoch) and
``EarlyStopping`` on ``val_loss`` (``early_stopping_patience``).

``checkpoint_dir/progress.json`` (:mod:`.checkpoints`) records the finished stages and a fingerprint of the
settings, seed and data. A rerun skips the finished stages, resumes an unfinished one from its
``last.ckpt``, and starts afresh when the fingerprint differs. On a CPU (Lightning's ``deterministic=True``)
a resumed run gives exactly the weights and metrics of an uninterrupted one (:mod:`.determinism`,
:class:`.callbacks.ExactResume`); on a GPU, as nearly as its kernels allow. Damaged
files never block a rerun: a ``last.ckpt`` that does not load falls back to the stage's ``best.ckpt``
(resuming from its epoch), else the stage starts afresh; a finished stage whose best checkpoint does not
load is trained again (and the stages after it); a damaged ``progress.json`` starts everything afresh.
Each case is logged as a warning naming the file.

A model's config block needs ``stages`` (each with ``epochs`` and whatever its module factory reads),
``batch_size``, ``early_stopping_patience``, and optionally ``accelerator`` (auto, cpu, gpu),
``num_workers``, ``checkpoint_dir`` and ``devices``; those four are not part of the fingerprint.

``devices`` > 1 trains with distributed data parallel (DDP) on that many GPUs (or CPU processes) of one node:
Lightning spawns one process per device (gloo on CPUs, NCCL on GPUs), each takes an equal, consecutive part of
every batch of the one-process order (:class:`.determinism.EpochBatchSampler`: the global batch stays
``batch_size``), and the gradients are averaged, so the loss curve is that of one process up to float
reduction order (tests/test_ddp.py; random augmentations and dropout draw differently per process). Under
SLURM, ask the job for as many GPUs (the slurm profile's ``gpu:``). ``precision``
(:func:`resolve_precision`; part of the fingerprint): ``auto`` trains in bf16 mixed precision on a GPU and in
float32 on the CPU; ``bf16-mixed`` also on a CPU that computes bf16 natively (AVX512-BF16 or AMX: about
1.8× faster for the U-Net here), falling back to float32 elsewhere, where bf16 is emulated and slower.
"""

from __future__ import annotations

import logging
import math
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import lightning as L
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.plugins.environments import LightningEnvironment
from torch.utils.data import DataLoader, Dataset

from .callbacks import ExactResume, MetricsHistory
from .checkpoints import fingerprint, open_progress, read_checkpoint, write_progress
from .determinism import EpochBatchSampler, EpochSampler, ReseedEachBatch, derived_seed, torch_settings_restored

log = logging.getLogger("sourcelens.train")

ModuleFactory = Callable[[Mapping[str, Any]], L.LightningModule]


@dataclass
class StagedResult:
    """What :func:`train_stages` returns.

    ``rows``: one dict per epoch and stage (``stage``, the labels, ``epoch``, the metrics), in order.
    ``stages``: one summary per stage (``stage``, labels, ``max_epochs``, ``epochs_run``, ``best_<monitor>``,
    ``best_epoch``, ``stopped_early``, ``resumed``, ``skipped``, ``best_model_path``).
    ``best_checkpoint``: the best checkpoint of the last stage, whose weights ``module`` (the last stage's
    LightningModule, so the shared model) holds. ``accelerator``: the one used.
    """

    rows: list[dict[str, Any]]
    stages: list[dict[str, Any]]
    best_checkpoint: str | None
    module: L.LightningModule
    accelerator: str


def resolve_accelerator(accelerator: str) -> str:
    """``auto`` becomes ``gpu`` when CUDA is available, else ``cpu``."""
    if accelerator == "auto":
        return "gpu" if torch.cuda.is_available() else "cpu"
    return accelerator


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (oneDNN's check: AVX512-BF16 or AMX)."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # pragma: no cover - builds without oneDNN
        return False


def resolve_precision(precision: str, accelerator: str) -> str:
    """Lightning precision for a config's ``precision`` (auto, bf16-mixed, 32-true) on ``accelerator`` (cpu,
    gpu): see the module docstring."""
    if precision not in ("auto", "bf16-mixed", "32-true"):
        raise ValueError(f"unknown precision {precision!r}; allowed: auto, bf16-mixed, 32-true")
    if accelerator == "gpu":
        return "32-true" if precision == "32-true" else "bf16-mixed"
    if precision == "bf16-mixed":
        if cpu_has_native_bf16():
            return "bf16-mixed"
        log.warning("precision bf16-mixed: this CPU has no native bf16 (AVX512-BF16/AMX); training in float32")
    return "32-true"


def stage_name(index: int, stage: Mapping[str, Any], labels: Sequence[str] = ()) -> str:
    """Folder name of a stage: ``stage{index}`` then ``_{value}`` of each label (``stage1_mae``)."""
    return "_".join([f"stage{index}", *(str(stage[k]) for k in labels)])


def train_stages(make_module: ModuleFactory, train_data: Dataset, val_data: Dataset,
                 settings: Mapping[str, Any], checkpoint_dir: str | Path, seed: int, *,
                 metrics: Sequence[str] = ("train_loss", "val_loss", "lr"), labels: Sequence[str] = (),
                 monitor: str = "val_loss") -> StagedResult:
    """Train through ``settings["stages"]`` in order (see the module docstring), resuming from ``checkpoint_dir``.

    ``make_module(stage)`` returns the LightningModule of one stage (its config mapping); every module must
    wrap the same ``nn.Module`` and log ``monitor`` in validation. ``settings`` is the model's config block
    (defaults filled): all of it but :data:`~.checkpoints.RUNTIME_KEYS` forms the fingerprint, with ``seed``
    and the datasets. ``metrics`` are the logged values kept per epoch; ``labels`` are keys of the stage
    configs that name the stage folders and label the rows (e.g. ``("loss",)``).
    """
    if monitor not in metrics:
        raise ValueError(f"the monitored {monitor!r} must be one of the metrics {tuple(metrics)}")
    stages = list(settings["stages"])
    checkpoint_dir = Path(checkpoint_dir)
    accelerator = resolve_accelerator(str(settings.get("accelerator", "auto")))
    progress = open_progress(checkpoint_dir, fingerprint(settings, seed, train_data, val_data))
    names = [stage_name(i, s, labels) for i, s in enumerate(stages, start=1)]

    rows: list[dict[str, Any]] = []
    summaries: list[dict[str, Any]] = []
    best_ckpt: str | None = None
    module: L.LightningModule | None = None
    with torch_settings_restored():
        for index, (name, stage) in enumerate(zip(names, stages), start=1):
            stage_seed = derived_seed(seed, "stage", index)
            L.seed_everything(stage_seed, workers=True, verbose=False)
            module = make_module(stage)
            done = _finished(progress, name, checkpoint_dir, module)
            if done is not None:
                log.info("%s already finished (%d epochs, best %s %.5g): skipped", name, done["epochs_run"],
                         monitor, done[f"best_{monitor}"])
                rows.extend(done["rows"])
                summaries.append({k: v for k, v in done.items() if k != "rows"} | {"skipped": True})
                best_ckpt = done["best_model_path"]
                continue
            # this stage trains: a record of it (its best checkpoint was damaged) and anything of the stages
            # after it, which started from its results, no longer hold
            stale = [n for n in names[index - 1:] if progress["finished"].pop(n, None) is not None]
            for later in names[index:]:
                shutil.rmtree(checkpoint_dir / later, ignore_errors=True)
            if stale:
                write_progress(checkpoint_dir, progress)
            record = _fit_stage(module, stage, index, name, train_data, val_data, settings, checkpoint_dir,
                                stage_seed, accelerator, labels, metrics, monitor,
                                model_summary=not summaries)
            progress["finished"][name] = record
            write_progress(checkpoint_dir, progress)
            rows.extend(record["rows"])
            summaries.append({k: v for k, v in record.items() if k != "rows"} | {"skipped": False})
            best_ckpt = record["best_model_path"]
    assert module is not None, "no stages"
    return StagedResult(rows=rows, stages=summaries, best_checkpoint=best_ckpt, module=module,
                        accelerator=accelerator)


def _finished(progress: Mapping[str, Any], name: str, checkpoint_dir: Path,
              module: L.LightningModule) -> dict[str, Any] | None:
    """The record of a finished stage with its best weights loaded into ``module``; None (stage to train)
    when it did not finish or its best checkpoint no longer loads."""
    done = progress["finished"].get(name)
    if done is None:
        return None
    path = checkpoint_dir / name / Path(done["best_model_path"]).name  # where the folder is now
    ckpt = read_checkpoint(path)
    if ckpt is None:
        log.warning("%s: best checkpoint %s of the finished stage is missing or damaged: training the stage "
                    "again", name, path)
        shutil.rmtree(checkpoint_dir / name, ignore_errors=True)
        return None
    module.load_state_dict(ckpt["state_dict"])
    return dict(done, best_model_path=str(path))


def _resume_point(stage_dir: Path, name: str) -> Path | None:
    """The checkpoint an unfinished stage resumes from: ``last.ckpt``, else ``best.ckpt`` when ``last.ckpt``
    is damaged; None (the stage folder emptied) when neither is usable or the best weights are lost."""
    last, best = stage_dir / "last.ckpt", stage_dir / "best.ckpt"
    if not last.exists() and not best.exists():
        shutil.rmtree(stage_dir, ignore_errors=True)
        return None
    last_ok = read_checkpoint(last) is not None
    best_ok = read_checkpoint(best) is not None
    if best.exists() and not best_ok:
        log.warning("%s: %s is damaged (the stage's best weights are lost): starting the stage afresh", name, best)
    elif last_ok:
        return last
    elif best_ok:
        log.warning("%s: %s is %s: resuming from %s instead (its epochs after the best one are trained again)",
                    name, last, "damaged" if last.exists() else "missing", best)
        return best
    else:
        log.warning("%s: %s is damaged: starting the stage afresh", name, last)
    shutil.rmtree(stage_dir, ignore_errors=True)
    return None


def _strategy(devices: int, accelerator: str):
    """Lightning's strategy: one process ("auto"), or for ``devices`` > 1 distributed data parallel with the
    processes spawned by Lightning inside this job (the rest of the calling script runs once, in this
    process), gloo on CPUs and NCCL on GPUs."""
    if devices <= 1:
        return "auto"
    from lightning.pytorch.strategies import DDPStrategy

    return DDPStrategy(start_method="spawn", process_group_backend="gloo" if accelerator == "cpu" else "nccl")


def _fit_stage(module: L.LightningModule, stage: Mapping[str, Any], index: int, name: str,
               train_data: Dataset, val_data: Dataset, settings: Mapping[str, Any], checkpoint_dir: Path,
               stage_seed: int, accelerator: str, labels: Sequence[str], metrics: Sequence[str], monitor: str,
               model_summary: bool) -> dict[str, Any]:
    """One ``Trainer.fit`` of a stage, resumed if it has checkpoints; its record for ``progress.json``."""
    stage_dir = checkpoint_dir / name
    resume = _resume_point(stage_dir, name)
    if resume is not None:
        log.info("%s: resuming from %s", name, resume)
    batch_size, num_workers = int(settings["batch_size"]), int(settings.get("num_workers", 0))
    devices = int(settings.get("devices", 1))
    if devices > 1:   # data-parallel: each process takes its part of every batch of the one-process order
        if batch_size % devices:
            raise ValueError(f"batch_size {batch_size} must be divisible by devices {devices} (each of the "
                             "data-parallel processes takes an equal part of every batch)")
        train_loader = DataLoader(train_data, batch_sampler=EpochBatchSampler(len(train_data), stage_seed,
                                                                              batch_size, devices),
                                  num_workers=num_workers, persistent_workers=num_workers > 0)
    else:
        train_loader = DataLoader(train_data, batch_size=batch_size,
                                  sampler=EpochSampler(len(train_data), stage_seed),
                                  num_workers=num_workers, persistent_workers=num_workers > 0)
    val_loader = DataLoader(val_data, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                            persistent_workers=num_workers > 0)
    history = MetricsHistory(index, {k: stage[k] for k in labels}, metrics)
    checkpoint = ModelCheckpoint(dirpath=stage_dir, filename="best", monitor=monitor, mode="min", save_top_k=1,
                                 save_on_train_epoch_end=True, enable_version_counter=False)
    # every epoch's checkpoint: since Lightning 2.6, save_last=True writes last.ckpt only at epochs where a
    # top-k checkpoint is saved, i.e. it would be the best one, and a rerun would retrain every epoch after it
    latest = ModelCheckpoint(dirpath=stage_dir, filename="last", monitor=None, save_top_k=1,
                             save_on_train_epoch_end=True, enable_version_counter=False)
    stopping = EarlyStopping(monitor=monitor, mode="min", patience=int(settings["early_stopping_patience"]))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*exists and is not empty.*")
        warnings.filterwarnings("ignore", message=".*`srun` command is available.*")
        trainer = L.Trainer(
            max_epochs=int(stage["epochs"]), accelerator=accelerator, devices=devices,
            strategy=_strategy(devices, accelerator),
            precision=resolve_precision(str(settings.get("precision", "auto")), accelerator),
            deterministic=True if accelerator == "cpu" else "warn",
            callbacks=[history, ReseedEachBatch(stage_seed), ExactResume(), stopping, checkpoint, latest,
                       TQDMProgressBar(refresh_rate=max(1, len(train_loader) // 4))],
            logger=CSVLogger(save_dir=stage_dir, name="csv", flush_logs_every_n_steps=1),
            plugins=[LightningEnvironment()],  # processes of this node only: no SLURM/MPI auto-detection
            use_distributed_sampler=False,     # keep EpochSampler
            default_root_dir=stage_dir, num_sanity_val_steps=0, log_every_n_steps=1,
            enable_model_summary=model_summary and resume is None,
        )
        trainer.fit(module, train_dataloaders=train_loader, val_dataloaders=val_loader,
                    ckpt_path=str(resume) if resume is not None else None)
    # the path under checkpoint_dir as given (Lightning's is absolute), as for skipped stages
    best_path = str(stage_dir / Path(checkpoint.best_model_path or "last.ckpt").name)
    if checkpoint.best_model_path:
        module.load_state_dict(torch.load(best_path, map_location="cpu", weights_only=False)["state_dict"])
    score = checkpoint.best_model_score
    if devices > 1:   # the callbacks ran in the spawned processes: their state is in the last checkpoint
        state = torch.load(stage_dir / "last.ckpt", map_location="cpu", weights_only=False)["callbacks"]
        history.load_state_dict(state.get(history.state_key, {}))
        stopping.stopped_epoch = next((v.get("stopped_epoch", 0) for k, v in state.items()
                                       if k.startswith("EarlyStopping")), 0)
        score = None
    finite = [r for r in history.rows if not math.isnan(r[monitor])]
    if score is None and finite:
        score = min(r[monitor] for r in finite)
    record = {
        "stage": index, **{k: stage[k] for k in labels}, "max_epochs": int(stage["epochs"]),
        "epochs_run": len(history.rows),
        f"best_{monitor}": float(score) if score is not None else math.nan,
        "best_epoch": int(min(finite, key=lambda r: r[monitor])["epoch"]) if finite else -1,
        "stopped_early": bool(stopping.stopped_epoch > 0),
        "resumed": resume is not None, "best_model_path": best_path, "rows": history.rows,
    }
    log.info("%s finished: %d epochs, best %s %.5g at epoch %d%s", name, record["epochs_run"], monitor,
             record[f"best_{monitor}"], record["best_epoch"], " (early stop)" if record["stopped_early"] else "")
    return record


__all__ = ["ModuleFactory", "StagedResult", "cpu_has_native_bf16", "resolve_accelerator", "resolve_precision",
           "stage_name", "train_stages"]
