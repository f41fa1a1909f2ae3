"""Digits accuracy distributions against aihwkit 1.2.0, through `mc-engine run`.

Each configuration is a study file in tests/data/aihwkit/ (100 repeats, 0 s / 1 h / 1 d / 1 y);
the same comparison prints as a table with `python -m mc_engine.bench fidelity`.
"""

from __future__ import annotations

import pandas as pd
import pytest

from mc_engine.bench.fidelity import (
    AIHWKIT_DIR,
    STD_RATIO,
    cell_of,
    compare,
    format_table,
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
    # and a std ratio within 0.6-1.6 (the 95 % range of the ratio of two 100-sample stds is
    # about 0.75-1.32, so a real change of spread beyond ~1.6x fails).
    assert table["ok"].all(), "\n" + format_table(table)
    assert table["std_ratio"].between(*STD_RATIO).all()
