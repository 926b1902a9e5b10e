"""Benchmarks of sourcelens.lensing; prints markdown tables.

    python benchmarks/lensing.py            # all tables
    python benchmarks/lensing.py --quick    # smaller sizes, fewer repeats

1. Exact-overlap operator build (one CPU thread): time and peak resident memory above the
   baseline, each size in a fresh subprocess. Lens SIE + shear, image field 4 arcsec
   (n x n pixels), source grid n x n cells over 2 arcsec.
2. Forward operator throughput: 64 x 64 image, SIE + shear, pixelated 64 x 64 source,
   supersampling 2, 7 x 7 pixel PSF (FFT), float64 and float32, torch at batch 1/64/256
   (1 thread and all threads) against lenstronomy's ImageModel one image at a time (a new
   source for each image, so its interpolation cache is rebuilt as in a fit over many
   sources), plus ``torch.compile``d rows at batch 256 (compile time excluded, reported).
   Rates are the best of several timed calls, measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np


LENS = (["SIE", "SHEAR"], [dict(theta_E=1.0, e1=0.1, e2=-0.05, center_x=0.01, center_y=0.02),
                           dict(gamma1=0.03, gamma2=0.01)])


def overlap_child(n: int) -> None:
    """Build one overlap operator; print JSON with seconds and peak MiB above baseline."""
    import torch

    from sourcelens.lensing import OverlapOperator, SourceGrid

    torch.set_num_threads(1)
    OverlapOperator(*LENS, 16, 0.25, SourceGrid((16, 16), 0.125))  # imports, warm-up
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    op = OverlapOperator(*LENS, n, 4.0 / n, SourceGrid((n, n), 2.0 / n))
    dt = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps(dict(n=n, seconds=dt, peak_mib=(peak - base) / 1024, nnz=op.matrix._nnz())))


def overlap_table(sizes: list[int]) -> None:
    print("### Exact-overlap operator build (1 thread)\n")
    print("| image | source grid | nonzeros | build time (s) | peak memory above baseline (MiB) |")
    print("|---|---|---|---|---|")
    for n in sizes:
        out = subprocess.run([sys.executable, __file__, "--overlap-child", str(n)],
                             capture_output=True, text=True, check=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
        print(f"| {n}x{n} | {n}x{n} | {r['nnz']} | {r['seconds']:.2f} | {r['peak_mib']:.0f} |")
    print()


def random_batch(rng: np.random.Generator, b: int, m: int):
    lens = [dict(theta_E=rng.uniform(0.8, 1.2, b), e1=rng.uniform(-0.2, 0.2, b), e2=rng.uniform(-0.2, 0.2, b),
                 center_x=rng.uniform(-0.05, 0.05, b), center_y=rng.uniform(-0.05, 0.05, b)),
            dict(gamma1=rng.uniform(-0.05, 0.05, b), gamma2=rng.uniform(-0.05, 0.05, b))]
    yy, xx = np.mgrid[:m, :m] - (m - 1) / 2
    cx, cy = rng.uniform(-5, 5, (2, b, 1, 1))
    src = np.exp(-0.5 * ((xx - cx) ** 2 + (yy - cy) ** 2) / rng.uniform(10, 40, (b, 1, 1)))
    return lens, src


def best_rates(fns, n_images, repeats: int) -> list[float]:
    """Images per second of the fastest of ``repeats`` timed calls of each function, the
    functions' calls interleaved so that all see the same (shared, varying) machine load."""
    best = [float("inf")] * len(fns)
    for _ in range(repeats):
        for k, fn in enumerate(fns):
            t0 = time.perf_counter()
            fn()
            best[k] = min(best[k], time.perf_counter() - t0)
    return [n / b for n, b in zip(n_images, best)]


