"""Benchmark of the lenstronomy simulation layer.

Prints a markdown table of simulated pairs per second per core for the configuration's pairs
settings (and the super-resolution settings), with synthetic numpy stamps, and the speed-up
from 1 shard to 2 shards run as 2 separate processes in parallel (each its own shard and seed),
all measured in the same run. Numerical libraries are limited to one thread per process so that
"per core" means what it says. No timed assertions.

    python benchmarks/simulation.py --n 100
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import multiprocessing as mp
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

import numpy as np
import pandas as pd

from sourcelens.config import load_config, rng_for, validate_config


def get_config() -> dict:
    path = REPO / "config" / "config.yaml"
    return load_config(path) if path.is_file() else validate_config({})


def synthetic_stamps(m: int, size: int, seed: int = 0) -> tuple[np.ndarray, pd.DataFrame]:
    """Peak-normalised elliptical Sérsic stamps (numpy), like the pipeline's parametric sources."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    out = []
    for _ in range(m):
        q, phi = rng.uniform(0.4, 1.0), rng.uniform(0, np.pi)
        r0, n = rng.uniform(0.08, 0.2) * size, rng.uniform(0.7, 2.5)
        x = xx * np.cos(phi) + yy * np.sin(phi)
        y = -xx * np.sin(phi) + yy * np.cos(phi)
        r = np.hypot(x * np.sqrt(q), y / np.sqrt(q))
        img = np.exp(-2.0 * ((r / r0) ** (1 / n) - 1))
        out.append(img / img.max())
    meta = pd.DataFrame({"source_id": [f"bench-{i}" for i in range(m)], "kind": "parametric"})
    return np.asarray(out, dtype=np.float32), meta


def _worker(task: str, lens: str, shard: int, n: int, barrier, queue) -> None:
    """Simulate one shard; report the seconds spent simulating (after set-up, synchronised start)."""
    from sourcelens.config import sr_set_config
    from sourcelens.simulate import simulate_pairs, simulate_sr

    config = get_config()
    sr_cfg = sr_set_config(config["simulate"]["sr"], "broad")
    images, meta = synthetic_stamps(50, config["stamps"]["size"])
    # warm-up (imports, lenstronomy caches) outside the timing
    if task == "pairs":
        simulate_pairs(images, meta, 2, lens, config["simulate"]["pairs"], np.random.default_rng(0), progress=False)
    else:
        simulate_sr(1, lens, "noisy", sr_cfg, np.random.default_rng(0), progress=False)
    if barrier is not None:
        barrier.wait()
    t0, c0 = time.perf_counter(), time.process_time()
    if task == "pairs":
        rng = rng_for(config["seed"], "simulate_pairs", lens, "bench", shard)
        simulate_pairs(images, meta, n, lens, config["simulate"]["pairs"], rng, progress=False)
    else:
        rng = rng_for(config["seed"], "simulate_sr", "bench", shard)
        simulate_sr(n, lens, "noisy", sr_cfg, rng, images=images, meta=meta, progress=False)
    queue.put((shard, time.perf_counter() - t0, time.process_time() - c0))


def run_shards(task: str, lens: str, n: int, n_proc: int) -> tuple[float, float, float]:
    """(pairs/s per process, total pairs/s, pairs per CPU-second) for ``n_proc`` parallel
    processes of ``n`` pairs each (wall-clock rates, and the CPU-time rate that other load on
    the machine does not change)."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    barrier = ctx.Barrier(n_proc)
    procs = [ctx.Process(target=_worker, args=(task, lens, s, n, barrier, queue)) for s in range(n_proc)]
    for p in procs:
        p.start()
    results = [queue.get() for _ in procs]
    for p in procs:
        p.join()
        if p.exitcode != 0:
            raise RuntimeError(f"benchmark worker failed with exit code {p.exitcode}")
    per_proc = [n / t for _, t, _ in results]
    wall = max(t for _, t, _ in results)  # synchronised start: the slowest one ends the run
    cpu = sum(c for _, _, c in results)
    return float(np.mean(per_proc)), n_proc * n / wall, n_proc * n / cpu


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100, help="pairs per shard (default 100)")
    ap.add_argument("--no-sr", action="store_true", help="skip the super-resolution rows")
    ap.add_argument("--repeat", type=int, default=1,
                    help="repeat each measurement, keeping the best (fewer effects of other load on the machine)")
    args = ap.parse_args(argv)

    config = get_config()
    pairs, sr = config["simulate"]["pairs"], config["simulate"]["sr"]
    rows = []
    tasks = [("pairs", lens) for lens in pairs["lens_models"]]
    if not args.no_sr:
        tasks += [("sr", lens) for lens in sr["lens_models"]]
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    for task, lens in tasks:
        one = per2 = total2 = cpu1 = 0.0
        for _ in range(max(1, args.repeat)):  # interleaved, so that both see similar machine load
            r1, _, c1 = run_shards(task, lens, args.n, 1)
            one, cpu1 = max(one, r1), max(cpu1, c1)
            p2, t2, _ = run_shards(task, lens, args.n, 2)
            if t2 > total2:
                per2, total2 = p2, t2
        if task == "pairs":
            grid = f"{pairs['num_pix']}² @ {pairs['pixel_scale_arcsec']}″, ss {pairs['supersampling']}"
            psf = pairs["psf"]["type"]
        else:
            lr, f = sr["low_res_num_pix"], sr["factor"]
            grid = (f"{lr}² + {lr * f}² @ {sr['low_res_pixel_scale_arcsec']}″/"
                    f"{sr['low_res_pixel_scale_arcsec'] / f:g}″, ss {sr['supersampling']}")
            psf = sr["psf"]["type"]
        rows.append((task, lens, grid, psf, cpu1, one, per2, total2, total2 / one))

    load_after = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"\nSimulation benchmark: {args.n} pairs per shard, best of {max(1, args.repeat)}, {os.cpu_count()} CPUs, "
          f"{platform.processor() or platform.machine()}, Python {platform.python_version()}; "
          f"1-min load average {load_before:.1f} before, {load_after:.1f} after (other work on the machine "
          f"lowers the numbers, the 2-shard ones most)\n")
    print("| dataset | lens | grid | PSF | pairs per CPU-second | pairs/s, 1 shard (per core) "
          "| pairs/s per core, 2 shards | pairs/s total, 2 shards | speed-up 1→2 shards |")
    print("|---|---|---|---|---:|---:|---:|---:|---:|")
    for task, lens, grid, psf, cpu1, one, per2, total2, speedup in rows:
        print(f"| {task} | {lens} | {grid} | {psf} | {cpu1:.1f} | {one:.1f} | {per2:.1f} | {total2:.1f} "
              f"| {speedup:.2f}× |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
