"""Scale-out of catalogue work (sourcelens.apply, the code of the apply_shard rule): stamps per second with 1 and
2 (or --workers) local worker processes, the speed-up, and the memory of each worker; prints a markdown table.

    python benchmarks/scaling.py [--model results/models/vae.pt] [--stamps results/data/stamps_test.h5]
                                 [--tasks fit encode] [--n 384] [--workers 1 2] [--shards-per-worker 2]
    python benchmarks/scaling.py --quick     # small sizes: well under a minute

Each worker is a fresh process with torch at one thread (as Snakemake runs one job per core: `threads: 1` of
rule apply_shard), calling :func:`sourcelens.apply.run_shard` on its shards of a catalogue of --n stamps (the
first rows of --stamps, tiled where fewer; decoder draws when there is no stamps file) written to a temporary
HDF5 file; shards are --shards-per-worker × workers equal row ranges handed out in order. Wall time runs from
the first submission to the last shard written, so process start-up, imports and model loading count, as they do
for jobs. Memory: each worker's peak resident set (ru_maxrss). The model: --model, else an untrained VAE of the
default architecture (random weights, seed 0: the cost per L-BFGS iteration is the same; iteration counts are
not). Decoder fits are compute-bound and scale with cores; encodings take about a millisecond a stamp, so the
process start-up dominates at small N. A reference row runs fixed single-thread torch work per job on the same
worker counts (workers started before timing): the speed-up the machine itself allows. No timing is asserted anywhere: the numbers depend on the machine's load.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)


def _shard(task: str, model: str, catalogue: str, start: int, stop: int, out: str, options: dict) -> tuple[float, float]:
    from sourcelens.apply import run_shard

    seconds = run_shard(task, model, catalogue, start, stop, out, options=options)
    return seconds, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0   # MB (Linux: kB)


def _compute(seconds_of_work: int) -> tuple[float, float]:
    """The machine's own ceiling: a fixed amount of single-thread torch work (conv2d on a 64² batch)."""
    import torch

    t0 = time.perf_counter()
    x = torch.randn(32, 16, 64, 64)
    w = torch.randn(16, 16, 3, 3)
    for _ in range(seconds_of_work * 40):
        x = torch.tanh(torch.nn.functional.conv2d(x, w, padding=1) * 0.1)
    return time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def ceiling(workers: int, jobs: int, seconds_of_work: int = 5) -> dict:
    """Wall time of ``jobs`` equal compute jobs on ``workers`` processes (started before timing)."""
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"), initializer=_init_worker) as pool:
        list(pool.map(_compute, [0] * workers))   # start the workers
        t0 = time.perf_counter()
        results = list(pool.map(_compute, [seconds_of_work] * jobs))
    wall = time.perf_counter() - t0
    return {"task": "reference: torch conv2d", "workers": workers, "shards": jobs, "stamps": jobs, "wall_s": wall,
            "shard_s": sum(r[0] for r in results), "stamps_per_s": jobs / wall, "worker_peak_rss_mb": max(r[1] for r in results)}


def _catalogue(path: Path, stamps: Path | None, n: int, model_path: str) -> None:
    """``n`` stamps into ``path`` (HDF5 ``images``)."""
    import h5py

    if stamps is not None and stamps.is_file():
        with h5py.File(stamps, "r") as fh:
            images = np.asarray(fh["images"][:n], dtype=np.float32)
        images = np.concatenate([images] * int(np.ceil(n / len(images))))[:n]
    else:
        import torch

        from sourcelens.models import load_vae

        vae = load_vae(model_path)
        with torch.no_grad():
            z = torch.as_tensor(np.random.default_rng(0).standard_normal((n, vae.latent_dim)), dtype=torch.float32)
            images = vae.decode(z)[:, 0].numpy()
        images = images + np.random.default_rng(1).normal(0, 0.02, images.shape).astype(np.float32)
    with h5py.File(path, "w") as fh:
        fh["images"] = images


