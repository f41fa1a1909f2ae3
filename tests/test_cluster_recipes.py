"""The README's SLURM recipes, run as written on a real SLURM cluster (tests/slurm.py): the
dask-jobqueue script with its login-node command, and the single-`sbatch` script, stopped the
way a time limit stops it and submitted again to complete the study. The interrupted and resumed
study's results equal the uninterrupted one's, bit for bit.

The recipes are read from README.md's code blocks marked ``<!-- recipe: NAME -->``, so a README
change is a test change. What a one-node test cluster cannot hold is changed, and only that:
the dask-jobqueue job sizes (32 cores, 4 jobs: a substitution that fails by name when the README
no longer has the text), and the `sbatch` script's node and task counts, given on the sbatch
command line (which overrides the script's ``#SBATCH`` lines, as SLURM documents).

SIGTERM: SLURM ends a job at its time limit as ``scancel`` does (SIGCONT and SIGTERM to every
process of every step, SIGKILL KillWait seconds later); the smallest time limit, one minute,
would make this test slow, so the job is cancelled once it has reported its first trials."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mc_engine.results import load_results
from tests.slurm import Slurm, slurm  # noqa: F401 (the fixture)

README = Path(__file__).resolve().parents[1] / "README.md"
REPO = README.parent

STUDY = """
[study]
name = "my_study"
seed = 11
repeats = {repeats}
inference_times = ["0s", "1d"]

[model]
zoo = "digits_mlp"

[data]
dataset = "digits"
limit = 50

[sweep]
adc_bits = [6, 8]
"""
#: Trials: 2 points x 15 repeats. The SIGTERM comes once the first trial is reported; the rest
#: must not have finished by then (their task latency on one worker is far above the
#: scancel's, about 0.2 s here).
REPEATS = 15
N_TRIALS = 2 * REPEATS
#: (README text, replacement): job sizes a one-node, few-core test cluster can run.
JOBQUEUE_SIZES = [(r'cores=\d+, processes=\d+, memory="\d+GB"',
                   'cores=1, processes=1, memory="2GB"'),
                  (r"cluster\.scale\(jobs=\d+\)", "cluster.scale(jobs=2)")]
SBATCH_SIZES = ["--nodes=1", "--ntasks-per-node=1"]
#: Generous: on a loaded 2-core machine a job takes a minute to start its processes.
TIMEOUT_S = 300.0


def recipe(name: str) -> str:
    """The code block that follows ``<!-- recipe: NAME`` in README.md."""
    text = README.read_text(encoding="utf-8")
    found = re.search(rf"<!-- recipe: {re.escape(name)}\b[^>]*-->\n```[a-z]*\n(.*?)```", text,
                      re.S)
    assert found, f"README.md has no code block marked <!-- recipe: {name} -->"
    return found.group(1)


def sized(code: str, substitutions: list[tuple[str, str]]) -> str:
    for pattern, replacement in substitutions:
        code, n = re.subn(pattern, replacement, code)
        assert n == 1, (f"the README's dask-jobqueue recipe no longer matches {pattern!r} "
                        f"once; update JOBQUEUE_SIZES in {Path(__file__).name}")
    return code


def submit_folder(root: Path, cache_dir: Path) -> Path:
    """A submit folder as the recipes expect one: studies/my_study.toml, and results/.cache
    holding the session's trained zoo models."""
    (root / "studies").mkdir(parents=True)
    (root / "studies" / "my_study.toml").write_text(STUDY.format(repeats=REPEATS))
    (root / "results").mkdir()
    (root / "results" / ".cache").symlink_to(cache_dir, target_is_directory=True)
    return root


@pytest.fixture
def user_env(slurm, tmp_path) -> dict[str, str]:  # noqa: F811
    """A user's environment: $HOME/mc-engine/.venv is this interpreter's venv (the recipes
    source its activate script), this checkout first on the path, progress lines every 0.1 s."""
    home = tmp_path / "home"
    (home / "mc-engine").mkdir(parents=True)
    (home / "mc-engine" / ".venv").symlink_to(sys.prefix, target_is_directory=True)
    path = os.pathsep.join([str(Path(sys.executable).parent), slurm.env["PATH"]])
    pythonpath = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    return {**slurm.env, "HOME": str(home), "PATH": path, "PYTHONPATH": pythonpath,
            "MC_ENGINE_PROGRESS_S": "0.1"}


