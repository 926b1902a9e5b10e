"""Speed of study 003's pieces: the multi-band blend simulation against GalSim drawing alone, the latent-space
deblender's throughput and memory, and the classical (sep) baseline's time per blend, all in the same run;
prints markdown tables.

    python benchmarks/blends.py [--config config/config.yaml] [--band-sets lsst lsst_euclid] [--n 200]
                                [--deblender-band-sets lsst_euclid] [--n-galsim 40] [--batches 1 256]
                                [--threads 1 N] [--repeat 3]
                                [--row-seconds 2] [--n-sep 100] [--no-memory] [--cpu-only]
    python benchmarks/blends.py --quick    # a few blends, small batches: well under 30 s

Config: --config (default: the schema's defaults) gives the ``blends`` block (band sets, grid, galaxies, survey
constants) and the deblender's architecture (``deblend.vae``: the deblender is the VAE's encoder and decoder;
default widths 32–256, latent 32, dense 256, 64² stamps). Every table covers each band set of --band-sets
(``lsst``: u g r i z y at 0.2″; ``lsst_euclid``: + Euclid IE YE JE HE on a 0.1″ grid).

1. Blend simulation, on ONE core (one process, numpy's BLAS pools limited to one thread with threadpoolctl):
   - ``simulate_blends``: --n samples of the ``blended`` and of the ``isolated`` sample with
     ``sourcelens.blends.simulate_blends`` (galaxy draws, k-space drawing of every band on the common grid,
     Poisson noise, the per-galaxy S/N, blendedness and magnitudes, the table), its set-up (the band
     renderer) included once per call;
   - ``renderer alone``: the same galaxies' noiseless scenes drawn by sourcelens's ``BlendRenderer`` alone (no
     noise, no catalogue, no galaxy draws);
   - ``GalSim drawImage``: the same galaxies (the first --n-galsim blended scenes) drawn by GalSim alone, each
     band its own profile — every galaxy's bulge (``DeVaucouleurs``), disk (``Exponential``) and knots
     (``DeltaFunction``\\ s) with its electrons in that band, sheared and shifted, summed over the scene,
     convolved with the band's PSF and the box pixel the simulation uses (max(native, grid pixel)) and drawn
     with ``drawImage(method="no_pixel")`` on the common grid: no resampling, noise nor bookkeeping.
   The galaxies are those ``simulate_blends`` drew (the scenes are drawn again with the same seed, checked
   against its noiseless output: ``same galaxies`` says so); ``max |GalSim − renderer|`` (relative to the
   scene's peak) checks that both draw the same images (the grid's Nyquist band limit of the renderer shows in
   undersampled bands, e.g. Euclid VIS on its own 0.1″ pixels). Blends per second per core and CPU ms per blend
   from the process's CPU time (``time.process_time``; one thread, so other load on the machine does not count),
   and the wall ms per blend; the last column is each row's CPU time per blend over ``simulate_blends``'
   (blended) — how many times the whole simulation's time GalSim's drawing alone takes.
2. Deblender throughput: images/s of ``deblend_images`` (the public call: the study's normalisation, the
   encoder and the frozen decoder, denormalisation; host-to-device copies and numpy results included) of an
   untrained ``Deblender`` (random weights, seed 0; speed does not depend on them) with the config's
   architecture, for each band set of --deblender-band-sets (default the last band set, ``lsst_euclid``'s
   10 bands: the networks of the band sets differ only in their first and last convolutions), on the
   simulated blends of that band set (tiled to the batch), at each --batches size, with torch at 1 thread
   and at all CPU threads (--threads), and on the GPU when there is one. Each row: a warm-up batch, then up to
   --repeat timed runs of as many whole batches as fit in --row-seconds at the warm-up's speed (at least one
   batch), the median printed — so that a loaded machine cannot stretch the run much; images/s from the wall
   clock, and CPU ms per image from the process's CPU time (all threads together).
3. Memory: parameters and bytes of the weights; the peak resident set size (VmHWM) of a fresh process over one
   batch's ``deblend_images`` at each batch size, 1 thread, above its baseline with torch imported and the
   model and batch loaded (as in benchmarks/inference.py; --quick: one process for every row, in turn, so
   that later rows may reuse memory freed by earlier ones); on a GPU ``torch.cuda.max_memory_allocated``
   above the weights.
4. Classical baseline: seconds per blend of ``sourcelens.evaluate.deblending.sep_central`` (sep detection on
   the noise-weighted band sum, multi-threshold deblending, the central object's bands; the config's
   ``deblend.evaluate.sep``) on the first --n-sep simulated blends, one core, the fraction where it found the
   central galaxy, and its time per blend over the deblender's per image on the CPU (the band set's own
   deblender where it was timed, else that of --deblender-band-sets): CPU time against CPU time at
   1 thread (batch 1 and the largest batch), wall against wall at the largest batch with all threads; > 1 means
   the deblender is faster.

No timing is asserted: the numbers depend on the machine and its load (printed in the header).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

try:   # numpy's BLAS pools to one thread (the simulation's timing is per core); a transitive dependency
    from threadpoolctl import threadpool_limits
except ImportError:   # pragma: no cover
    def threadpool_limits(_limits):
        return contextlib.nullcontext()

sys.path.insert(0, str(Path(__file__).resolve().parent))
from inference import (  # the memory probe of the inference benchmark
    peak_rss_mib,
    weights,
)

from sourcelens import blends as bl
from sourcelens.config import load_config, rng_for, validate_config
from sourcelens.evaluate.deblending import sep_central
from sourcelens.models.deblender import Deblender, deblend_images
from sourcelens.surveys import BAND_SETS

CPU = torch.device("cpu")


def _threads(n: int) -> str:
    return f"{n} thread{'s' if n != 1 else ''}"


# --------------------------------------------------------------------------------------------- 1. simulation
def simulate(cfg: dict, band_set: str, n: int, seed: int) -> dict:
    """``simulate_blends`` of both samples, timed on one core; the blended output and its timings."""
    res = {}
    for sample in ("blended", "isolated"):
        rng = rng_for(seed, "bench_blends", band_set, sample)
        with threadpool_limits(1):
            t0, c0 = time.perf_counter(), time.process_time()
            out, table = bl.simulate_blends(n, sample, band_set, cfg, rng, progress=False)
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        res[sample] = {"wall": wall / n, "cpu": cpu / n}
        if sample == "blended":
            res["out"], res["table"] = out, table
    return res


def redraw_scenes(cfg: dict, band_set: str, n: int, seed: int, isolated: np.ndarray):
    """The galaxies of the first ``n`` blended scenes of :func:`simulate`: drawn again with the same generator,
    consuming its noise draws as ``simulate_blends`` does; and whether the redrawn central galaxies equal the
    simulation's noiseless ones (the same galaxies)."""
    bands = bl.bands_for(cfg, band_set)
    scale = bl.grid_scale(cfg, band_set)
    renderer = bl.BlendRenderer(bands, scale, int(cfg["stamp_size"]))
    sky = np.array([b.sky_per_pixel(scale) for b in bands])[:, None, None]
    rng = rng_for(seed, "bench_blends", band_set, "blended")
    scenes, same = [], True
    for i in range(n):
        gals = bl._draw_scene(rng, cfg, "blended", bands, None, None, f"blend-{i:06d}")
        kb = [bl._galaxy_kbands(renderer, g, bands) for g in gals]
        central = renderer.render(kb[0])
        scene = central if len(kb) == 1 else central + renderer.render(sum(kb[1:]))
        if cfg.get("source_poisson", True):
            rng.poisson(np.clip(scene + sky, 0.0, None))
        else:
            rng.poisson(np.broadcast_to(sky, scene.shape))
        same &= bool(np.allclose(central.astype(np.float32), isolated[i], rtol=1e-5, atol=1e-6 * central.max()))
        scenes.append(gals)
    return scenes, same


