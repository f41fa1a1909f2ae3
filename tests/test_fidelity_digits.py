"""Digits accuracy distributions against aihwkit 1.2.0, through `mc-engine run`.

Each configuration is a study file in tests/data/aihwkit/ (100 repeats, 0 s / 1 h / 1 d / 1 y);
the same comparison prints as a table with `python -m mc_engine.bench fidelity`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mc_engine.bench.fidelity import (
    AIHWKIT_DIR,
    STD_SE,
    cell_of,
    compare,
    format_table,
    log_std_se,
    run_study,
    study_files,
)

REFERENCE = pd.read_csv(AIHWKIT_DIR / "digits_public.csv")


def test_every_reference_configuration_has_a_study_file():
    cells = {cell_of(p) for p in study_files()}
    assert cells == set(REFERENCE[["model", "config"]].itertuples(index=False, name=None))


@pytest.mark.slow
@pytest.mark.parametrize("path", study_files(), ids=lambda p: p.stem)
def test_digits_accuracy_distribution_matches_aihwkit(path, tmp_path):
    ours = run_study(path, tmp_path)
    assert ours.groupby("t_inference_s").size().eq(100).all()
    table = compare(ours, REFERENCE, *cell_of(path))
    assert len(table) == 4 and not table.isna().any().any(), format_table(table)
    # |Δmean| <= 3·sqrt(s1²/n1 + s2²/n2) + 0.003 (the reference's own criterion: 3 standard
    # errors of the difference, plus 0.3 points for the discreteness of 899-sample accuracies)
    # and |ln(s_ours/s_aihwkit)| <= 4·se with se = sqrt((κ-1)/(4(n1-1)) + (κ-1)/(4(n2-1))),
    # κ the pooled kurtosis of both samples floored at 3: at κ = 3 and n1 = n2 = 100 the
    # normal-theory sqrt(1/(2·99) + 1/(2·99)) = 0.10, a band of 0.67-1.49; cells with κ ≈ 9-11
    # (a few bad chips) get about 0.45-2.2 to 0.4-2.5. Bootstrapping each reference cell against
    # itself gives the delta-method se within 5 % and a false-alarm probability of ~2e-3 over
    # all 24 cells (with normal theory alone: 8 %).
    assert table["ok"].all(), "\n" + format_table(table)
    assert table["std_ok"].all()


def test_log_std_error_is_normal_theory_for_normal_tails():
    assert log_std_se(100, 100) == pytest.approx(np.sqrt(1 / (2 * 99) + 1 / (2 * 99)))
    assert log_std_se(100, 100, 2.0) == log_std_se(100, 100)       # never narrower
    assert log_std_se(100, 100, 9.0) == pytest.approx(2 * log_std_se(100, 100))


def sample_kurtosis(a: np.ndarray) -> np.ndarray:
    d = a - a.mean(1, keepdims=True)
    return (d**4).mean(1) / (d**2).mean(1) ** 2


@pytest.mark.parametrize("law", ["normal", "laplace"])
def test_log_std_ratio_band_has_its_coverage(law):
    """Two samples of 100 from one distribution, 20 000 times, with the pooled kurtosis of
    compare(). |ln(s1/s2)| > 2·se must happen about as often as |z| > 2 for a normal z
    (4.55 %; binomial standard error of the rate 0.15 %, the band 3.3-7.5 % allows for the
    delta method and the noise of the kurtosis estimate, which runs low for heavy tails), and
    beyond the 4·se of the verdict rarely: measured 3e-5 (normal) and 5e-4 (Laplace, κ = 6) at
    1e5 pairs. For Laplace tails normal theory alone understates se by ~1.6x and crosses 4·se
    ~1 % of the time."""
    rng = np.random.default_rng(12)
    draw = rng.standard_normal if law == "normal" else rng.laplace
    a, b = draw(size=(20_000, 100)), draw(size=(20_000, 100))
    ratio = np.abs(np.log(a.std(1, ddof=1) / b.std(1, ddof=1)))
    se = log_std_se(100, 100, (sample_kurtosis(a) + sample_kurtosis(b)) / 2)
    assert 0.033 < np.mean(ratio > 2 * se) < 0.075
    assert np.mean(ratio > STD_SE * se) < 0.002
    if law == "laplace":       # the normal-theory band alone would reject far too often
        assert np.mean(ratio > STD_SE * log_std_se(100, 100)) > 0.006


def scaled(reference: pd.DataFrame, factor: float) -> pd.DataFrame:
    """The reference trials with every cell's deviations from its mean scaled by ``factor``."""
    out = reference.copy()
    cell = out.groupby(["model", "config", "t_inference_s"])["accuracy"]
    out["accuracy"] = cell.transform("mean") + factor * (out["accuracy"] - cell.transform("mean"))
    return out


def spread_verdicts(factor: float) -> pd.DataFrame:
    ours = scaled(REFERENCE, factor)
    return pd.concat([compare(ours[(ours.model == m) & (ours.config == c)], REFERENCE, m, c)
                      for m, c in sorted(set(zip(REFERENCE.model, REFERENCE.config)))])


def test_spread_verdict_accepts_the_reference_and_rejects_a_wrong_spread():
    """The verdict of every (model, config, time) cell with the reference's own trials as
    "ours" (ratio 1), and with their spread scaled."""
    same = spread_verdicts(1.0)
    assert same["std_ok"].all() and same["ok"].all() and (same["std_ratio"] == 1).all()
    # the band derived from the cells' own sizes and tails: ~1.5 for normal-like cells, at most
    # ~2.2 for the heaviest-tailed one (kurtosis is scale-free: scaling keeps the band)
    assert same["std_band"].min() == pytest.approx(np.exp(STD_SE * log_std_se(100, 100)))
    assert same["std_band"].max() < 2.5
    normal_like = (same["kurtosis"] <= 3.5).to_numpy()      # band <= 1.57
    assert normal_like.sum() >= 12
    for factor in (0.6, 1.6):           # the old fixed band's edges: wrong by 40-60 %
        verdict = spread_verdicts(factor)
        assert not verdict["std_ok"].to_numpy()[normal_like].any(), factor
        assert not verdict["ok"].to_numpy()[normal_like].any(), factor
    for factor in (0.4, 2.5):           # clearly wrong: rejected in every cell
        assert not spread_verdicts(factor)["std_ok"].any(), factor
