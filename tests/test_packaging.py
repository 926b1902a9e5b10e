"""The package as users install it: a wheel in a fresh virtual environment, the conda environments that
match pyproject.toml, and the default Snakemake profile that the README's run command loads."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


def _requirements() -> dict[str, str]:
    """pyproject's runtime dependencies: name -> version bounds."""
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    out = {}
    for dep in deps:
        m = re.match(r"([A-Za-z0-9_.-]+)\s*(.*)", dep)
        out[m[1].lower()] = m[2].replace(" ", "")
    return out


def test_wheel_installs_and_checks_configs_in_a_fresh_venv(tmp_path):
    """`pip install .` (not editable) carries the config schema: check-config works from the installed wheel,
    outside the checkout."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    shutil.copytree(REPO / "src", src / "src", ignore=shutil.ignore_patterns("*.egg-info", "__pycache__"))
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(wheels), str(src)], check=True, capture_output=True, timeout=300)
    (wheel,) = wheels.glob("sourcelens-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "sourcelens/schemas/config.schema.yaml" in names
    # the real-galaxy samples the default config reads travel with the package, with their licences
    for sample in ("cosmos_btk_ext26", "cosmos23.5_example_params"):
        assert f"sourcelens/galaxies/{sample}/LICENSE" in names
    assert "sourcelens/galaxies/cosmos_btk_ext26/real_galaxy_images_extension.fits" in names

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    py = venv / "bin" / "python"
    subprocess.run([py, "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)], check=True,
                   capture_output=True, timeout=300)
    # the dependencies (not sourcelens) from this environment, after the venv's own packages
    purelib = Path(subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                  check=True, capture_output=True, text=True).stdout.strip())
    (purelib / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    where = subprocess.run([py, "-c", "import sourcelens; print(sourcelens.__file__)"], cwd=tmp_path, check=True,
                           capture_output=True, text=True).stdout
    assert str(venv) in where, where
    ok = subprocess.run([venv / "bin" / "sourcelens", "check-config", str(REPO / "config" / "tiny.yaml")],
                        cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0 and "config OK" in ok.stdout, ok.stderr
    # the installed package finds its shipped sample, outside any checkout
    found = subprocess.run([py, "-c", "from sourcelens.catalog import read_cosmos_catalogue; "
                            "from sourcelens.samples import sample_dir; "
                            "print(len(read_cosmos_catalogue(sample_dir('cosmos_btk_ext26'))))"],
                           cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert found.stdout.strip() == "100", found.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("stamps: {size: 40}\n")     # 40 is not divisible by 2**4 (the default VAE's four widths)
    res = subprocess.run([venv / "bin" / "sourcelens", "check-config", str(bad)], cwd=tmp_path,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 1 and "stamps/size" in res.stderr and "vae/widths" in res.stderr, res.stderr


@pytest.mark.parametrize("env", ["sourcelens.yaml", "sourcelens-gpu.yaml"])
def test_conda_environments_match_pyproject(env):
    spec = yaml.safe_load((REPO / "envs" / env).read_text())
    listed = {}
    for dep in spec["dependencies"]:
        for item in dep["pip"] if isinstance(dep, dict) else [dep]:
            m = re.match(r"([A-Za-z0-9_.-]+)\s*([<>=!,.0-9*]*)", item)
            listed[{"pytorch": "torch"}.get(m[1].lower(), m[1].lower())] = m[2]
    for name, bounds in _requirements().items():
        assert name in listed, f"envs/{env} lacks {name}"
        assert listed[name] == bounds, f"envs/{env}: {name} {listed[name]!r}, pyproject {bounds!r}"


def test_gpu_rules_use_the_gpu_environment():
    """Every rule that asks for a GPU runs in the CUDA-capable environment under --sdm conda."""
    text = "\n".join(p.read_text() for p in (REPO / "workflow" / "rules").glob("*.smk"))
    rules = [r for r in re.split(r"\n(?=rule )", text) if r.startswith("rule ")]
    gpu = [r for r in rules if re.search(r"^\s+gpu\s*=\s*1", r, re.MULTILINE)]
    assert gpu
    for rule in gpu:
        assert "envs/sourcelens-gpu.yaml" in rule, rule.splitlines()[0]


def test_default_profile_is_loaded_by_the_readme_command(tmp_path):
    """`snakemake --cores N` from the checkout loads workflow/profiles/default (through profiles/), whose
    rerun-incomplete lets a run interrupted by a kill continue."""
    profile = yaml.safe_load((REPO / "workflow" / "profiles" / "default" / "config.yaml").read_text())
    assert profile["rerun-incomplete"] is True
    res = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--cores", "2", "--configfile",
                          str(REPO / "config" / "tiny.yaml"), "--directory", str(tmp_path)],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "profiles/default" in res.stdout + res.stderr
