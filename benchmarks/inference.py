"""Speed and memory of study 002's networks (lens-parameter CNN, U-Net delensing) against the lenstronomy fit
they amortise, measured in the same run; prints markdown tables.

    python benchmarks/inference.py [--cnn results/models/cnn.pt] [--unet results/models/unet.pt]
                                   [--pairs results/data/pairs_EPL_test.h5] [--config config/config.yaml]
                                   [--n 256] [--batches 1 256] [--threads 1 N] [--repeat 5]
                                   [--particles 50] [--pso-iterations 200] [--polish L-BFGS-B]
    python benchmarks/inference.py --quick    # tiny sizes, a token lenstronomy fit: well under a minute

Networks: trained ones from --cnn / --unet, else untrained ones with the config's architecture (``cnn`` and
``unet`` of --config, default the schema's defaults; random weights, seed 0) at the images' size — speed and
memory do not depend on the weights, the CNN's errors in the reference table do. Images: the ``lensed`` array
of --pairs, else --n lensed images simulated with ``simulate_pairs`` (EPL + shear, the config's
``simulate.pairs``) from synthetic Sérsic-like stamps; repeated (tiled) up to the largest batch where fewer.

1. Throughput: images/s of ``predict_lens_params`` (CNN) and ``delens`` (U-Net: the mean over the 8 rotations and
   reflections of each image, as the pipeline runs it; "U-Net single pass": one pass), the public calls (image
   normalisation, host-to-device copies and the numpy results included), at each --batches size, with torch
   at 1 thread and at all CPU threads (--threads), and on the GPU when there is one. Each timed run processes
   max(batch, --min-images) images; one warm-up run is excluded and the median of --repeat runs is printed.
2. Memory: the model's parameter count and the bytes of its weights (parameters and buffers); on the CPU the
   peak resident set size (VmHWM of /proc/self/status; ``getrusage``'s ru_maxrss where there is no /proc) of
   a fresh subprocess over the inference of one batch, above its baseline with torch imported and the model
   and the batch already loaded (free heap pages returned to the OS with glibc's ``malloc_trim`` and the peak
   reset with ``/proc/self/clear_refs`` there) — activations, numpy temporaries and torch's CPU allocator
   together; on a GPU ``torch.cuda.max_memory_allocated`` above the weights.
3. The reference: a lenstronomy ``FittingSequence`` fit of the lens model of ONE image (--fit-index): EPL +
   SHEAR lens (shear origin fixed at 0), SERSIC_ELLIPSE source (amplitude solved linearly; the simulated
   source is a pixelated galaxy, so the source model is approximate as in a real analysis), the pairs' PSF,
   supersampling and the image's noise map; PSO (--particles × --pso-iterations) then --polish (scipy
   ``minimize`` with L-BFGS-B — finite-difference gradients — or Nelder-Mead, --polish-iterations) from
   the priors' centres, not the truth. Prints its seconds, its parameters against the truth (and the CNN's on
   the same image), and the ratio of the fit's seconds to the CNN's seconds per image (largest batch, all
   threads, CPU; and at batch 1, 1 thread). The defaults take about 1–3 minutes on one core.

No timing is asserted: the numbers depend on the machine and its load (printed in the header).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import io
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from sourcelens.config import load_config, validate_config
from sourcelens.models import (
    LensCNN,
    UNet,
    delens,
    load_cnn,
    load_unet,
    predict_lens_params,
)
from sourcelens.names import LENS_PARAMETERS
from sourcelens.priors import check_prior

#: Bounds of the lenstronomy fit (generous, as an analysis that does not know the simulation's priors).
LENS_BOUNDS = {"theta_E": (0.3, 3.0), "gamma": (1.5, 2.5), "e1": (-0.5, 0.5), "e2": (-0.5, 0.5),
               "center_x": (-0.5, 0.5), "center_y": (-0.5, 0.5), "gamma1": (-0.3, 0.3), "gamma2": (-0.3, 0.3)}
SOURCE_INIT = {"R_sersic": 0.2, "n_sersic": 1.5, "e1": 0.0, "e2": 0.0, "center_x": 0.0, "center_y": 0.0}
SOURCE_SIGMA = {"R_sersic": 0.1, "n_sersic": 0.5, "e1": 0.15, "e2": 0.15, "center_x": 0.1, "center_y": 0.1}
SOURCE_BOUNDS = {"R_sersic": (0.01, 2.0), "n_sersic": (0.3, 6.0), "e1": (-0.5, 0.5), "e2": (-0.5, 0.5),
                 "center_x": (-0.6, 0.6), "center_y": (-0.6, 0.6)}


# --------------------------------------------------------------------------------------------- inputs
def fake_stamps(m: int, size: int = 64, seed: int = 1) -> tuple[np.ndarray, pd.DataFrame]:
    """Peak-normalised elliptical Sérsic-like stamps with a clump (as tests/test_simulate.py's)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    out = []
    for _ in range(m):
        q, phi, r0, n = rng.uniform(0.4, 1), rng.uniform(0, np.pi), rng.uniform(4, 10), rng.uniform(0.7, 2.5)
        x = xx * np.cos(phi) + yy * np.sin(phi)
        y = -xx * np.sin(phi) + yy * np.cos(phi)
        r = np.hypot(x * np.sqrt(q), y / np.sqrt(q))
        img = np.exp(-2.0 * ((r / r0) ** (1 / n) - 1))
        cx, cy = rng.uniform(-10, 10, 2)
        img += 0.3 * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 8)
        out.append(img / img.max())
    meta = pd.DataFrame({"source_id": [f"fake-{i}" for i in range(m)], "kind": ["parametric"] * m,
                         "pixel_scale_arcsec": 0.03 + 0.01 * (np.arange(m) % 3)})
    return np.asarray(out, dtype=np.float32), meta