def forward_table(batches: list[int], repeats: int, compile_batch: int | None = None) -> None:
    import torch
    from lenstronomy.Data.pixel_grid import PixelGrid
    from lenstronomy.Data.psf import PSF
    from lenstronomy.ImSim.image_model import ImageModel
    from lenstronomy.LensModel.lens_model import LensModel
    from lenstronomy.LightModel.light_model import LightModel

    from sourcelens.lensing import LensingSimulator, compiled_image

    n, scale, s, m, src_scale = 64, 0.05, 2, 64, 0.04
    g = np.exp(-0.5 * ((np.arange(7) - 3) / 1.2) ** 2)
    kern = np.outer(g, g) / np.outer(g, g).sum()
    rng = np.random.default_rng(0)

    # lenstronomy, one image at a time, a new source (and lens) each time
    grid = PixelGrid(n, n, np.eye(2) * scale, -(n - 1) / 2 * scale, -(n - 1) / 2 * scale)
    light = LightModel(["INTERPOL"])
    model = ImageModel(grid, PSF(psf_type="PIXEL", kernel_point_source=kern), lens_model_class=LensModel(LENS[0]),
                       source_model_class=light,
                       kwargs_numerics=dict(supersampling_factor=s, supersampling_convolution=False))
    block = 10
    lens, src = random_batch(rng, block, m)
    kls = [[{k: float(v[i]) for k, v in d.items()} for d in lens] for i in range(block)]
    kss = [[dict(image=src[i] / src_scale**2, amp=1, center_x=0, center_y=0, phi_G=0, scale=src_scale)]
           for i in range(block)]

    def run_lenstronomy():
        for kl, ks in zip(kls, kss):
            light.delete_interpol_caches()
            model.image(kl, ks)

    threads = torch.get_num_threads()
    print(f"### Forward operator (64x64, SIE+shear, pixelated 64x64 source, supersampling 2, 7x7 PSF)\n")
    print(f"Best of {repeats} timed calls each; every row is timed interleaved with lenstronomy "
          f"({block} images per call, float64, one image at a time) so both see the same load.\n")
    print("| sourcelens dtype | threads | batch | sourcelens images/s | lenstronomy images/s | ratio |")
    print("|---|---|---|---|---|---|")
    for nthreads in sorted({1, threads}):
        torch.set_num_threads(nthreads)
        for dtype in (torch.float64, torch.float32):
            sim = LensingSimulator(n, scale, s, psf=torch.tensor(kern, dtype=dtype), dtype=dtype)
            for b in batches:
                lens, src = random_batch(rng, b, m)
                kl = [{k: torch.tensor(v, dtype=dtype) for k, v in d.items()} for d in lens]
                kw = [dict(image=torch.tensor(src, dtype=dtype), pixel_scale=src_scale)]
                calls = max(1, 16 // b)

                def run_torch():
                    with torch.no_grad():
                        for _ in range(calls):
                            sim.image(LENS[0], kl, ["PIXELATED"], kw)

                run_torch()  # warm-up
                rate, ref_rate = best_rates([run_torch, run_lenstronomy], [calls * b, block], repeats)
                name = str(dtype).replace("torch.", "")
                print(f"| {name} | {nthreads} | {b} | {rate:.0f} | {ref_rate:.0f} | {rate / ref_rate:.1f}x |")
    if compile_batch:
        b = compile_batch
        for dtype in (torch.float64, torch.float32):
            sim = LensingSimulator(n, scale, s, psf=torch.tensor(kern, dtype=dtype), dtype=dtype)
            fn = compiled_image(sim, LENS[0], ["PIXELATED"], dynamic=False)
            lens, src = random_batch(rng, b, m)
            kl = [{k: torch.tensor(v, dtype=dtype) for k, v in d.items()} for d in lens]
            kw = [dict(image=torch.tensor(src, dtype=dtype), pixel_scale=src_scale)]
            with torch.no_grad():
                t0 = time.perf_counter()
                out = fn(kl, kw)
                compile_s = time.perf_counter() - t0
                eager = sim.image(LENS[0], kl, ["PIXELATED"], kw)
            assert (out - eager).abs().max() <= 1e-5 * eager.abs().max()  # same images
            name = str(dtype).replace("torch.", "")
            for nthreads in sorted({1, threads}):
                torch.set_num_threads(nthreads)

                def run_compiled():
                    with torch.no_grad():
                        fn(kl, kw)

                rate, ref_rate = best_rates([run_compiled, run_lenstronomy], [b, block], repeats)
                print(f"| {name}, torch.compile (compiled in {compile_s:.0f} s) | {nthreads} | {b} | "
                      f"{rate:.0f} | {ref_rate:.0f} | {rate / ref_rate:.1f}x |")
    torch.set_num_threads(threads)
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes, no torch.compile rows")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile rows")
    parser.add_argument("--overlap-child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.overlap_child:
        overlap_child(args.overlap_child)
        return
    overlap_table([64, 128] if args.quick else [64, 128, 256, 512])
    forward_table([1, 64] if args.quick else [1, 64, 256], 2 if args.quick else 5,
                  None if args.quick or args.no_compile else 256)


if __name__ == "__main__":
    main()