def render_scenes(cfg: dict, band_set: str, scenes) -> tuple[np.ndarray, float, float]:
    """The noiseless scenes (n, B, S, S) by sourcelens's renderer alone; seconds (wall, CPU) per scene."""
    bands = bl.bands_for(cfg, band_set)
    with threadpool_limits(1):
        t0, c0 = time.perf_counter(), time.process_time()
        renderer = bl.BlendRenderer(bands, bl.grid_scale(cfg, band_set), int(cfg["stamp_size"]))
        images = np.stack([renderer.render(sum(bl._galaxy_kbands(renderer, g, bands) for g in gals))
                           for gals in scenes])
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return images, wall / len(scenes), cpu / len(scenes)


def galsim_profile(gal, electrons: np.ndarray, band: int):
    """One galaxy's GalSim profile in one band: its components with their electrons, sheared and placed."""
    import galsim

    parts = []
    for (spec, _, _), e in zip(gal.components, electrons[:, band]):
        kind = spec[0]
        if kind == "exponential":
            prof = galsim.Exponential(half_light_radius=spec[1]).shear(g1=gal.g1, g2=gal.g2)
        elif kind == "devaucouleurs":
            prof = galsim.DeVaucouleurs(half_light_radius=spec[1]).shear(g1=gal.g1, g2=gal.g2)
        elif kind == "knots":
            pos = spec[1]
            prof = galsim.Add([galsim.DeltaFunction(flux=1.0 / len(pos)).shift(float(x), float(y)) for x, y in pos])
        else:   # "galsim": a real galaxy's InterpolatedImage
            prof = spec[1]
        parts.append(prof.withFlux(float(e)))
    return galsim.Add(parts).shift(gal.dx, gal.dy)


