"""Speed and memory of the super-resolution methods of studies 001 and 004 (bicubic, supervised SISR, LensSR
without and with source, PISR) on the CPU, and what their lens operators cost; prints markdown tables.

    python benchmarks/super_resolution.py [--num-pix 75] [--pixel-scale 0.05] [--factor 2] [--width 32] [--depth 4]
                                          [--batches 1 64] [--threads 1 N] [--repeat 3] [--min-images 8]
                                          [--n-train 32] [--epochs 1] [--lenses 3] [--no-memory]
    python benchmarks/super_resolution.py --quick    # tiny grid and networks: well under a minute

Images: synthetic, simulated here (``sourcelens.lensing.LensingSimulator``, not the pipeline's SR sets, whose
simulation is configured elsewhere): an SIE lens (θE 1.0–1.4″, e1, e2 within ±0.1) and an elliptical Sérsic
source (R 0.25″, n 1, centre within ±0.35″) on the high-resolution grid, no PSF (Model_I has none), binned
``factor``× to the low-resolution grid, Gaussian noise of 1 % of the peak. Default grid: DeepLenseSim
Model_I's, 75² pixels of 0.05″ → 150² of 0.025″. Networks: untrained (random weights, seed 0) with the
training defaults (``sourcelens.train.sr.DEFAULTS``: SISR width 32, depth 4, bicubic skip; PISR's ``f`` an SISR)
— speed and memory do not depend on the weights.

1. Throughput: images/s of each method's public call, image normalisation and numpy results included —
   ``bicubic_super_resolve``; ``super_resolve`` with the supervised SISR and with LensSR-with-source's SISR
   (the same network at inference: it needs no lens); ``lenssr_super_resolve`` without a lens (the image
   network only) and with one (plus i∘β and the source network); ``pisr_super_resolve`` (i∘β, f, the lensing
   of ŝ, the block sum) — at each --batches size, with torch at 1 thread and at all CPU threads (--threads).
   The lens operators are built beforehand (one lens for all images; what a different lens per image adds
   is in table 3). Each timed run processes max(batch, --min-images) images; one warm-up run is excluded and
   the median of --repeat runs is printed.
2. Training: seconds per epoch of each method's main loss (supervised and with-source: MSE against the
   target; LensSR no-source: the lens-equation loss; PISR: χ² + TV) on --n-train images at the training
   default batch size 16, all threads: forward, backward and Adam step of the public LightningModules
   (``sourcelens.train.sr``: ``SISRModule``, ``LensSRModule``, ``PISRModule``) over the batches, then their
   validation loss on a quarter as many images — Lightning's own bookkeeping and checkpoints excluded
   (median of --epochs epochs after a warm-up batch). Besides, each method's one-off set-up: the lens
   operators and i∘β of every training image (LensSR no-source, PISR; one distinct lens per image here, as in
   the SR sets) and the Sérsic fits re-lensed as targets (with-source; ``sersic_relensed``, 100 iterations,
   --quick 20).
3. Lens operators (``SRLens``: the exact-overlap map of the low-resolution image onto its source grid and of
   the high-resolution source onto the high-resolution image): seconds to build one (median over --lenses
   SIE lenses), its bytes, a cache hit (``SRLensCache.get`` of a lens already built), and PISR's seconds per
   image with one fixed lens (operators built once) against a different lens per image (built for each).
4. Memory: parameter count and weight bytes; the peak resident set size (VmHWM) of a fresh process over one
   batch's call at each batch size, above its baseline with the model, the lens operators and the batch loaded
   (measured as in benchmarks/inference.py; --quick: one process for every row, in turn, so that later rows
   may reuse memory freed by earlier ones).

No timing is asserted: the numbers depend on the machine and its load (printed in the header).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from inference import (  # the memory probe of the inference benchmark
    peak_rss_mib,
    tiled,
    weights,
)

from sourcelens.lensing import LensingSimulator, SRGeometry, SRLens, SRLensCache
from sourcelens.models.common import lensed_image_scale
from sourcelens.models.lenssr import (
    LensSRNoSource,
    lenssr_super_resolve,
    sersic_relensed,
)
from sourcelens.models.pisr import PISR, pisr_super_resolve
from sourcelens.models.sisr import (
    SISR,
    bicubic_super_resolve,
    super_resolve,
    upsample_bicubic,
)
from sourcelens.names import LENS_PARAMETERS

METHODS = ("bicubic", "supervised", "lenssr_with_source", "lenssr_no_source", "lenssr_no_source + source", "pisr")
TRAINED = ("supervised", "lenssr_with_source", "lenssr_no_source", "pisr")
CPU = torch.device("cpu")


# --------------------------------------------------------------------------------------------- inputs
def simulate(n: int, geometry: SRGeometry, seed: int) -> dict[str, np.ndarray]:
    """``n`` SIE + Sérsic pairs (module docstring): low_res, noise_sigma (n, L, L), high_res (n, fL, fL),
    lens_params (n, 8)."""
    rng = np.random.default_rng(seed)
    g = geometry
    sim = LensingSimulator(g.high_res_num_pix, g.high_res_pixel_scale, supersample=2)
    params = np.zeros((n, len(LENS_PARAMETERS)))
    params[:, 0] = rng.uniform(1.0, 1.4, n)
    params[:, 1] = 2.0
    params[:, 2:4] = rng.uniform(-0.1, 0.1, (n, 2))
    kw_lens = {"theta_E": torch.as_tensor(params[:, 0]), "e1": torch.as_tensor(params[:, 2]),
               "e2": torch.as_tensor(params[:, 3]), "center_x": torch.zeros(n), "center_y": torch.zeros(n)}
    kw_src = {"amp": torch.full((n,), 20.0), "R_sersic": torch.full((n,), 0.25), "n_sersic": torch.ones(n),
              "e1": torch.full((n,), -0.1), "e2": torch.full((n,), 0.1),
              "center_x": torch.as_tensor(rng.uniform(-0.35, 0.35, n)),
              "center_y": torch.as_tensor(rng.uniform(-0.35, 0.35, n))}
    with torch.no_grad():
        hr = sim.image(["SIE"], [kw_lens], ["SERSIC_ELLIPSE"], [kw_src]).numpy()
    f, m = g.factor, g.low_res_num_pix
    lr = hr.reshape(n, m, f, m, f).sum((2, 4))
    sigma = np.broadcast_to(0.01 * lr.max((1, 2), keepdims=True), lr.shape)
    return {"low_res": (lr + rng.normal(size=lr.shape) * sigma).astype(np.float32),
            "noise_sigma": np.ascontiguousarray(sigma, dtype=np.float32), "high_res": hr.astype(np.float32),
            "lens_params": params}


def build_models(factor: int, width: int, depth: int) -> dict[str, torch.nn.Module]:
    """Untrained networks (seed 0) of each trained method, SISR of ``width`` and ``depth``."""
    torch.manual_seed(0)
    sisr = {"width": width, "depth": depth}
    return {"supervised": SISR(factor, **sisr).eval(), "lenssr_with_source": SISR(factor, **sisr).eval(),
            "lenssr_no_source": LensSRNoSource(factor, sisr).eval(), "pisr": PISR(factor, sisr=sisr).eval()}


def run_method(method: str, models: dict, images: np.ndarray, lenses: list[SRLens], batch: int):
    """The public call of ``method`` on ``images`` (one lens per image where it needs one)."""
    if method == "bicubic":
        return bicubic_super_resolve(images, models["factor"])
    if method in ("supervised", "lenssr_with_source"):
        return super_resolve(models[method], images, batch_size=batch, device=CPU)
    if method == "lenssr_no_source":
        return lenssr_super_resolve(models[method], images, batch_size=batch)
    if method == "lenssr_no_source + source":
        return lenssr_super_resolve(models["lenssr_no_source"], images, lenses, batch_size=batch)
    return pisr_super_resolve(models["pisr"], lenses, images, batch_size=batch)


def timed(fn, repeat: int) -> float:
    """Median seconds of ``repeat`` calls of ``fn`` after one warm-up call."""
    fn()
    times = []
    for _ in range(max(1, repeat)):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


# --------------------------------------------------------------------------------------------- 1. throughput
def throughput(models: dict, images: np.ndarray, lens: SRLens, batches: list[int], threads: list[int],
               repeat: int, min_images: int) -> list[dict]:
    rows = []
    for t in threads:
        torch.set_num_threads(t)
        for method in METHODS:
            for b in batches:
                n = max(b, min_images // b * b)
                x = tiled(images, n)
                sec = timed(lambda m=method, x=x, n=n, b=b: run_method(m, models, x, [lens] * n, b), repeat) / n
                rows.append({"method": method, "threads": t, "batch": b, "images": n, "sec": sec})
                print(f"# {method} threads {t} batch {b}: {1 / sec:.1f} images/s", flush=True)
    torch.set_num_threads(max(threads))
    return rows


# --------------------------------------------------------------------------------------------- 2. training
def training(models: dict, data: dict, geometry: SRGeometry, n_train: int, epochs: int, sersic_iter: int
             ) -> tuple[list, dict]:
    """Seconds per epoch of each method's main loss, and the one-off set-up seconds (module docstring)."""
    from sourcelens.train.sr import LensSRModule, PISRModule, SISRModule

    f = geometry.factor
    scale = lensed_image_scale(data["low_res"])[:, None, None]
    x = torch.from_numpy(data["low_res"] / scale)
    sigma = torch.from_numpy(np.sqrt((data["noise_sigma"] / scale) ** 2 + 1e-6).astype(np.float32))
    hr = torch.from_numpy(data["high_res"] * f**2 / scale)
    setup = {}
    t0 = time.perf_counter()
    cache = SRLensCache(geometry)
    lenses = cache.for_rows("SIE", data["lens_params"])
    with torch.no_grad():
        src = torch.stack([lens.to_source(img) for lens, img in zip(lenses, x)])
        weight = torch.stack([lens.weight() for lens in lenses])
    setup["operators"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(None):
        relensed, _ = sersic_relensed(geometry, None, "SIE", data["lens_params"], data["low_res"],
                                      data["noise_sigma"], (src * torch.from_numpy(scale)).numpy(),
                                      max_iter=sersic_iter)
    setup["sersic"] = time.perf_counter() - t0
    sersic_target = torch.from_numpy((relensed * f**2 / scale).astype(np.float32))
    index = torch.arange(len(x))

    modules = {
        "supervised": (SISRModule(models["supervised"], "mse"), (x[:, None], hr[:, None])),
        "lenssr_with_source": (SISRModule(models["lenssr_with_source"], "mse"), (x[:, None], sersic_target[:, None])),
        "lenssr_no_source": (LensSRModule(models["lenssr_no_source"], lenses, "lens"), (x, sigma, src, index)),
        "pisr": (PISRModule(models["pisr"], lenses, "chi2", tv_weight=0.01), (x, sigma, src, weight, index)),
    }
    n_val, batch = max(1, n_train // 4), 16
    rows = []
    for method, (module, arrays) in modules.items():
        module.train()
        opt = torch.optim.Adam(module.parameters(), 1e-4)

        def step(i0, i1, arrays=arrays, module=module, opt=opt, method=method):
            batch_ = tuple(a[i0:i1] for a in arrays)
            if method in ("supervised", "lenssr_with_source"):
                loss = module.compute_loss(*batch_)["loss"]
            else:
                loss = module.compute_loss(batch_)["loss"]
            opt.zero_grad()
            loss.backward()
            opt.step()

        def validate(arrays=arrays, module=module, method=method):
            with torch.no_grad():
                for i in range(n_train, n_train + n_val, batch):
                    b = tuple(a[i:min(i + batch, n_train + n_val)] for a in arrays)
                    module.compute_loss(*b) if method in ("supervised", "lenssr_with_source") else module.compute_loss(b)

        step(0, min(batch, n_train))   # warm-up
        times = []
        for _ in range(max(1, epochs)):
            t0 = time.perf_counter()
            for i in range(0, n_train, batch):
                step(i, min(i + batch, n_train))
            validate()
            times.append(time.perf_counter() - t0)
        module.eval()
        sec = float(np.median(times))
        rows.append({"method": method, "sec": sec, "per_image_ms": 1e3 * sec / (n_train + n_val)})
        print(f"# training {method}: {sec:.2f} s per epoch", flush=True)
    return rows, setup


# --------------------------------------------------------------------------------------------- 3. operators
def tensor_bytes(obj) -> int:
    """Bytes of the tensors (dense or sparse CSR/COO) held in ``obj``'s attributes, recursively one level into
    objects."""
    total = 0
    for value in vars(obj).values():
        if isinstance(value, torch.Tensor):
            if value.layout == torch.sparse_csr:
                parts = (value.crow_indices(), value.col_indices(), value.values())
            elif value.layout == torch.sparse_coo:
                parts = (value._indices(), value._values())
            else:
                parts = (value,)
            total += sum(p.numel() * p.element_size() for p in parts)
        elif hasattr(value, "__dict__") and not isinstance(value, type):
            total += tensor_bytes(value)
    return total


def operators(geometry: SRGeometry, data: dict, models: dict, n_lenses: int, repeat: int) -> dict:
    rows = data["lens_params"][:n_lenses]
    builds, lenses = [], []
    for p in rows:
        kw = {"theta_E": p[0], "e1": p[2], "e2": p[3], "center_x": 0.0, "center_y": 0.0}
        t0 = time.perf_counter()
        lenses.append(SRLens(geometry, ["SIE"], [kw]))
        builds.append(time.perf_counter() - t0)
    cache = SRLensCache(geometry)
    kw = [{"theta_E": float(rows[0][0]), "e1": float(rows[0][2]), "e2": float(rows[0][3]), "center_x": 0.0,
           "center_y": 0.0}]
    cache.get(["SIE"], kw)
    hit = timed(lambda: cache.get(["SIE"], kw), 50 * repeat)
    x = data["low_res"][:1]
    fixed = timed(lambda: pisr_super_resolve(models["pisr"], lenses[:1], x), repeat)
    one = torch.from_numpy(x[0])
    applied = timed(lambda: lenses[0](upsample_bicubic(lenses[0].to_source(one), geometry.factor)), repeat)
    build = float(np.median(builds))
    return {"build": build, "builds": builds, "bytes": tensor_bytes(lenses[0]), "hit": hit, "fixed": fixed,
            "applied": applied, "different": build + fixed}


# --------------------------------------------------------------------------------------------- 4. memory
def memory_child(spec: dict) -> None:
    """Calls in a fresh process, each (method, batch) of ``spec['runs']`` in turn: print a JSON list of the
    baseline and peak resident set sizes (MiB) of each, the peak reset before each call."""
    torch.set_num_threads(spec["threads"])
    g = SRGeometry(spec["num_pix"], spec["pixel_scale"], spec["factor"])
    models = build_models(spec["factor"], spec["width"], spec["depth"]) | {"factor": spec["factor"]}
    all_images = np.load(spec["images"])
    p = spec["lens"]
    lens = SRLens(g, ["SIE"], [{"theta_E": p[0], "e1": p[2], "e2": p[3], "center_x": 0.0, "center_y": 0.0}])
    out = []
    for method, batch in spec["runs"]:
        images = tiled(all_images, batch)
        out.append(peak_rss_mib(lambda images=images: run_method(method, models, images, [lens] * len(images), batch)))
        del images
    print(json.dumps(out))


def memory(args, data: dict, batches: list[int], threads: int) -> list[dict]:
    rows = []
    models = build_models(args.factor, args.width, args.depth)
    with tempfile.TemporaryDirectory() as tmp:
        npy = Path(tmp) / "images.npy"
        np.save(npy, data["low_res"][: max(batches)])
        for method in METHODS:
            key = "lenssr_no_source" if method.startswith("lenssr_no_source") else method
            n_par, nbytes = weights(models[key]) if key in models else (0, 0)
            for b in batches:
                rows.append({"method": method, "batch": b, "params": n_par, "bytes": nbytes})
        spec = {"threads": threads, "images": str(npy), "num_pix": args.num_pix, "pixel_scale": args.pixel_scale,
                "factor": args.factor, "width": args.width, "depth": args.depth,
                "lens": [float(v) for v in data["lens_params"][0]]}
        groups = [rows] if args.quick else [[r] for r in rows]   # --quick: one process for every row
        for group in groups:
            spec["runs"] = [[r["method"], r["batch"]] for r in group]
            out = subprocess.run([sys.executable, __file__, "--memory-child", json.dumps(spec)],
                                 capture_output=True, text=True, check=True).stdout
            for r, m in zip(group, json.loads(out.strip().splitlines()[-1])):
                r.update(increase_mib=m["peak_mib"] - m["base_mib"], peak_mib=m["peak_mib"])
    return rows


# --------------------------------------------------------------------------------------------- main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--num-pix", type=int, default=None, help="low-resolution pixels per side (75; --quick 24)")
    ap.add_argument("--pixel-scale", type=float, default=None, help="low-resolution arcsec per pixel (0.05; --quick "
                                                                      "0.15)")
    ap.add_argument("--factor", type=int, default=2)
    ap.add_argument("--width", type=int, default=None, help="SISR width (32; --quick 8)")
    ap.add_argument("--depth", type=int, default=None, help="SISR residual blocks (4; --quick 1)")
    ap.add_argument("--batches", type=int, nargs="+", default=None, help="batch sizes (1 64; --quick 1 8)")
    ap.add_argument("--threads", type=int, nargs="+", default=None, help="torch thread counts (1 and all CPUs)")
    ap.add_argument("--repeat", type=int, default=None, help="timed runs per row, median printed (3; --quick 1)")
    ap.add_argument("--min-images", type=int, default=None, help="images per timed run at least (8; --quick 2)")
    ap.add_argument("--n-train", type=int, default=None, help="training images per epoch (32; --quick 4)")
    ap.add_argument("--epochs", type=int, default=None, help="timed epochs per method (1)")
    ap.add_argument("--lenses", type=int, default=None, help="operators built for table 3 (3; --quick 1)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-memory", action="store_true", help="skip the memory table")
    ap.add_argument("--quick", action="store_true", help="tiny grid and networks (for testing)")
    ap.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.memory_child:
        memory_child(json.loads(args.memory_child))
        return
    q = args.quick
    args.num_pix = args.num_pix or (24 if q else 75)
    args.pixel_scale = args.pixel_scale or (0.15 if q else 0.05)
    args.width = args.width or (8 if q else 32)
    args.depth = args.depth if args.depth is not None else (1 if q else 4)
    batches = sorted(set(args.batches or ([1, 8] if q else [1, 64])))
    repeat = args.repeat or (1 if q else 3)
    min_images = args.min_images or (2 if q else 8)
    n_train = args.n_train or (4 if q else 32)
    epochs = args.epochs or 1
    n_lenses = args.lenses or (1 if q else 3)
    all_threads = os.cpu_count() or 1
    threads = sorted(set(args.threads or [1, all_threads]))
    logging.getLogger("sourcelens").setLevel(logging.WARNING)

    geometry = SRGeometry(args.num_pix, args.pixel_scale, args.factor)
    n_images = max(max(batches), n_train + max(1, n_train // 4), n_lenses)
    t0 = time.perf_counter()
    data = simulate(n_images, geometry, args.seed)
    models = build_models(args.factor, args.width, args.depth)
    print(f"# images: {n_images} synthetic SIE + Sérsic pairs, {args.num_pix}² pixels of {args.pixel_scale}\" → "
          f"{geometry.high_res_num_pix}² of {geometry.high_res_pixel_scale:g}\", no PSF "
          f"({time.perf_counter() - t0:.1f} s)")
    print(f"# networks: untrained (seed 0), SISR width {args.width}, depth {args.depth}, bicubic skip; "
          f"LensSR no-source: two SISRs; PISR: f an SISR")
    print(f"# torch {torch.__version__}, {all_threads} CPUs; load average {os.getloadavg()[0]:.2f}", flush=True)

    lens = SRLens(geometry, ["SIE"], [{"theta_E": float(data["lens_params"][0, 0]), "e1": float(data["lens_params"][0, 2]),
                                       "e2": float(data["lens_params"][0, 3]), "center_x": 0.0, "center_y": 0.0}])
    rows = throughput(models | {"factor": args.factor}, data["low_res"], lens, batches, threads, repeat, min_images)
    train_rows, setup = training(build_models(args.factor, args.width, args.depth), data, geometry, n_train, epochs,
                                 20 if q else 100)
    ops = operators(geometry, data, models, n_lenses, repeat)
    mem = [] if args.no_memory else memory(args, data, batches, max(threads))

    print(f"\n### Throughput (images/s; median of {repeat} timed runs, warm-up excluded; public calls end to end, "
          "lens operators built beforehand)\n")
    head = [(t, b) for t in threads for b in batches]
    print("| method | " + " | ".join(f"batch {b}, {t} thread{'s' if t != 1 else ''}" for t, b in head) + " |")
    print("|---|" + "---:|" * len(head))
    for method in METHODS:
        cells = [next(r for r in rows if r["method"] == method and r["threads"] == t and r["batch"] == b)
                 for t, b in head]
        print(f"| {method} | " + " | ".join(f"{1 / c['sec']:.1f}" for c in cells) + " |")

    print(f"\n### Training ({n_train} training + {max(1, n_train // 4)} validation images, batch 16, "
          f"{max(threads)} threads; median of {epochs} epoch(s); forward, backward, Adam step and validation, "
          "Lightning's bookkeeping excluded)\n")
    print("| method | loss | s per epoch | ms per image | one-off set-up (s) |")
    print("|---|---|---:|---:|---:|")
    losses = {"supervised": "MSE vs truth", "lenssr_with_source": "MSE vs re-lensed Sérsic",
              "lenssr_no_source": "lens equation + intensity", "pisr": "χ² + 0.01 TV"}
    setups = {"supervised": "—", "lenssr_with_source": f"{setup['sersic']:.1f} (Sérsic fits, {20 if q else 100} iterations)",
              "lenssr_no_source": f"{setup['operators']:.1f} (operators, i∘β)",
              "pisr": f"{setup['operators']:.1f} (operators, i∘β)"}
    for r in train_rows:
        print(f"| {r['method']} | {losses[r['method']]} | {r['sec']:.2f} | {r['per_image_ms']:.1f} | "
              f"{setups[r['method']]} |")

    print(f"\n### Lens operators (SRLens, exact overlap, {args.num_pix}² → {geometry.high_res_num_pix}², SIE; "
          f"{max(threads)} threads)\n")
    print("| what | value |")
    print("|---|---:|")
    print(f"| build one SRLens (both operators; median of {len(ops['builds'])}) | {ops['build']:.2f} s |")
    print(f"| its tensors | {ops['bytes'] / 2**20:.2f} MiB |")
    print(f"| SRLensCache.get of a lens already built | {1e6 * ops['hit']:.0f} µs |")
    print(f"| i∘β, bicubic ×f, P∗(ŝ∘θ) and D applied to one image | {1e3 * ops['applied']:.2f} ms |")
    print(f"| PISR per image, one fixed lens (operators built once) | {1e3 * ops['fixed']:.1f} ms |")
    print(f"| PISR per image, a different lens per image (built each time) | {1e3 * ops['different']:.0f} ms |")
    print(f"\nA different lens per image costs {ops['different'] / ops['fixed']:.1f}× a fixed one (the build, "
          f"{ops['build']:.2f} s, against {1e3 * ops['fixed']:.1f} ms of inference). SRLensCache builds each distinct "
          "lens once, so repeated lenses (training epochs, several images of one lens) pay it once.")

    if mem:
        print("\n### Memory (peak resident set size (VmHWM) of a fresh process over one batch's call, above its "
              f"baseline with the model, one lens's operators and the batch loaded; {max(threads)} threads)\n")
        print("| method | batch | parameters | weights (MiB) | peak increase (MiB) | process peak (MiB) |")
        print("|---|---:|---:|---:|---:|---:|")
        for r in mem:
            print(f"| {r['method']} | {r['batch']} | {r['params']:,} | {r['bytes'] / 2**20:.2f} | "
                  f"{r['increase_mib']:.1f} | {r['peak_mib']:.0f} |")
    if q:
        print("\n--quick: tiny grid and networks; the numbers say nothing about the real sizes.")


if __name__ == "__main__":
    main()
