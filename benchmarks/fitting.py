"""Seconds per galaxy of the decoder fits (batched L-BFGS) against the lenstronomy Sérsic fit.

    python benchmarks/fitting.py [--config config/config.yaml] [--model results/models/vae.pt]
                                 [--threads 1] [--batch 256] [--reference 64]

Galaxies: the test-split originals (results/data/stamps_test.h5), repeated with fresh noise up to
the batch size, noise brought to fit.noise_sigma. VAE: the architecture of the config (trained
weights from --model when given — timing does not depend on them, the χ² does). Prints a markdown
table: decoder fit at batch 1 and at --batch with the config's max_iter and a fast max_iter,
their median χ²/ν and the median excess χ² over a long, converged fit (max_iter 1000, no
change tolerance) of the first --reference galaxies, the Sérsic fit, and time ratios.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from sourcelens.config import load_config, rng_for  # noqa: E402
from sourcelens.fit import add_noise_to_level, fit_decoder, fit_sersic  # noqa: E402
from sourcelens.io import read_dataset  # noqa: E402
from sourcelens.models import VAE, load_vae  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="config/config.yaml")
    ap.add_argument("--model", default=None)
    ap.add_argument("--stamps", default="results/data/stamps_test.h5")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--fast-iter", type=int, default=30)
    ap.add_argument("--reference", type=int, default=64)
    ap.add_argument("--n-single", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = load_config(args.config)
    if args.model:
        vae = load_vae(args.model)
    else:
        torch.manual_seed(0)
        vae = VAE(cfg["stamps"]["size"], cfg["vae"]["latent_dim"], cfg["vae"]["widths"]).eval()
    arrays, meta = read_dataset(args.stamps, names=("images",))
    orig = np.flatnonzero(meta["augmentation"].astype(str).to_numpy() == "original")
    reps = -(-args.batch // orig.size)
    idx = np.tile(orig, reps)[: args.batch]
    rng = rng_for(cfg["seed"], "benchmark_fitting")
    data, sigma = add_noise_to_level(arrays["images"][idx], meta["noise_sigma"].to_numpy()[idx],
                                     cfg["fit"]["noise_sigma"], rng)
    max_iter = int(cfg["fit"]["max_iter"])
    init = cfg["fit"]["init"]
    print(f"# decoder: VAE widths {vae.hparams['widths']}, latent {vae.latent_dim}, "
          f"{'trained ' + args.model if args.model else 'random weights'}; init {init}; "
          f"torch threads {args.threads}; load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs",
          flush=True)

    nref = min(args.reference, args.batch)
    t0 = time.perf_counter()
    ref = fit_decoder(vae, data[:nref], sigma[:nref], init=init, max_iter=1000, tolerance_change=0.0,
                      tolerance_grad=0.0)
    t_ref = (time.perf_counter() - t0) / nref
    rows = []

    def excess(chi2):
        return float(np.median((chi2[:nref] - ref.chi2) / ref.chi2))

    for iters in (args.fast_iter, max_iter):
        fit_decoder(vae, data[:2], sigma[:2], init=init, max_iter=2)  # warm-up
        t0 = time.perf_counter()
        fit = fit_decoder(vae, data, sigma, init=init, max_iter=iters, batch_size=args.batch)
        sec = (time.perf_counter() - t0) / len(data)
        rows.append((f"decoder, batch {args.batch}, max_iter {iters}", sec, np.median(fit.chi2_nu),
                     excess(fit.chi2), int(fit.n_eval.max())))
        singles, chis, evals = [], [], []
        for i in range(args.n_single):
            t0 = time.perf_counter()
            one = fit_decoder(vae, data[i:i + 1], sigma[i], init=init, max_iter=iters)
            singles.append(time.perf_counter() - t0)
            chis.append((one.chi2[0] - ref.chi2[i]) / ref.chi2[i] if i < nref else np.nan)
            evals.append(int(one.n_eval[0]))
        rows.append((f"decoder, batch 1, max_iter {iters} (median of {args.n_single})", float(np.median(singles)),
                     float(np.median(one.chi2_nu)), float(np.nanmedian(chis)), int(np.median(evals))))
    rows.append((f"decoder, batch {nref}, max_iter 1000 (reference)", t_ref, float(np.median(ref.chi2_nu)), 0.0,
                 int(ref.n_eval.max())))
    sersic_t, sersic_chi = [], []
    for i in range(args.n_single):
        s = fit_sersic(data[i], sigma[i])
        sersic_t.append(s.seconds)
        sersic_chi.append(s.chi2_nu)
    t_sersic = float(np.median(sersic_t))
    rows.append((f"lenstronomy Sérsic (median of {args.n_single})", t_sersic, float(np.median(sersic_chi)), np.nan, 0))

    print("| method | s / galaxy | Sérsic time / this | median χ²/ν | median χ² excess over reference | evaluations |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, sec, chi_nu, exc, nev in rows:
        exc_s = "" if not np.isfinite(exc) else f"{100 * exc:+.2f} %"
        print(f"| {name} | {sec:.4f} | {t_sersic / sec:.1f}× | {chi_nu:.3f} | {exc_s} | {nev or ''} |")
    print("\nTargets: ≤ 0.05 s per galaxy at batch 256, ≤ 1 s for one galaxy (the study: ~7 s with BFGS).")


if __name__ == "__main__":
    main()