def galsim_scenes(cfg: dict, band_set: str, scenes) -> tuple[np.ndarray, float, float]:
    """The same scenes drawn by GalSim alone (module docstring); seconds (wall, CPU) per scene."""
    import galsim

    bands = bl.bands_for(cfg, band_set)
    scale, size = bl.grid_scale(cfg, band_set), int(cfg["stamp_size"])
    images = np.empty((len(scenes), len(bands), size, size))
    with threadpool_limits(1):
        t0, c0 = time.perf_counter(), time.process_time()
        responses = [galsim.Convolve(b.psf(), galsim.Pixel(max(b.pixel_scale_arcsec, scale))) for b in bands]
        for i, gals in enumerate(scenes):
            electrons = [bl._component_electrons(g, bands) for g in gals]
            for k, response in enumerate(responses):
                scene = galsim.Add([galsim_profile(g, e, k) for g, e in zip(gals, electrons)])
                images[i, k] = galsim.Convolve(scene, response).drawImage(nx=size, ny=size, scale=scale,
                                                                           method="no_pixel").array
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return images, wall / len(scenes), cpu / len(scenes)


# --------------------------------------------------------------------------------------------- 2. deblender
def build_deblender(cfg: dict, n_bands: int, size: int, bands: list[str], scales: np.ndarray) -> Deblender:
    """An untrained deblender (seed 0) of the config's VAE architecture, with a normalisation record."""
    a = cfg["deblend"]["vae"]
    torch.manual_seed(0)
    model = Deblender(bands=n_bands, image_size=size, widths=a["widths"], latent_dim=a["latent_dim"],
                      hidden_dim=a["hidden_dim"], kernel=a["kernel"]).eval()
    model.extra = {"normalisation": {"bands": list(bands), "scales": [float(s) for s in scales]}}
    return model


