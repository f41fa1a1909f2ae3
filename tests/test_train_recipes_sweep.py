"""The recipe keys' checks (one UserInputError naming the key), the recipe sweep of a train file
(names, inert keys, bitwise the checkpoints of each point alone), the study's checkpoint axis by
pattern or folder, and the ranking of checkpoints against a baseline."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from mc_engine.cli import main
from mc_engine.errors import UserInputError
from mc_engine.results.ranking import rank_checkpoints
from mc_engine.study import parse_study
from mc_engine.train import parse_train
from mc_engine.train.recipes import ASAM_RHO, check_inputs
from mc_engine.train.sweep import parse_points


def doc(train=None, noise=None, sweep=None):
    out = {"train": {"name": "r", **(train or {})}, "model": {"zoo": "digits_mlp"},
           "data": {"dataset": "digits"}}
    if noise is not None:
        out["noise"] = noise
    if sweep is not None:
        out["sweep"] = sweep
    return out


def refused(d, key, *words):
    with pytest.raises(UserInputError) as err:
        parse_points(d, source="f.toml")
    assert err.value.key == key, str(err.value)
    for word in words:
        assert word in str(err.value), str(err.value)
    return str(err.value)


def test_recipe_keys_parse():
    spec = parse_train(doc({"optimizer": "sam", "sam_adaptive": True, "sam_base": "sgd",
                            "momentum": 0.5, "adversarial": "pgd", "adv_steps": 3,
                            "average": "swa", "swa_start": 5}, {"act_noise": [0.1, 0.2]}))
    r = spec.recipe
    assert r.sam and r.sam_adaptive and r.sam_rho == ASAM_RHO and r.sam_base == "sgd"
    assert (r.adversarial, r.adv_steps, r.average, r.swa_start) == ("pgd", 3, "swa", 5)
    assert spec.noise.act_noise == (0.1, 0.2) and spec.noise.active
    assert parse_train(doc({"awp_gamma": 0.01})).recipe.awp_gamma == 0.01


@pytest.mark.parametrize("train,noise,key,words", [
    ({"sam_rho": 0.1}, None, "train.sam_rho", ["optimizer = 'sam'"]),
    ({"optimizer": "sam", "momentum": 0.9}, None, "train.momentum", ["sam_base = 'sgd'"]),
    ({"adversarial": "fgsm", "adv_steps": 3}, None, "train.adv_steps", ["'pgd'"]),
    ({"adv_eps": 0.1}, None, "train.adv_eps", ["'fgsm' or 'pgd'"]),
    ({"swa_start": 2}, None, "train.swa_start", ["average = 'swa'"]),
    ({"average": "swa", "swa_start": 11}, None, "train.swa_start", ["<= 10"]),
    ({"adversarial": "pgd", "adv_weight": 1.5}, None, "train.adv_weight", ["(0, 1]"]),
    ({"optimizer": "sam", "awp_gamma": 0.01}, None, "train.awp_gamma", ["choose one"]),
    ({"optimizer": "lion"}, None, "train.optimizer", ["'sam'"]),
    ({"adversarial": "cw"}, None, "train.adversarial", ["'fgsm'", "'pgd'"]),
    ({"sam_adaptive": 1, "optimizer": "sam"}, None, "train.sam_adaptive", ["true"]),
    ({}, {"act_noise": -0.1}, "noise.act_noise", [">= 0"]),
    ({}, {"act_noise": []}, "noise.act_noise", ["empty list"]),
    ({}, {"act_noise": [0.1, 0.2], "weight_noise": [0.1, 0.2, 0.3]}, "noise.act_noise",
     ["as many of each"]),
    ({"batch_size": 2}, {"act_noise": [0.1, 0.2, 0.3]}, "noise.act_noise", ["at most 2"]),
])
def test_recipe_keys_refused_by_name(train, noise, key, words):
    refused(doc(train, noise), key, *words)


@pytest.mark.parametrize("train", [{"optimizer": "sam"}, {"adversarial": "fgsm"},
                                   {"awp_gamma": 0.01}])
def test_recipes_with_extra_passes_refuse_learned_ranges(train):
    """Learned input ranges count every forward pass as an init-from-data batch and train along
    aihwkit's rule: SAM, adversarial inputs and AWP are refused with them, before training."""
    key = "train." + ("optimizer" if "optimizer" in train else next(iter(train)))
    refused(doc(train, {"input_range": "learn", "adc_bits": 8}), key, "input ranges")