def load_images(args, pairs_cfg: dict) -> tuple[dict, dict, str]:
    """(arrays lensed, noise_sigma, lens_params; the imaging set-up; a description)."""
    if args.pairs:
        from sourcelens.io import read_attrs, read_dataset

        arrays, _ = read_dataset(args.pairs, names=("lensed", "noise_sigma", "lens_params"))
        attrs = read_attrs(args.pairs)
        setup = {"num_pix": int(attrs.get("num_pix", arrays["lensed"].shape[1])),
                 "pixel_scale_arcsec": float(attrs.get("pixel_scale_arcsec", pairs_cfg["pixel_scale_arcsec"])),
                 "supersampling": int(attrs.get("supersampling", pairs_cfg.get("supersampling", 1))),
                 "psf": attrs.get("psf") or pairs_cfg.get("psf", {})}
        return arrays, setup, f"{len(arrays['lensed'])} images of {args.pairs} ({attrs.get('lens_model', '?')})"
    from sourcelens.simulate import simulate_pairs

    stamps, meta = fake_stamps(16)
    t0 = time.perf_counter()
    out, _ = simulate_pairs(stamps, meta, args.n, "EPL", pairs_cfg, np.random.default_rng(args.seed), progress=False)
    setup = {k: pairs_cfg[k] for k in ("num_pix", "pixel_scale_arcsec", "supersampling")}
    setup["psf"] = pairs_cfg.get("psf", {})
    return out, setup, (f"{args.n} EPL + shear images simulated with simulate_pairs from 16 synthetic Sérsic-like "
                        f"stamps ({time.perf_counter() - t0:.1f} s)")


