"""End-to-end runs through a real SLURM with workflow/profiles/slurm.

Needs a working SLURM controller on this machine, e.g. the single-node test
cluster of `.ci/slurm/start-slurm.sh` (partition "debug", one fake GPU, no
accounting).  Skipped when `sbatch` is not on PATH or `sinfo` does not answer.

Everything runs in pytest's tmp_path (`--directory`), never in the repo's
results/.  Evidence that jobs really went through SLURM: Snakemake's
"submitted with SLURM jobid" lines, the per-job logs in
.snakemake/slurm_logs/rule_<rule>/<jobid>.log, SLURM_JOB_ID inside the jobs and
`scontrol show job` (finished jobs stay visible for MinJobAge seconds).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PROFILE = REPO / "workflow" / "profiles" / "slurm"
TINY_CONFIG = REPO / "config" / "tiny.yaml"
MAIN_CONFIG = REPO / "config" / "config.yaml"

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

# "Job 3 has been submitted with SLURM jobid 17 (log: /.../rule_x/17.log)."
SUBMITTED_RE = re.compile(
    r"Job (?P<job>\d+) has been submitted with SLURM jobid (?P<slurm_id>\d+) "
    r"\(log: (?P<log>[^)]+)\)"
)
# Rule headers and resource lines of the job blocks Snakemake prints.
RULE_RE = re.compile(r"^\s*(?:local)?(?:rule|checkpoint) (?P<rule>\w+):\s*$")
JOBID_RE = re.compile(r"^\s*jobid: (?P<job>\d+)\s*$")
RESOURCES_RE = re.compile(r"^\s*resources: (?P<res>.*)$")


@pytest.fixture(scope="module")
def slurm_cluster():
    """Skip unless sbatch exists and the controller answers with a usable node."""
    if shutil.which("sbatch") is None or shutil.which("sinfo") is None:
        pytest.skip("SLURM not available: sbatch/sinfo not on PATH "
                    "(run `sudo bash .ci/slurm/start-slurm.sh`)")
    try:
        proc = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True,
                              text=True, timeout=20)
    except subprocess.TimeoutExpired:
        pytest.skip("SLURM not available: `sinfo` timed out (slurmctld not running?)")
    if proc.returncode != 0:
        pytest.skip(f"SLURM not available: `sinfo` failed: {proc.stderr.strip()}")
    states = {s.strip().rstrip("*~#$@^-") for s in proc.stdout.split()}
    if not states & {"idle", "mixed", "allocated", "completing"}:
        pytest.skip(f"SLURM has no usable node (sinfo states: {sorted(states) or 'none'})")
    return True


def run_snakemake(workdir: Path, *args: str, timeout: int = 1800) -> subprocess.CompletedProcess:
    """Run snakemake (of this interpreter) with the SLURM profile in `workdir`."""
    env = dict(os.environ)
    # The submitted jobs re-run `sys.executable -m snakemake`; keep our venv first.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    # Never pick up an outer job's SLURM context or a user profile.
    for key in [k for k in env if k.startswith("SLURM_")] + ["SNAKEMAKE_PROFILE"]:
        env.pop(key, None)
    cmd = [
        sys.executable, "-m", "snakemake",
        "--profile", str(PROFILE),
        "--workflow-profile", "none",
        "--directory", str(workdir),
        # Test-only speed-ups / evidence; the profile keeps the plugin defaults.
        "--slurm-keep-successful-logs",
        "--slurm-init-seconds-before-status-checks", "5",
        "--latency-wait", "10",
        "--retries", "0",
        *args,
    ]
    proc = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True,
                          text=True, timeout=timeout)
    (workdir / "snakemake.stdout.log").write_text(proc.stdout)
    (workdir / "snakemake.stderr.log").write_text(proc.stderr)
    return proc


def submitted_jobs(output: str) -> dict[str, dict]:
    """Map Snakemake job id -> {rule, resources, slurm_id, log} for SLURM submissions."""
    jobs: dict[str, dict] = {}
    rule = None
    current = None
    for line in output.splitlines():
        if m := RULE_RE.match(line):
            rule, current = m["rule"], None
        elif (m := JOBID_RE.match(line)) and rule:
            current = jobs.setdefault(m["job"], {"rule": rule, "resources": ""})
        elif (m := RESOURCES_RE.match(line)) and current is not None:
            current["resources"] = m["res"]
    submitted = {}
    for m in SUBMITTED_RE.finditer(output):
        info = dict(jobs.get(m["job"], {"rule": None, "resources": ""}))
        info.update(slurm_id=m["slurm_id"], log=Path(m["log"]))
        submitted[m["job"]] = info
    return submitted


def requests_gpu(resources: str) -> bool:
    return bool(re.search(r"(?:^|,\s*)(gpu=[1-9]|gpu_model=|gres=[^,]*gpu)", resources))


def scontrol_job(slurm_id: str) -> str:
    proc = subprocess.run(["scontrol", "show", "job", slurm_id],
                          capture_output=True, text=True, timeout=30)
    return proc.stdout


def fail_msg(proc: subprocess.CompletedProcess, workdir: Path) -> str:
    logs = sorted((workdir / ".snakemake" / "slurm_logs").rglob("*.log"))
    tails = "\n".join(f"--- {p}\n{p.read_text()[-3000:]}" for p in logs[-5:])
    return (f"snakemake exited {proc.returncode}\n--- stdout (tail)\n{proc.stdout[-6000:]}"
            f"\n--- stderr (tail)\n{proc.stderr[-6000:]}\n{tails}")


GPU_SNAKEFILE = textwrap.dedent(
    """
    rule all:
        input: "gpu_check.txt", "cpu_check.txt"

    rule gpu_check:
        output: "gpu_check.txt"
        resources: gpu=1
        shell:
            "echo SLURM_JOB_ID=${{SLURM_JOB_ID:-}} "
            "CUDA_VISIBLE_DEVICES=${{CUDA_VISIBLE_DEVICES:-}} > {output}; "
            "scontrol show job ${{SLURM_JOB_ID}} >> {output}"

    rule cpu_check:
        output: "cpu_check.txt"
        shell:
            "echo SLURM_JOB_ID=${{SLURM_JOB_ID:-}} "
            "CUDA_VISIBLE_DEVICES=${{CUDA_VISIBLE_DEVICES:-}} > {output}; "
            "scontrol show job ${{SLURM_JOB_ID}} >> {output}"
    """
)


def test_profile_submits_gpu_rules_with_gpus(slurm_cluster, tmp_path):
    """A rule with `resources: gpu=1` is submitted as `sbatch --gpus=1` by the profile."""
    snakefile = tmp_path / "Snakefile"
    snakefile.write_text(GPU_SNAKEFILE)
    proc = run_snakemake(tmp_path, "--snakefile", str(snakefile), timeout=900)
    assert proc.returncode == 0, fail_msg(proc, tmp_path)

    jobs = {info["rule"]: info for info in submitted_jobs(proc.stdout + proc.stderr).values()}
    assert set(jobs) >= {"gpu_check", "cpu_check"}, f"not submitted to SLURM: {jobs}"
    for rule, info in jobs.items():
        assert info["log"].is_file(), f"missing SLURM log for {rule}: {info['log']}"
        assert info["log"].parent == tmp_path / ".snakemake" / "slurm_logs" / f"rule_{rule}"

    gpu = (tmp_path / "gpu_check.txt").read_text()
    cpu = (tmp_path / "cpu_check.txt").read_text()
    # Ran inside the SLURM jobs Snakemake reported.
    assert f"SLURM_JOB_ID={jobs['gpu_check']['slurm_id']} " in gpu
    assert f"SLURM_JOB_ID={jobs['cpu_check']['slurm_id']} " in cpu
    # `--gpus=1` shows up as a per-job GPU request (`--gres=gpu:1` would be TresPerNode).
    assert "TresPerJob=gres:gpu:1" in gpu, gpu
    assert "gres:gpu" not in cpu, cpu
    # SLURM bound the (fake) GPU to the job.
    assert re.search(r"CUDA_VISIBLE_DEVICES=\d", gpu), gpu
    assert not re.search(r"CUDA_VISIBLE_DEVICES=\d", cpu), cpu
    # And the partition comes from the profile's default-resources.
    assert "Partition=debug" in gpu


@pytest.mark.skipif(not TINY_CONFIG.is_file(), reason="config/tiny.yaml does not exist yet")
def test_tiny_workflow_through_slurm(slurm_cluster, tmp_path):
    """The tiny config end to end: all jobs via sbatch, outputs in tmp_path only."""
    # and a user catalogue (a FITS cube) encoded by the trained VAE in two shard jobs (sourcelens.apply)
    import numpy as np
    from astropy.io import fits

    fits.PrimaryHDU(np.random.default_rng(0).uniform(0.01, 1.0, (4, 32, 32)).astype(np.float32)).writeto(
        tmp_path / "catalogue.fits")
    apply_cfg = tmp_path / "apply.yaml"
    apply_cfg.write_text("apply:\n  shard_size: 2\n  catalogues:\n    cube: {path: catalogue.fits, task: encode}\n")
    configs = [str(p) for p in (MAIN_CONFIG, TINY_CONFIG, apply_cfg) if p.is_file()]
    # `configfile: "config/config.yaml"` in the Snakefile is resolved against the
    # working directory (tmp_path), where it does not exist; Snakemake then
    # relies on the --configfile files given here.
    args = ["--snakefile", str(REPO / "Snakefile"), "all", "results/apply/cube.h5", "--configfile", *configs]
    proc = run_snakemake(tmp_path, *args)
    assert proc.returncode == 0, fail_msg(proc, tmp_path)

    output = proc.stdout + proc.stderr
    jobs = submitted_jobs(output)
    assert jobs, "no job was submitted to SLURM:\n" + output[-4000:]
    for info in jobs.values():
        assert info["log"].is_file(), f"missing SLURM log {info['log']}"
        assert (tmp_path / ".snakemake" / "slurm_logs") in info["log"].parents
    # gather and figure rules are local rules: they run on the submit host, never through sbatch
    submitted_rules = {info["rule"] for info in jobs.values()}
    assert "simulate_pairs" in submitted_rules and "train_vae" in submitted_rules
    assert "posterior_vae" in submitted_rules
    assert sum(info["rule"] == "apply_shard" for info in jobs.values()) == 2 and "apply_gather" not in submitted_rules
    assert not {r for r in submitted_rules if r.startswith(("gather_", "plot_")) or r == "lensing_demo"}

    # Results were written in tmp_path, and the workflow is complete.
    results = tmp_path / "results"
    assert results.is_dir() and any(p.is_file() for p in results.rglob("*")), \
        "no files under results/"
    # Complete = every target exists and is newer than its inputs.  (Only mtime:
    # provenance triggers would also fire on script edits made after the run.)
    dry = subprocess.run(
        [sys.executable, "-m", "snakemake", "--workflow-profile", "none",
         "--directory", str(tmp_path), "--dry-run", "--cores", "1",
         "--rerun-triggers", "mtime", *args],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert dry.returncode == 0, dry.stdout[-3000:] + dry.stderr[-3000:]
    assert "Nothing to be done" in dry.stdout + dry.stderr, dry.stdout[-3000:]

    # GPU-tagged rules of the workflow (if any yet) went out with --gpus.
    for info in jobs.values():
        if requests_gpu(info["resources"]):
            job = scontrol_job(info["slurm_id"])
            if job:  # visible for MinJobAge seconds after the end
                assert "gres:gpu" in job, f"{info['rule']} submitted without GPU:\n{job}"
