"""Digits accuracy distributions: mc-engine beside aihwkit 1.2.0, cell by cell.

Runs every study file in tests/data/aihwkit/ through `mc-engine run` (the product path, not a
private one), then compares each (model, config, time) cell with aihwkit's 100 trials:
|Δmean| <= 3·sqrt(s1²/n1 + s2²/n2) + 0.003 and std ratio within 0.6–1.6. With
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
STD_RATIO = (0.6, 1.6)
MARGIN = 0.003


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


def compare(ours: pd.DataFrame, reference: pd.DataFrame, model: str, config: str) -> pd.DataFrame:
    """One row per time: both means/stds, the allowed |Δmean|, the std ratio and a verdict."""
    ref = reference[(reference["model"] == model) & (reference["config"] == config)]
    a = ours.groupby("t_inference_s")["accuracy"].agg(["mean", "std", "count"])
    b = ref.groupby("t_inference_s")["accuracy"].agg(["mean", "std", "count"])
    table = a.merge(b, left_index=True, right_index=True, how="outer",
                    suffixes=("_ours", "_aihwkit"))
    table["delta"] = table["mean_ours"] - table["mean_aihwkit"]
    table["tolerance"] = 3 * np.sqrt(table["std_ours"] ** 2 / table["count_ours"]
                                     + table["std_aihwkit"] ** 2 / table["count_aihwkit"]) + MARGIN
    table["std_ratio"] = table["std_ours"] / table["std_aihwkit"]
    table["ok"] = (table["delta"].abs() <= table["tolerance"]) & \
        table["std_ratio"].between(*STD_RATIO)
    table.insert(0, "config", config)
    table.insert(0, "model", model)
    return table.reset_index()


def format_table(table: pd.DataFrame) -> str:
    lines = [f"{'model':5s} {'config':16s} {'t':>4s}  {'mc-engine':>15s}  {'aihwkit':>15s}  "
             f"{'Δmean':>7s} {'tol':>6s} {'σ ratio':>7s}  ok"]
    for r in table.itertuples():
        lines.append(f"{r.model:5s} {r.config:16s} {format_duration(r.t_inference_s):>4s}  "
                     f"{r.mean_ours:.4f} ± {r.std_ours:.4f}  {r.mean_aihwkit:.4f} ± "
                     f"{r.std_aihwkit:.4f}  {r.delta:+.4f} {r.tolerance:.4f} {r.std_ratio:7.2f}  "
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
          f"(|Δmean| <= 3·SE + {MARGIN}, σ ratio in {STD_RATIO[0]}–{STD_RATIO[1]})")
    if variants:
        print("\npair_drift = 'independent' vs the default 'net' (mean accuracy)")
        print(pd.concat(variants, ignore_index=True).to_string(index=False, float_format="%.4f"))
    return 0 if table["ok"].all() else 1
