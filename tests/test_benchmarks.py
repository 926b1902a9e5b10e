"""The benchmark scripts run (``--quick``): their tables print, whatever the numbers."""

from __future__ import annotations

import subprocess
import sys


def test_super_resolution_benchmark_quick(repo, tmp_path):
    out = subprocess.run([sys.executable, str(repo / "benchmarks" / "super_resolution.py"), "--quick"],
                         capture_output=True, text=True, cwd=tmp_path, timeout=600, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    for title in ("### Throughput", "### Training", "### Lens operators", "### Memory"):
        assert title in out.stdout, out.stdout[-3000:]
    for method in ("| bicubic |", "| supervised |", "| lenssr_with_source |", "| lenssr_no_source |",
                   "| lenssr_no_source + source |", "| pisr |"):
        assert method in out.stdout
    assert "build one SRLens" in out.stdout and "a different lens per image" in out.stdout
    assert not list(tmp_path.iterdir())            # nothing left behind


def test_blends_benchmark_quick(repo, tmp_path):
    out = subprocess.run([sys.executable, str(repo / "benchmarks" / "blends.py"), "--quick"],
                         capture_output=True, text=True, cwd=tmp_path, timeout=600, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    for title in ("### Blend simulation", "### Deblender throughput", "### Memory", "### Classical baseline"):
        assert title in out.stdout, out.stdout[-3000:]
    for row in ("| lsst | 6 | simulate_blends, blended |", "| lsst_euclid | 10 | GalSim drawImage alone |",
                "| lsst_euclid | cpu | 1 | 1 |", "| lsst_euclid | cpu | 1 | 8 |", "| lsst_euclid (10 bands) |"):
        assert row in out.stdout, out.stdout[-3000:]
    assert "same galaxies as simulate_blends: yes" in out.stdout
    assert not list(tmp_path.iterdir())            # nothing left behind


def test_inference_benchmark_quick(repo, tmp_path):
    out = subprocess.run([sys.executable, str(repo / "benchmarks" / "inference.py"), "--quick"],
                         capture_output=True, text=True, cwd=tmp_path, timeout=600, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    for title in ("### Throughput", "### Memory", "### Reference: lenstronomy fit"):
        assert title in out.stdout, out.stdout[-3000:]
    for model in ("| CNN |", "| U-Net |", "| U-Net single pass |"):   # delens as run (8 turns) and in one pass
        assert model in out.stdout, out.stdout[-3000:]
    assert not list(tmp_path.iterdir())            # nothing left behind


def test_scaling_benchmark_quick(repo, tmp_path):
    """Shards of a catalogue on 1 and 2 worker processes (sourcelens.apply.run_shard), with an untrained VAE and
    decoder-drawn stamps where the run has no model or stamps."""
    out = subprocess.run([sys.executable, str(repo / "benchmarks" / "scaling.py"), "--quick"],
                         capture_output=True, text=True, cwd=tmp_path, timeout=600, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "untrained VAE" in out.stdout, out.stdout[-3000:]
    for row in ("| fit | 1 | 2 | 8 |", "| fit | 2 | 4 | 8 |", "| encode | 2 | 4 | 512 |", "| reference: torch conv2d | 2 |"):
        assert row in out.stdout, out.stdout[-3000:]
    assert not list(tmp_path.iterdir())            # nothing left behind