def test_adversarial_refuses_integer_inputs():
    with pytest.raises(UserInputError, match="train.adversarial.*ids"):
        check_inputs(parse_train(doc({"adversarial": "fgsm"})).recipe,
                     torch.zeros((1, 4), dtype=torch.long), "f.toml")


ZIP = {"label": ["plain", "sam", "asam"], "optimizer": ["adam", "sam", "sam"],
       "sam_adaptive": [False, False, True]}


def test_sweep_points_are_named_and_checked():
    points = parse_points(doc({"epochs": 2}, sweep={"zip": [ZIP]}))
    assert [p.name for p in points] == ["r__plain", "r__sam", "r__asam"]
    assert [p.recipe.sam_adaptive for p in points] == [False, False, True]
    assert points[0].tables["train"]["sam_adaptive"] is False       # inert there: accepted
    grid = parse_points(doc(sweep={"weight_noise": [0.1, [0.1, 0.3]], "act_noise": [0.0, 0.2]}))
    assert [p.name for p in grid] == ["r__weight_noise-0.1__act_noise-0",
                                      "r__weight_noise-0.1__act_noise-0.2",
                                      "r__weight_noise-0.1_0.3__act_noise-0",
                                      "r__weight_noise-0.1_0.3__act_noise-0.2"]
    assert grid[3].noise.weight_noise == (0.1, 0.3) and grid[3].noise.act_noise == (0.2,)


@pytest.mark.parametrize("sweep,key,words", [
    ({"seed": [0, 1]}, "sweep.seed", ["same initial weights"]),
    ({"colour": [1]}, "sweep.colour", ["unknown key"]),
    ({"optimizer": "sam"}, "sweep.optimizer", ["list"]),
    ({"optimizer": []}, "sweep.optimizer", ["empty"]),
    ({"zip": [{"optimizer": ["adam", "sam"], "sam_rho": [0.1]}]}, "sweep.zip[0].sam_rho",
     ["same length"]),
    ({"optimizer": ["adam", "sgd"], "sam_rho": [0.1, 0.2]}, "sweep.sam_rho",
     ["every point"]),
    ({"optimizer": ["adam", "nadam"]}, "sweep.optimizer", ["sweep point"]),
    ({"label": ["a", "a"]}, "sweep", ["label"]),
    ({"label": ["a b"]}, "sweep.label", ["names"]),
])
def test_sweep_refused_by_name(sweep, key, words):
    refused(doc(sweep=sweep), key, *words)


def test_sweep_inert_base_key_at_every_point_is_refused():
    refused(doc({"sam_rho": 0.1}, sweep={"adversarial": ["none", "fgsm"]}), "train.sam_rho",
            "every point")


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


TRAIN = '''[train]
name = "{name}"
seed = 4
epochs = 2
batch_size = 64
{extra}
[model]
zoo = "digits_mlp"
[data]
dataset = "digits"
limit = 200
'''


def test_sweep_checkpoints_are_those_of_each_point_alone(tmp_path, capsys):
    """mc-engine train of a [sweep]: one checkpoint per point, listed at the end, bitwise the
    weights (and sidecar fingerprint) of training that point from its own train file."""
    sweep = TRAIN.format(name="rs", extra="") + \
        '[[sweep.zip]]\nlabel = ["plain", "sam"]\noptimizer = ["adam", "sam"]\n'
    assert main(["train", str(write(tmp_path / "s.toml", sweep)), "--out",
                 str(tmp_path / "a")]) == 0
    printed = capsys.readouterr().out
    assert "2 checkpoints, one per sweep point:" in printed
    assert str(tmp_path / "a" / "rs__sam.pt") in printed.splitlines()[-1]
    for label, extra in (("plain", ""), ("sam", 'optimizer = "sam"')):
        alone = write(tmp_path / f"{label}.toml", TRAIN.format(name=f"rs__{label}", extra=extra))
        assert main(["train", str(alone), "--out", str(tmp_path / "b")]) == 0
        got, want = (torch.load(tmp_path / d / f"rs__{label}.pt", weights_only=True)
                     for d in ("a", "b"))
        assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in got)
        sides = [json.loads((tmp_path / d / f"rs__{label}.json").read_text()) for d in "ab"]
        assert sides[0]["fingerprint"] == sides[1]["fingerprint"]
    first = torch.load(tmp_path / "a" / "rs__plain.pt", weights_only=True)
    other = torch.load(tmp_path / "a" / "rs__sam.pt", weights_only=True)
    assert not torch.equal(first["0.weight"], other["0.weight"])
    # A second run is refused before any point trains (the checkpoints exist).
    assert main(["train", str(tmp_path / "s.toml"), "--out", str(tmp_path / "a")]) == 2
    assert "rs__plain.pt already exists" in capsys.readouterr().err