def build_models(args, cfg: dict, size: int) -> tuple[dict, str]:
    """{'CNN': model, 'U-Net': model, 'U-Net single pass': the same model} and a description."""
    torch.manual_seed(0)
    c, u = cfg["cnn"], cfg["unet"]
    cnn = load_cnn(args.cnn) if args.cnn else LensCNN(size, c["arch"], c["widths"], c["dense"]).eval()
    unet = load_unet(args.unet) if args.unet else UNet(size, u["widths"]).eval()
    for name, model in (("CNN", cnn), ("U-Net", unet)):
        if model.hparams["image_size"] != size:
            raise SystemExit(f"the {name} takes {model.hparams['image_size']}² images, the images are {size}²")
    desc = (f"CNN {'trained, ' + args.cnn if args.cnn else 'untrained (random weights)'} {cnn.hparams}; "
            f"U-Net {'trained, ' + args.unet if args.unet else 'untrained (random weights)'} {unet.hparams}")
    return {"CNN": cnn, "U-Net": unet, SINGLE_PASS: unet}, desc


SINGLE_PASS = "U-Net single pass"


def run_model(name: str, model, images: np.ndarray, batch: int, device: torch.device):
    if name == "CNN":
        return predict_lens_params(model, images, batch_size=batch, device=device)
    # "U-Net": delens as the pipeline and the CLI run it (the mean over the 8 rotations and reflections of each
    # image); "U-Net single pass": one pass (`sourcelens delens --single-pass`)
    return delens(model, images, batch_size=batch, device=device, dihedral=name != SINGLE_PASS)