def _model(path: Path | None, tmp: Path) -> tuple[str, str]:
    if path is not None and path.is_file():
        return str(path), f"{path}"
    import torch

    from sourcelens.config import validate_config
    from sourcelens.models import VAE
    from sourcelens.models.vae import save_vae

    cfg = validate_config({})
    torch.manual_seed(0)
    vae = VAE(image_size=cfg["stamps"]["size"], latent_dim=cfg["vae"]["latent_dim"], widths=cfg["vae"]["widths"])
    out = tmp / "vae_untrained.pt"
    save_vae(vae.eval(), out)
    return str(out), "untrained VAE (default architecture, seed 0)"


def run(task: str, model: str, catalogue: str, n: int, workers: int, shards_per_worker: int, tmp: Path,
        options: dict) -> dict:
    from sourcelens.apply import shard_ranges

    n_shards = max(1, workers * shards_per_worker)
    ranges = shard_ranges(n, int(np.ceil(n / n_shards)))
    t0 = time.perf_counter()
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"), initializer=_init_worker) as pool:
        futures = [pool.submit(_shard, task, model, catalogue, a, b, str(tmp / f"{task}_{workers}_{i}.h5"), options)
                   for i, (a, b) in enumerate(ranges)]
        results = [f.result() for f in futures]
    wall = time.perf_counter() - t0
    rss = [r[1] for r in results]
    return {"task": task, "workers": workers, "shards": len(ranges), "stamps": n, "wall_s": wall,
            "shard_s": sum(r[0] for r in results), "stamps_per_s": n / wall, "worker_peak_rss_mb": max(rss)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, default=Path("results/models/vae.pt"))
    ap.add_argument("--stamps", type=Path, default=Path("results/data/stamps_test.h5"))
    ap.add_argument("--tasks", nargs="+", default=["fit", "encode"], choices=["fit", "fit_posterior", "encode"])
    ap.add_argument("--n", type=int, default=384,
                    help="stamps (fits; encodings get 64 × as many); the default makes the work outweigh the "
                         "workers' start-up (about 2 s each, imports and model), as in shards of real size")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--shards-per-worker", type=int, default=2)
    ap.add_argument("--max-iter", type=int, default=200)
    ap.add_argument("--chunk-size", type=int, default=None, help="decoder fits' chunk_size (default: the fitter's)")
    ap.add_argument("--quick", action="store_true",
                    help="8 fits with 20 iterations, 512 encodings, a fifth of the reference work")
    args = ap.parse_args(argv)
    if args.quick:
        args.n, args.max_iter = 8, 20
    print(f"# scaling: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"load {os.getloadavg()[0]:.2f}, python {sys.version.split()[0]}")
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        model, model_name = _model(args.model, tmp)
        print(f"# model: {model_name}")
        rows = []
        for task in args.tasks:
            n = args.n * (64 if task == "encode" else 1)
            catalogue = tmp / f"catalogue_{task}.h5"
            _catalogue(catalogue, args.stamps, n, model)
            options = {} if task == "encode" else {"sigma": 0.02, "max_iter": args.max_iter,
                                                   "chunk_size": args.chunk_size}
            if task == "fit_posterior":
                options.update(n_samples=50, seed=0)
            for w in args.workers:
                rows.append(run(task, model, str(catalogue), n, w, args.shards_per_worker, tmp, options))
        for w in args.workers:   # the machine's ceiling for compute-bound work, the same jobs per worker
            rows.append(ceiling(w, w * args.shards_per_worker, 1 if args.quick else 5))
        base = {r["task"]: r["stamps_per_s"] for r in rows if r["workers"] == min(args.workers)}
        print("\n| task | workers | shards | stamps | wall (s) | in shards (s, summed) | stamps/s | speed-up | "
              "peak RSS per worker (MB) |")
        print("|---|---|---|---|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['task']} | {r['workers']} | {r['shards']} | {r['stamps']} | {r['wall_s']:.1f} | "
                  f"{r['shard_s']:.1f} | {r['stamps_per_s']:.1f} | {r['stamps_per_s'] / base[r['task']]:.2f}× | "
                  f"{r['worker_peak_rss_mb']:.0f} |")
        print("\nwall: from the first submission to the last shard written (worker start-up, imports and model "
              "loading included); in shards: the summed time inside run_shard (reading, model, work, writing). "
              "reference: fixed single-thread torch work per job, workers started before timing: the speed-up "
              "this machine gives compute-bound work (its cores share caches and memory bandwidth).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