def wait_for(ready, what: str, slurm: Slurm, log: Path | None = None) -> None:  # noqa: F811
    deadline = time.monotonic() + TIMEOUT_S
    while not ready():
        if time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
            raise AssertionError(f"no {what} after {TIMEOUT_S:.0f} s\n{tail}\n{slurm.logs()}")
        time.sleep(0.1)


def results(folder: Path):
    return load_results(folder / "results" / "my_study").drop(columns="wall_s")


def test_readme_slurm_recipes_run_stop_at_sigterm_and_resume_bit_for_bit(
        slurm, user_env, tmp_path, cache_dir):  # noqa: F811
    pytest.importorskip("dask_jobqueue", reason="dask-jobqueue is a dev dependency")
    # 1. dask-jobqueue: the login-node script, then the run in a second shell.
    a = submit_folder(tmp_path / "jobqueue", cache_dir)
    (a / "slurm_cluster.py").write_text(sized(recipe("slurm-jobqueue"), JOBQUEUE_SIZES))
    login = subprocess.Popen(["bash", "-c", "python slurm_cluster.py"], cwd=a, env=user_env,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: (a / "scheduler.json").exists() or login.poll() is not None,
                 "scheduler.json from slurm_cluster.py", slurm)
        assert login.poll() is None, login.stdout.read()
        run = subprocess.run(["bash", "-c", recipe("slurm-jobqueue-run")], cwd=a, env=user_env,
                             timeout=TIMEOUT_S)
        log = (a / "run.log").read_text()
        assert run.returncode == 0, log
        assert f"{N_TRIALS} trials ({N_TRIALS} run now, 0 already on disk)" in log, log
        assert len(slurm.jobs()) == 2   # the worker jobs, until Enter
        out, _ = login.communicate("\n", timeout=TIMEOUT_S)
        assert login.returncode == 0, out
    finally:
        if login.poll() is None:
            login.kill()
    slurm.wait_until_idle()   # Enter shut the cluster down: its jobs are cancelled
    reference = results(a)
    assert len(reference) == 2 * N_TRIALS   # two read times per trial

    # 2. The sbatch script, cancelled (SIGTERM) once it reports trials, then sbatch'ed again.
    b = submit_folder(tmp_path / "sbatch", cache_dir)
    (b / "job.sh").write_text(recipe("slurm-sbatch"))
    job = slurm.command("sbatch", "--parsable", *SBATCH_SIZES, "job.sh", cwd=b,
                        env=user_env).strip()
    log = b / f"slurm-{job}.out"
    progress = re.compile(rf"^my_study: ([1-9]\d*)/{N_TRIALS} trials", re.M)
    wait_for(lambda: log.exists() and progress.search(log.read_text(errors="replace")),
             "progress line in the job's log", slurm, log)
    slurm.command("scancel", job)
    slurm.wait_until_idle()
    text = log.read_text(errors="replace")
    assert "terminated (SIGTERM); the trials written so far are kept" in text, text
    written = len(results(b)) // 2
    assert 0 < written < N_TRIALS, f"{written} of {N_TRIALS} trials written at the SIGTERM"
    assert "JobState=CANCELLED" in slurm.command("scontrol", "show", "job", job)

    again = slurm.command("sbatch", "--parsable", "--wait", *SBATCH_SIZES, "job.sh", cwd=b,
                          env=user_env, timeout_s=TIMEOUT_S).strip()
    text = (b / f"slurm-{again}.out").read_text(errors="replace")
    assert (f"{N_TRIALS} trials ({N_TRIALS - written} run now, {written} already on disk)"
            in text), text
    resumed = results(b)
    assert resumed.equals(reference)   # bit for bit, whatever the interruption and workers