def tiled(images: np.ndarray, n: int) -> np.ndarray:
    return np.tile(images, (-(-n // len(images)), 1, 1))[:n]


# --------------------------------------------------------------------------------------------- throughput
def throughput(models: dict, images: np.ndarray, batches: list[int], repeat: int, min_images: int,
               devices: list[torch.device], thread_counts: list[int]) -> list[dict]:
    rows = []
    all_threads = os.cpu_count() or 1
    for device in devices:
        settings = thread_counts if device.type == "cpu" else [all_threads]
        for threads in settings:
            torch.set_num_threads(threads)
            for name, model in models.items():
                for b in batches:
                    n = max(b, min_images // b * b)
                    x = tiled(images, n)
                    run_model(name, model, x, b, device)   # warm-up
                    times = []
                    for _ in range(max(1, repeat)):
                        t0 = time.perf_counter()
                        run_model(name, model, x, b, device)
                        if device.type == "cuda":
                            torch.cuda.synchronize()
                        times.append(time.perf_counter() - t0)
                    sec = float(np.median(times)) / n
                    rows.append({"model": name, "device": device.type, "threads": threads if device.type == "cpu"
                                 else None, "batch": b, "images": n, "sec": sec})
                    print(f"# {name} {device.type} threads {threads} batch {b}: {1 / sec:.1f} images/s", flush=True)
            models = {k: m.cpu() for k, m in models.items()}
    torch.set_num_threads(all_threads)
    return rows


# --------------------------------------------------------------------------------------------- memory
def weights(model: torch.nn.Module) -> tuple[int, int]:
    """(parameter count, bytes of the parameters and buffers)."""
    n = sum(p.numel() for p in model.parameters())
    nbytes = sum(t.numel() * t.element_size() for t in list(model.parameters()) + list(model.buffers()))
    return n, nbytes


def peak_rss_mib(call) -> dict[str, float]:
    """Baseline and peak resident set size (MiB) of this process over ``call()``: the heap trimmed and VmHWM
    reset to VmRSS first (/proc/self/clear_refs); NaN where /proc gives neither (not Linux)."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):   # free heap pages back to the OS (glibc)
        ctypes.CDLL(None).malloc_trim(0)
    try:
        Path("/proc/self/clear_refs").write_text("5")   # VmHWM := VmRSS
        before = _status_kib()
    except OSError:
        before = {}
    if "VmRSS" not in before:
        return {"base_mib": float("nan"), "peak_mib": float("nan")}
    call()
    after = _status_kib()
    return {"base_mib": before["VmRSS"] / 1024, "peak_mib": max(after["VmHWM"], after["VmRSS"]) / 1024}


def _status_kib() -> dict[str, int]:
    """VmRSS and VmHWM (peak) of this process in KiB, from /proc/self/status (Linux); {} elsewhere."""
    try:
        with open("/proc/self/status") as fh:
            return {k: int(v.split()[0]) for k, v in (line.split(":", 1) for line in fh) if k in ("VmRSS", "VmHWM")}
    except OSError:
        return {}


def memory_child(spec: dict) -> None:
    """One inference in a fresh process: print JSON with the baseline and peak resident set sizes (MiB).

    The peak is /proc/self/status's VmHWM, reset to the current resident set size with /proc/self/clear_refs
    before the inference (the imports peaked higher). ``getrusage``'s ru_maxrss cannot be used as is: it also
    keeps the peak of the process the child was forked from (the parent's), which no reset clears."""
    torch.set_num_threads(spec["threads"])
    kind = spec["model"]
    if spec["path"]:
        model = load_cnn(spec["path"]) if kind == "CNN" else load_unet(spec["path"])
    else:
        torch.manual_seed(0)
        model = (LensCNN if kind == "CNN" else UNet)(**spec["hparams"]).eval()
    x = tiled(np.load(spec["images"]), spec["batch"])
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):   # free heap pages back to the OS (glibc), so that the
        ctypes.CDLL(None).malloc_trim(0)                  # inference's allocations show in the resident set
    try:
        Path("/proc/self/clear_refs").write_text("5")
        before = _status_kib()
    except OSError:
        before = {}
    if "VmRSS" in before:
        base = before["VmRSS"]
        run_model(kind, model, x, spec["batch"], torch.device("cpu"))
        after = _status_kib()
        peak = max(after["VmHWM"], after["VmRSS"])
        how = "VmHWM"
    else:   # no /proc: ru_maxrss, a lower bound of the increase (its peak includes the imports')
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        run_model(kind, model, x, spec["batch"], torch.device("cpu"))
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        how = "ru_maxrss"
    print(json.dumps({"base_mib": base / 1024, "peak_mib": peak / 1024, "how": how}))


def memory(models: dict, paths: dict, images: np.ndarray, batches: list[int], devices: list[torch.device],
           threads: int) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        npy = Path(tmp) / "images.npy"
        np.save(npy, images[: max(batches)])
        for name, model in models.items():
            n_par, nbytes = weights(model)
            for b in batches:
                spec = {"model": name, "path": paths[name], "hparams": model.hparams, "images": str(npy), "batch": b,
                        "threads": threads}
                out = subprocess.run([sys.executable, __file__, "--memory-child", json.dumps(spec)],
                                     capture_output=True, text=True, check=True).stdout
                r = json.loads(out.strip().splitlines()[-1])
                rows.append({"model": name, "device": "cpu", "batch": b, "params": n_par, "bytes": nbytes,
                             "increase_mib": r["peak_mib"] - r["base_mib"], "peak_mib": r["peak_mib"],
                             "note": "" if r["how"] == "VmHWM" else " (ru_maxrss: a lower bound)"})
    for device in devices:
        if device.type != "cuda":
            continue
        for name, model in models.items():
            n_par, nbytes = weights(model)
            model.to(device)
            for b in batches:
                x = tiled(images, b)
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats(device)
                base = torch.cuda.memory_allocated(device)
                run_model(name, model, x, b, device)
                torch.cuda.synchronize()
                peak = torch.cuda.max_memory_allocated(device)
                rows.append({"model": name, "device": "cuda", "batch": b, "params": n_par, "bytes": nbytes,
                             "increase_mib": (peak - base) / 2**20, "peak_mib": peak / 2**20, "note": ""})
            model.cpu()
    return rows


# --------------------------------------------------------------------------------------------- lenstronomy
def prior_centre_sigma(spec) -> tuple[float, float]:
    p = check_prior(spec)
    if p["kind"] == "fixed":
        return p["value"], 0.0
    if p["kind"] == "uniform":
        return 0.5 * (p["low"] + p["high"]), 0.5 * (p["high"] - p["low"])
    return p["mean"], p["sigma"]


def psf_kwargs(psf_cfg: dict, pixel_scale: float) -> dict:
    from sourcelens.simulate import make_psf

    kind = str(psf_cfg.get("type", "GAUSSIAN")).upper()
    if kind == "NONE":
        return {"psf_type": "NONE"}
    if kind == "GAUSSIAN":
        return {"psf_type": "GAUSSIAN", "fwhm": float(psf_cfg.get("fwhm_arcsec", 0.1)), "pixel_size": pixel_scale,
                "truncation": 5}
    return {"psf_type": "PIXEL", "kernel_point_source": make_psf(psf_cfg, pixel_scale).kernel_point_source}


def lenstronomy_fit(image: np.ndarray, sigma: np.ndarray, setup: dict, priors: dict, particles: int,
                    pso_iterations: int, polish: str, polish_iterations: int) -> dict:
    """Fit EPL + SHEAR and a SERSIC_ELLIPSE source to one image; seconds, fitted lens parameters, χ²/ν."""
    from lenstronomy.Workflow.fitting_sequence import FittingSequence

    t0 = time.perf_counter()
    n, s = image.shape[0], float(setup["pixel_scale_arcsec"])
    origin = -(n - 1) / 2.0 * s
    kwargs_data = {"image_data": np.asarray(image, float), "noise_map": np.asarray(sigma, float),
                   "transform_pix2angle": np.eye(2) * s, "ra_at_xy_0": origin, "dec_at_xy_0": origin}
    kwargs_numerics = {"supersampling_factor": int(setup["supersampling"]), "supersampling_convolution": False}
    data_joint = {"multi_band_list": [[kwargs_data, psf_kwargs(setup["psf"], s), kwargs_numerics]],
                  "multi_band_type": "single-band"}
    model = {"lens_model_list": ["EPL", "SHEAR"], "source_light_model_list": ["SERSIC_ELLIPSE"]}
    init, width = {}, {}
    for name in LENS_PARAMETERS:
        centre, spread = prior_centre_sigma(priors.get(name, 0.0))
        lo, hi = LENS_BOUNDS[name]
        init[name], width[name] = float(np.clip(centre, lo, hi)), max(spread, 0.05 * (hi - lo))
    main = ("theta_E", "gamma", "e1", "e2", "center_x", "center_y")
    shear = ("gamma1", "gamma2")

    def split(d):
        return [{k: d[k] for k in main}, {k: d[k] for k in shear}]

    lens_params = [split(init), split(width), [{}, {"ra_0": 0.0, "dec_0": 0.0}],
                   split({k: v[0] for k, v in LENS_BOUNDS.items()}), split({k: v[1] for k, v in LENS_BOUNDS.items()})]
    source_params = [[dict(SOURCE_INIT)], [dict(SOURCE_SIGMA)], [{}], [{k: v[0] for k, v in SOURCE_BOUNDS.items()}],
                     [{k: v[1] for k, v in SOURCE_BOUNDS.items()}]]
    fitting = FittingSequence(data_joint, model, {}, {"check_bounds": True},
                              {"lens_model": lens_params, "source_model": source_params})
    steps = [["PSO", {"sigma_scale": 1.0, "n_particles": particles, "n_iterations": pso_iterations}]]
    if polish != "none":
        steps.append(["SIMPLEX", {"n_iterations": polish_iterations, "method": polish}])
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        fitting.fit_sequence(steps)
        best = fitting.best_fit()
        log_l = fitting.best_fit_likelihood()
    seconds = time.perf_counter() - t0
    kw = best["kwargs_lens"]
    fitted = {k: float(kw[0][k]) for k in main} | {k: float(kw[1][k]) for k in shear}
    return {"seconds": seconds, "params": fitted, "chi2_nu": -2.0 * float(log_l) / image.size}


# --------------------------------------------------------------------------------------------- main
def _threads(n: int) -> str:
    return f"{n} thread{'s' if n != 1 else ''}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cnn", default=None, help="trained CNN file (default: untrained, the config's architecture)")
    ap.add_argument("--unet", default=None, help="trained U-Net file (default: untrained)")
    ap.add_argument("--pairs", default=None, help="pairs file whose 'lensed' images to use (default: simulate)")
    ap.add_argument("--config", default=None, help="config file (default: the schema's defaults)")
    ap.add_argument("--n", type=int, default=None, help="images to simulate without --pairs (256; --quick 16)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batches", type=int, nargs="+", default=None, help="batch sizes (1 256; --quick 1 32)")
    ap.add_argument("--threads", type=int, nargs="+", default=None,
                    help="torch CPU thread counts (default: 1 and all CPUs)")
    ap.add_argument("--repeat", type=int, default=None, help="timed runs per row, median printed (5; --quick 2)")
    ap.add_argument("--min-images", type=int, default=None,
                    help="images per timed run at least (32, i.e. 32 calls at batch 1; --quick 8)")
    ap.add_argument("--particles", type=int, default=None, help="PSO particles (50; --quick 8)")
    ap.add_argument("--pso-iterations", type=int, default=None, help="PSO iterations (200; --quick 5)")
    ap.add_argument("--polish", choices=("L-BFGS-B", "Nelder-Mead", "none"), default="L-BFGS-B")
    ap.add_argument("--polish-iterations", type=int, default=None, help="after the PSO (100; --quick 5)")
    ap.add_argument("--fit-index", type=int, default=0, help="the image fitted with lenstronomy")
    ap.add_argument("--no-memory", action="store_true", help="skip the memory table")
    ap.add_argument("--cpu-only", action="store_true", help="skip the GPU rows where a GPU is present")
    ap.add_argument("--quick", action="store_true", help="tiny sizes and a token lenstronomy fit (for testing)")
    ap.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.memory_child:
        memory_child(json.loads(args.memory_child))
        return
    q = args.quick
    args.n = args.n or (16 if q else 256)
    batches = sorted(set(args.batches or ([1, 32] if q else [1, 256])))
    repeat = args.repeat or (2 if q else 5)
    min_images = args.min_images or (8 if q else 32)
    particles = args.particles or (8 if q else 50)
    pso_iterations = args.pso_iterations or (5 if q else 200)
    polish_iterations = args.polish_iterations or (5 if q else 100)

    cfg = load_config(args.config) if args.config else validate_config({})
    pairs_cfg = cfg["simulate"]["pairs"]
    arrays, setup, image_desc = load_images(args, pairs_cfg)
    images = np.asarray(arrays["lensed"], dtype=np.float32)
    models, model_desc = build_models(args, cfg, images.shape[1])
    devices = [torch.device("cpu")]
    if torch.cuda.is_available() and not args.cpu_only:
        devices.append(torch.device("cuda"))
    all_threads = os.cpu_count() or 1
    gpu = f", GPU {torch.cuda.get_device_name(0)}" if len(devices) > 1 else ", no GPU"
    print(f"# networks: {model_desc}")
    print(f"# images: {image_desc}; {images.shape[1]}² pixels of {setup['pixel_scale_arcsec']}\"")
    print(f"# torch {torch.__version__}, {all_threads} CPUs{gpu}; load average {os.getloadavg()[0]:.2f}", flush=True)

    thread_counts = sorted(set(args.threads or [1, all_threads]))
    rows = throughput(models, images, batches, repeat, min_images, devices, thread_counts)
    model_files = {"CNN": args.cnn, "U-Net": args.unet, SINGLE_PASS: args.unet}
    mem = [] if args.no_memory else memory(models, model_files, images, batches, devices, max(thread_counts))

    i = args.fit_index
    truth = dict(zip(LENS_PARAMETERS, np.asarray(arrays["lens_params"][i], float)))
    print(f"# lenstronomy fit of image {i}: PSO {particles} particles × {pso_iterations} iterations, then "
          f"{args.polish} ({polish_iterations} iterations)…", flush=True)
    fit = lenstronomy_fit(images[i], arrays["noise_sigma"][i], setup, pairs_cfg["priors"], particles,
                          pso_iterations, args.polish, polish_iterations)
    cnn_mean, cnn_sigma = predict_lens_params(models["CNN"], images[i:i + 1], device=torch.device("cpu"))

    print(f"\n### Throughput (median of {repeat} timed runs, warm-up excluded; public calls end to end)\n")
    print("| model | device | threads | batch | images per run | images/s | ms/image |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['model']} | {r['device']} | {r['threads'] or '—'} | {r['batch']} | {r['images']} | "
              f"{1 / r['sec']:.1f} | {1e3 * r['sec']:.3f} |")
    if mem:
        print("\n### Memory (CPU: peak resident set size (VmHWM) of a fresh process over one batch's inference, "
              "above its baseline with torch imported and the model and batch loaded (free heap returned by "
              f"malloc_trim, peak reset with /proc/self/clear_refs), {_threads(max(thread_counts))}; GPU: "
              "torch.cuda.max_memory_allocated above the weights; process peak: the resident set size at that "
              "peak)\n")
        print("| model | device | batch | parameters | weights (MiB) | peak increase (MiB) | process peak (MiB) |")
        print("|---|---|---:|---:|---:|---:|---:|")
        for r in mem:
            print(f"| {r['model']} | {r['device']} | {r['batch']} | {r['params']:,} | {r['bytes'] / 2**20:.2f} | "
                  f"{r['increase_mib']:.2f}{r['note']} | {r['peak_mib']:.0f} |")

    print(f"\n### Reference: lenstronomy fit of image {i} (EPL + SHEAR, SERSIC_ELLIPSE source)\n")
    print("| parameter | truth | lenstronomy fit | fit − truth | CNN (±1σ) | CNN − truth |")
    print("|---|---:|---:|---:|---:|---:|")
    for k, name in enumerate(LENS_PARAMETERS):
        t, f, c = truth[name], fit["params"][name], float(cnn_mean[0, k])
        print(f"| {name} | {t:.4f} | {f:.4f} | {f - t:+.4f} | {c:.4f} ± {float(cnn_sigma[0, k]):.4f} "
              f"| {c - t:+.4f} |")
    cpu = [r for r in rows if r["device"] == "cpu" and r["model"] == "CNN"]
    fast = next(r for r in cpu if r["threads"] == max(x["threads"] for x in cpu) and r["batch"] == max(batches))
    slow = next(r for r in cpu if r["threads"] == min(thread_counts) and r["batch"] == min(batches))
    print(f"\nlenstronomy fit: {fit['seconds']:.1f} s for one image (PSO {particles} × {pso_iterations}, "
          f"{args.polish} {polish_iterations}; χ²/ν {fit['chi2_nu']:.2f}); CNN {1e3 * fast['sec']:.3f} ms/image at batch "
          f"{fast['batch']}, {_threads(fast['threads'])}: the CNN is {fit['seconds'] / fast['sec']:,.0f} times faster "
          f"than a lenstronomy fit ({fit['seconds'] / slow['sec']:,.0f} times at batch {slow['batch']}, {_threads(slow['threads'])}).")
    gpu_rows = [r for r in rows if r["device"] == "cuda" and r["model"] == "CNN" and r["batch"] == max(batches)]
    if gpu_rows:
        print(f"On the GPU, batch {max(batches)}: {fit['seconds'] / gpu_rows[0]['sec']:,.0f} times faster.")
    if not args.cnn:
        print("The CNN is untrained: its parameters above are meaningless (its speed is not).")
    if q:
        print("--quick: a token fit (tiny PSO and polish), far from converged; its seconds understate a real fit's.")


if __name__ == "__main__":
    main()