def study_doc(checkpoint):
    return {"study": {"name": "s", "seed": 1, "repeats": 2, "inference_times": ["0s"]},
            "model": {"zoo": "digits_mlp"}, "data": {"dataset": "digits"},
            "hardware": {"device": "pcm"}, "sweep": {"checkpoint": checkpoint}}


def test_study_checkpoint_axis_by_pattern_and_folder(tmp_path):
    folder = tmp_path / "ck"
    folder.mkdir()
    for name in ("r__sam.pt", "r__plain.pt", "r__asam.pt", "notes.txt"):
        (folder / name).write_bytes(b"")
    study = parse_study(study_doc(["ck/r__plain.pt", "ck/r__*.pt"]), base_dir=tmp_path)
    assert study.checkpoints == ("ck/r__plain.pt", "ck/r__asam.pt", "ck/r__sam.pt")
    assert parse_study(study_doc("ck"), base_dir=tmp_path).checkpoints == \
        ("ck/r__asam.pt", "ck/r__plain.pt", "ck/r__sam.pt")
    with pytest.raises(UserInputError, match="sweep.checkpoint.*list"):   # one plain path
        parse_study(study_doc("ck/r__plain.pt"), base_dir=tmp_path)
    with pytest.raises(UserInputError, match="sweep.checkpoint.*matches no checkpoint"):
        parse_study(study_doc("ck/x__*.pt"), base_dir=tmp_path)
    with pytest.raises(UserInputError, match="sweep.checkpoint.*no checkpoint"):
        parse_study(study_doc(str(tmp_path)), base_dir=tmp_path)


def test_ranking_against_the_baseline_is_the_paired_mean():
    """Synthetic results: the ranking's diff_mean is the mean of per-repeat differences (by
    hand), ranks go by it, per hardware point."""
    rng = np.random.default_rng(0)
    rows = []
    chip = rng.normal(0.8, 0.05, 20)
    for out_noise in (0.06, 0.1):
        for ck, gain in (("plain.pt", 0.0), ("a.pt", 0.02), ("b.pt", -0.01)):
            for r in range(20):
                rows.append({"study": "s", "point_id": f"{ck}{out_noise}", "checkpoint": ck,
                             "out_noise": out_noise, "repeat": r, "seed": 100 + r,
                             "t_inference_s": 0.0,
                             "accuracy": chip[r] + gain * (1 + out_noise) + rng.normal(0, 0.004)})
    df = pd.DataFrame(rows)
    ranking = rank_checkpoints(df, "plain.pt")
    assert list(ranking["checkpoint"]) == ["a.pt", "b.pt", "a.pt", "b.pt"]
    assert list(ranking["rank"]) == [1, 2, 1, 2]
    sel = df[df.out_noise == 0.1]
    hand = (sel[sel.checkpoint == "b.pt"]["accuracy"].to_numpy()
            - sel[sel.checkpoint == "plain.pt"]["accuracy"].to_numpy()).mean()
    assert ranking.iloc[3]["diff_mean"] == pytest.approx(hand, abs=1e-12)
    assert ranking.iloc[3]["diff_ci95_lo"] < hand < ranking.iloc[3]["diff_ci95_hi"]
    with pytest.raises(UserInputError, match="no checkpoint 'c.pt'"):
        rank_checkpoints(df, "c.pt")