def tiled4(images: np.ndarray, n: int) -> np.ndarray:
    """``n`` images (n, B, S, S) from ``images``, repeated where fewer."""
    return np.tile(images, (-(-n // len(images)), 1, 1, 1))[:n]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def throughput(models: dict, images: dict, batches: list[int], repeat: int, row_seconds: float,
               devices: list[torch.device], thread_counts: list[int]) -> list[dict]:
    rows = []
    all_threads = os.cpu_count() or 1
    for device in devices:
        for threads in (thread_counts if device.type == "cpu" else [all_threads]):
            torch.set_num_threads(threads)
            for name, model in models.items():
                for b in batches:
                    x = tiled4(images[name], b)
                    t0 = time.perf_counter()
                    deblend_images(model, x, batch_size=b, device=device)   # warm-up, and the speed estimate
                    _sync(device)
                    per_batch = time.perf_counter() - t0
                    k = int(max(1, min(32 * max(1, 256 // b), row_seconds / max(per_batch, 1e-9) / repeat)))
                    x = tiled4(images[name], k * b)
                    times, cpu_times, spent = [], [], 0.0
                    for _ in range(max(1, repeat)):
                        t0, c0 = time.perf_counter(), time.process_time()
                        deblend_images(model, x, batch_size=b, device=device)
                        _sync(device)
                        times.append(time.perf_counter() - t0)
                        cpu_times.append(time.process_time() - c0)
                        spent += times[-1]
                        if spent > row_seconds:
                            break
                    sec = float(np.median(times)) / len(x)
                    rows.append({"band_set": name, "device": device.type,
                                 "threads": threads if device.type == "cpu" else None, "batch": b,
                                 "images": len(x), "runs": len(times), "sec": sec,
                                 "cpu": float(np.median(cpu_times)) / len(x)})
                    print(f"# deblender {name} {device.type} threads {threads} batch {b}: {1 / sec:.1f} images/s",
                          flush=True)
            models = {k: m.cpu() for k, m in models.items()}
    torch.set_num_threads(all_threads)
    return rows


# --------------------------------------------------------------------------------------------- 3. memory
def memory_child(spec: dict) -> None:
    """Calls in a fresh process, each (band set, batch) of ``spec['runs']`` in turn: print a JSON list of the
    baseline and peak resident set sizes (MiB) of each, the peak reset before each call."""
    torch.set_num_threads(spec["threads"])
    out = []
    for name, batch in spec["runs"]:
        m = spec["models"][name]
        torch.manual_seed(0)
        model = Deblender(**m["hparams"]).eval()
        model.extra = {"normalisation": m["normalisation"]}
        x = tiled4(np.load(m["images"]), batch)
        out.append(peak_rss_mib(lambda model=model, x=x: deblend_images(model, x, batch_size=batch, device=CPU)))
        del x, model
    print(json.dumps(out))


def memory(models: dict, images: dict, batches: list[int], devices: list[torch.device], quick: bool) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        spec = {"threads": 1, "models": {}}
        for name, model in models.items():
            npy = Path(tmp) / f"{name}.npy"
            np.save(npy, images[name][: max(batches)])
            spec["models"][name] = {"hparams": model.hparams, "normalisation": model.extra["normalisation"],
                                    "images": str(npy)}
            n_par, nbytes = weights(model)
            rows += [{"band_set": name, "device": "cpu", "batch": b, "params": n_par, "bytes": nbytes}
                     for b in batches]
        groups = [rows] if quick else [[r] for r in rows]   # --quick: one process for every row
        for group in groups:
            spec["runs"] = [[r["band_set"], r["batch"]] for r in group]
            out = subprocess.run([sys.executable, __file__, "--memory-child", json.dumps(spec)],
                                 capture_output=True, text=True, check=True).stdout
            for r, m in zip(group, json.loads(out.strip().splitlines()[-1])):
                r.update(increase_mib=m["peak_mib"] - m["base_mib"], peak_mib=m["peak_mib"])
    for device in devices:
        if device.type != "cuda":
            continue
        for name, model in models.items():
            n_par, nbytes = weights(model)
            model.to(device)
            for b in batches:
                x = tiled4(images[name], b)
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats(device)
                base = torch.cuda.memory_allocated(device)
                deblend_images(model, x, batch_size=b, device=device)
                torch.cuda.synchronize()
                peak = torch.cuda.max_memory_allocated(device)
                rows.append({"band_set": name, "device": "cuda", "batch": b, "params": n_par, "bytes": nbytes,
                             "increase_mib": (peak - base) / 2**20, "peak_mib": peak / 2**20})
            model.cpu()
    return rows


# --------------------------------------------------------------------------------------------- 4. sep
def time_sep(out: dict, n: int, sep_cfg: dict) -> dict:
    blends, sigma = out["blend"][:n], out["noise_sigma"][:n]
    found = 0
    with threadpool_limits(1):
        t0, c0 = time.perf_counter(), time.process_time()
        for x, s in zip(blends, sigma):
            found += sep_central(x, s, sep_cfg)[1]
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"n": len(blends), "sec": wall / len(blends), "cpu": cpu / len(blends), "found": found / len(blends)}


# --------------------------------------------------------------------------------------------- main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=None, help="config file (default: the schema's defaults)")
    ap.add_argument("--band-sets", nargs="+", default=None, choices=tuple(BAND_SETS),
                    help="band sets (default: both, lsst and lsst_euclid)")
    ap.add_argument("--deblender-band-sets", nargs="+", default=None, choices=tuple(BAND_SETS),
                    help="band sets whose deblender is timed and measured (default: the last of --band-sets, "
                         "lsst_euclid; the networks differ only in their first and last convolutions)")
    ap.add_argument("--n", type=int, default=None, help="samples simulated per band set and sample (200; --quick 8)")
    ap.add_argument("--n-galsim", type=int, default=None,
                    help="of those, blended scenes drawn again by GalSim and the renderer (40; --quick 3)")
    ap.add_argument("--batches", type=int, nargs="+", default=None, help="deblender batch sizes (1 256; --quick 1 8)")
    ap.add_argument("--threads", type=int, nargs="+", default=None,
                    help="torch CPU thread counts (default: 1 and all CPUs)")
    ap.add_argument("--repeat", type=int, default=None, help="timed runs per row at most, median printed (3; --quick 1)")
    ap.add_argument("--row-seconds", type=float, default=None,
                    help="time budget of one throughput row's timed runs (2; --quick 0.3)")
    ap.add_argument("--n-sep", type=int, default=None, help="blends deblended by sep (100; --quick 8)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-memory", action="store_true", help="skip the memory table")
    ap.add_argument("--cpu-only", action="store_true", help="skip the GPU rows where a GPU is present")
    ap.add_argument("--quick", action="store_true", help="a few blends and small batches (for testing)")
    ap.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.memory_child:
        memory_child(json.loads(args.memory_child))
        return
    q = args.quick
    n = args.n or (8 if q else 200)
    n_galsim = min(n, args.n_galsim or (3 if q else 40))
    n_sep = min(n, args.n_sep or (8 if q else 100))
    batches = sorted(set(args.batches or ([1, 8] if q else [1, 256])))
    repeat = args.repeat or (1 if q else 3)
    row_seconds = args.row_seconds or (0.3 if q else 2.0)
    all_threads = os.cpu_count() or 1
    thread_counts = sorted(set(args.threads or [1, all_threads]))

    import galsim
    import sep

    cfg = load_config(args.config) if args.config else validate_config({})
    bcfg, seed = cfg["blends"], int(cfg.get("seed", 0)) + args.seed
    band_sets = args.band_sets or list(bcfg["band_sets"])
    deb_sets = [b for b in band_sets if b in (args.deblender_band_sets or band_sets[-1:])]
    if not deb_sets:
        raise SystemExit(f"--deblender-band-sets must be among the band sets {band_sets}")
    devices = [CPU] + ([torch.device("cuda")] if torch.cuda.is_available() and not args.cpu_only else [])
    gpu = f", GPU {torch.cuda.get_device_name(0)}" if len(devices) > 1 else ", no GPU"
    print(f"# config: {args.config or 'schema defaults'}; band sets {', '.join(band_sets)}; "
          f"{bcfg['stamp_size']}² stamps; deblender architecture "
          f"{ {k: cfg['deblend']['vae'][k] for k in ('widths', 'latent_dim', 'hidden_dim', 'kernel')} }")
    print(f"# torch {torch.__version__}, galsim {galsim.__version__}, sep {sep.__version__}, numpy "
          f"{np.__version__}; {all_threads} CPUs{gpu}; load average {os.getloadavg()[0]:.2f}", flush=True)

    sim, models, images = {}, {}, {}
    for name in band_sets:
        s = simulate(bcfg, name, n, seed)
        out = s["out"]
        print(f"# simulate_blends {name}: {1 / s['blended']['wall']:.0f} blended, {1 / s['isolated']['wall']:.0f} "
              "isolated samples/s", flush=True)
        scenes, same = redraw_scenes(bcfg, name, n_galsim, seed, out["isolated"])
        rendered, r_wall, r_cpu = render_scenes(bcfg, name, scenes)
        drawn, g_wall, g_cpu = galsim_scenes(bcfg, name, scenes)
        peak = rendered.max(axis=(-2, -1), keepdims=True)
        s.update(renderer={"wall": r_wall, "cpu": r_cpu}, galsim={"wall": g_wall, "cpu": g_cpu}, same=same,
                 diff=float(np.max(np.abs(drawn - rendered) / peak)),
                 flux=float(np.max(np.abs(drawn.sum((-2, -1)) / rendered.sum((-2, -1)) - 1))))
        print(f"# GalSim drawImage {name}: {1 / g_wall:.1f} scenes/s", flush=True)
        sim[name] = s
        bands = [b.name for b in bl.bands_for(bcfg, name)]
        scales = np.maximum(out["isolated"].max(axis=(0, 2, 3)), 1e-3)
        if name in deb_sets:
            models[name] = build_deblender(cfg, len(bands), int(bcfg["stamp_size"]), bands, scales)
            images[name] = out["blend"]

    rows = throughput(models, images, batches, repeat, row_seconds, devices, thread_counts)
    mem = [] if args.no_memory else memory(models, images, batches, devices, q)
    seps = {name: time_sep(sim[name]["out"], n_sep, cfg["deblend"]["evaluate"]["sep"]) for name in band_sets}

    print(f"\n### Blend simulation (one core; {n} samples per band set and sample, {n_galsim} scenes drawn again "
          "for the renderer and GalSim rows)\n")
    print("| band set | bands | what | blends/s per core | CPU ms/blend | wall ms/blend | × simulate_blends, blended |")
    print("|---|---:|---|---:|---:|---:|---:|")
    for name in band_sets:
        s, nb = sim[name], len(bl.bands_for(bcfg, name))
        ref = s["blended"]["cpu"]
        for label, key in (("simulate_blends, blended", "blended"), ("simulate_blends, isolated", "isolated"),
                           ("renderer alone (noiseless scenes)", "renderer"), ("GalSim drawImage alone", "galsim")):
            r = s[key]
            print(f"| {name} | {nb} | {label} | {1 / r['cpu']:.1f} | {1e3 * r['cpu']:.2f} | {1e3 * r['wall']:.2f} | "
                  f"{r['cpu'] / ref:.2f} |")
    print("\nblends/s per core and the ratio: from the process's CPU time (one thread), so that other load on the "
          "machine does not count; wall ms/blend as measured.")
    for name in band_sets:
        s = sim[name]
        print(f"{name}: same galaxies as simulate_blends: {'yes' if s['same'] else 'NO (redrawn scenes differ)'}; "
              f"max |GalSim − renderer| = {s['diff']:.2e} of the scene's peak, band fluxes within {s['flux']:.1e}; "
              f"GalSim drawing alone takes {s['galsim']['cpu'] / s['blended']['cpu']:.2f}× the CPU time per blend "
              "of the whole simulation.")

    print("\n### Deblender throughput (deblend_images end to end: normalisation, encoder, frozen decoder, "
          f"denormalisation; untrained weights; median of up to {repeat} timed runs within {row_seconds:g} s, "
          "warm-up excluded)\n")
    print("| band set | device | threads | batch | images per run | runs | images/s | ms/image | CPU ms/image |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['band_set']} | {r['device']} | {r['threads'] or '—'} | {r['batch']} | {r['images']} | "
              f"{r['runs']} | {1 / r['sec']:.1f} | {1e3 * r['sec']:.2f} | {1e3 * r['cpu']:.2f} |")
    print("\nimages/s and ms/image: wall clock (a loaded machine slows them, multi-threaded rows most); CPU ms/image: "
          "the process's CPU time over all its threads (at 1 thread, the cost of an image whatever the load).")

    if mem:
        print("\n### Memory (CPU: peak resident set size (VmHWM) of a fresh process over one batch's deblend_images, "
              "above its baseline with torch imported and the model and batch loaded (free heap returned by "
              "malloc_trim, peak reset with /proc/self/clear_refs), 1 thread"
              + ("; --quick: one process for all rows" if q else "") + "; GPU: torch.cuda.max_memory_allocated "
              "above the weights; process peak: the resident set size at that peak)\n")
        print("| band set | device | batch | parameters | weights (MiB) | peak increase (MiB) | process peak (MiB) |")
        print("|---|---|---:|---:|---:|---:|---:|")
        for r in mem:
            print(f"| {r['band_set']} | {r['device']} | {r['batch']} | {r['params']:,} | {r['bytes'] / 2**20:.2f} | "
                  f"{r['increase_mib']:.1f} | {r['peak_mib']:.0f} |")

    big, small, one, most = max(batches), min(batches), min(thread_counts), max(thread_counts)
    print(f"\n### Classical baseline: sep_central (one core, first {n_sep} blends) against the deblender (CPU)\n")
    print(f"| band set | sep CPU ms/blend | sep wall ms/blend | central found | deblender | deblender CPU ms/image, "
          f"batch {small}, {_threads(one)} | sep ÷ deblender | deblender CPU ms/image, batch {big}, {_threads(one)} | "
          f"sep ÷ deblender | deblender wall ms/image, batch {big}, {_threads(most)} | sep ÷ deblender |")
    print("|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|")
    for name in band_sets:
        s = seps[name]
        net = name if name in deb_sets else deb_sets[-1]
        cpu = {(r["threads"], r["batch"]): r for r in rows if r["device"] == "cpu" and r["band_set"] == net}
        a, b, c = cpu[(one, small)], cpu[(one, big)], cpu[(most, big)]
        print(f"| {name} | {1e3 * s['cpu']:.2f} | {1e3 * s['sec']:.2f} | {100 * s['found']:.0f} % | "
              f"{net} ({models[net].hparams['bands']} bands) | "
              f"{1e3 * a['cpu']:.2f} | {s['cpu'] / a['cpu']:.3g} | {1e3 * b['cpu']:.2f} | {s['cpu'] / b['cpu']:.3g} | "
              f"{1e3 * c['sec']:.2f} | {s['sec'] / c['sec']:.3g} |")
    print("\nsep ÷ deblender > 1: the deblender takes less time per blend than sep (at 1 thread: CPU time against "
          "CPU time; at all threads: wall against wall). The deblender is untrained here: its speed is that of a "
          "trained one, its images are not.")
    if q:
        print("--quick: a few blends and small batches; the numbers are rough.")


if __name__ == "__main__":
    main()
