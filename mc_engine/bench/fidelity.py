"""Digits accuracy distributions: mc-engine beside aihwkit 1.2.0, cell by cell.

Runs every study file in tests/data/aihwkit/ through `mc-engine run` (the product path, not a
private one), then compares each (model, config, time) cell with aihwkit's 100 trials:
|Δmean| <= 3·sqrt(s1²/n1 + s2²/n2) + 0.003, and the chip-to-chip spreads agree:
|ln(s1/s2)| <= 4·se, se the standard error of the log std ratio from the sample sizes (see
:func:`log_std_se`). With
``--independent`` it also runs every study with pair_drift = "independent" and prints how far
that physically complete option moves the accuracy from the toolkit's "net" convention.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from mc_engine.study.units import format_duration

AIHWKIT_DIR = Path(__file__).resolve().parents[2] / "tests" / "data" / "aihwkit"
MARGIN = 0.003
#: The chip-to-chip stds agree when |ln(s1/s2)| is within this many standard errors.
STD_SE = 4.0


def study_files(directory: Path = AIHWKIT_DIR) -> list[Path]:
    return sorted(directory.glob("*_*.toml"))


def cell_of(path: Path) -> tuple[str, str]:
    """(model, config) named by a study file `<model>_<config>.toml`."""
    model, config = path.stem.split("_", 1)
    return model, config


def run_study(path: Path, out: Path, extra_args: list[str] = (),
              hardware: str = "") -> pd.DataFrame:
    """Run one study through the CLI and return its results.

    ``hardware`` (TOML lines) is added to the study's [hardware] table; the variant is written
    beside the original (its relative paths stay valid) under another study name, then removed.
    """
    from mc_engine.cli import main as cli_main
    from mc_engine.results import load_results

    text = path.read_text()
    name = re.search(r'^name = "([^"]+)"', text, re.M).group(1)
    target = path
    if hardware:
        name += "-variant"
        text = re.sub(r'^name = "[^"]+"', f'name = "{name}"', text, count=1, flags=re.M)
        target = path.with_name(f".{path.stem}-variant.toml")
        target.write_text(text.replace("[hardware]\n", f"[hardware]\n{hardware}\n", 1))
    try:
        with contextlib.redirect_stdout(io.StringIO()):   # each run's own summary table
            code = cli_main(["run", str(target), "--out", str(out), *extra_args])
    finally:
        if target != path:
            target.unlink()
    if code != 0:
        raise RuntimeError(f"mc-engine run {target} exited with {code}")
    return load_results(out / name)


def kurtosis(a: pd.Series) -> float:
    """Sample kurtosis m4/m2² (3 for a normal distribution)."""
    d = a.to_numpy(np.float64) - a.mean()
    m2 = np.mean(d**2)
    return float(np.mean(d**4) / m2**2) if m2 > 0 else 3.0


def log_std_se(n1: np.ndarray, n2: np.ndarray, kurt: np.ndarray | float = 3.0) -> np.ndarray:
    """Standard error of ln(s1/s2) for two independent samples of sizes n1, n2.

    Delta method: var(ln s) ≈ (κ − 1)/(4(n − 1)) for a sample of kurtosis κ, which is the
    normal-theory 1/(2(n − 1)) at κ = 3, so se = sqrt((κ − 1)/(4(n1 − 1)) + (κ − 1)/(4(n2 − 1))).
    ``kurt``: the kurtosis both samples share under the hypothesis that they come from one
    distribution (pooled: the n-weighted mean of each sample's own kurtosis), floored at the
    normal 3: accuracies over chips can be heavy-tailed (a few bad chips; the reference's cells
    reach κ ≈ 9, which doubles the error), and a light-tailed estimate from 100 samples must
    not narrow the band below normal theory.
    """
    k = np.maximum(kurt, 3.0)
    return np.sqrt((k - 1) / (4 * (np.asarray(n1) - 1)) + (k - 1) / (4 * (np.asarray(n2) - 1)))


def compare(ours: pd.DataFrame, reference: pd.DataFrame, model: str, config: str) -> pd.DataFrame:
    """One row per time: both means/stds, the allowed |Δmean|, the std ratio with its allowed
    band exp(±STD_SE·se) and a verdict."""
    ref = reference[(reference["model"] == model) & (reference["config"] == config)]
    stats = ["mean", "std", "count", kurtosis]
    a = ours.groupby("t_inference_s")["accuracy"].agg(stats)
    b = ref.groupby("t_inference_s")["accuracy"].agg(stats)
    table = a.merge(b, left_index=True, right_index=True, how="outer",
                    suffixes=("_ours", "_aihwkit"))
    n1, n2 = table["count_ours"], table["count_aihwkit"]
    table["delta"] = table["mean_ours"] - table["mean_aihwkit"]
    table["tolerance"] = 3 * np.sqrt(table["std_ours"] ** 2 / n1
                                     + table["std_aihwkit"] ** 2 / n2) + MARGIN
    table["std_ratio"] = table["std_ours"] / table["std_aihwkit"]
    # each sample standardised on its own spread, then pooled: a mixture of the two spreads
    # would inflate the kurtosis exactly when the spreads differ
    table["kurtosis"] = (n1 * table["kurtosis_ours"] + n2 * table["kurtosis_aihwkit"]) / (n1 + n2)
    table["std_band"] = np.exp(STD_SE * log_std_se(n1, n2, table["kurtosis"]))
    table["std_ok"] = np.abs(np.log(table["std_ratio"])) <= np.log(table["std_band"])
    table["ok"] = (table["delta"].abs() <= table["tolerance"]) & table["std_ok"]
    table.insert(0, "config", config)
    table.insert(0, "model", model)
    return table.reset_index()


def format_table(table: pd.DataFrame) -> str:
    lines = [f"{'model':5s} {'config':16s} {'t':>4s}  {'mc-engine':>15s}  {'aihwkit':>15s}  "
             f"{'Δmean':>7s} {'tol':>6s} {'σ ratio':>7s} {'band':>11s}  ok"]
    for r in table.itertuples():
        lines.append(f"{r.model:5s} {r.config:16s} {format_duration(r.t_inference_s):>4s}  "
                     f"{r.mean_ours:.4f} ± {r.std_ours:.4f}  {r.mean_aihwkit:.4f} ± "
                     f"{r.std_aihwkit:.4f}  {r.delta:+.4f} {r.tolerance:.4f} {r.std_ratio:7.2f} "
                     f"{1 / r.std_band:5.2f}–{r.std_band:<5.2f}  "
                     f"{'yes' if r.ok else 'NO'}")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m mc_engine.bench fidelity")
    parser.add_argument("--independent", action="store_true",
                        help="also show the effect of pair_drift = 'independent'")
    parser.add_argument("--workers", type=int, default=None)
    args = parser.parse_args(argv)
    reference = pd.read_csv(AIHWKIT_DIR / "digits_public.csv")
    extra = ["--workers", str(args.workers)] if args.workers else []
    tables, variants = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for path in study_files():
            model, config = cell_of(path)
            ours = run_study(path, Path(tmp), extra)
            tables.append(compare(ours, reference, model, config))
            if args.independent:
                other = run_study(path, Path(tmp), extra, 'pair_drift = "independent"')
                a = ours.groupby("t_inference_s")["accuracy"].mean()
                b = other.groupby("t_inference_s")["accuracy"].mean()
                variants.append(pd.DataFrame({"model": model, "config": config,
                                              "net": a, "independent": b,
                                              "difference": b - a}).reset_index())
    table = pd.concat(tables, ignore_index=True)
    print("Digits accuracy, mc-engine (100 trials, mc-engine run) vs aihwkit 1.2.0 (100 trials)")
    print(format_table(table))
    print(f"{int(table['ok'].sum())}/{len(table)} cells agree "
          f"(|Δmean| <= 3·SE + {MARGIN}, |ln σ ratio| <= {STD_SE:g}·SE)")
    if variants:
        print("\npair_drift = 'independent' vs the default 'net' (mean accuracy)")
        print(pd.concat(variants, ignore_index=True).to_string(index=False, float_format="%.4f"))
    return 0 if table["ok"].all() else 1
