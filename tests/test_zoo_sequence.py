"""The attention and recurrent zoo models: they train, cache and reload, run through both
executions with the metrics of their task, and mc-engine train trains them (the noisy
forward of their layers is tested in test_train_sequence.py)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from mc_engine.analog import analog_layer_names, evaluate_trial
from mc_engine.analog.execution import Execution
from mc_engine.data import load_dataset
from mc_engine.data.pydocs import VOCAB, pydocs_tokens, python_version
from mc_engine.hardware import HardwareConfig
from mc_engine.train import load_train, train
from mc_engine.zoo import build, load_model
from mc_engine.zoo import train as zoo_train

STUDY = "study.toml"


@pytest.fixture()
def short_recipes(monkeypatch):
    """Few epochs and steps: these tests pin training and caching, not the final accuracy
    (measured in the zoo's docstrings and the studies)."""
    monkeypatch.setattr(zoo_train, "RECIPES", {"vit_digits": (2, 0.004),
                                               "lstm_digits": (3, 0.01)})


@pytest.fixture(scope="module")
def charlm_cache(tmp_path_factory) -> Path:
    """A cache holding a briefly trained charlm (and the pydocs corpus)."""
    folder = tmp_path_factory.mktemp("lmcache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(zoo_train, "CHARLM_STEPS", 40)
        load_model({"zoo": "charlm"}, folder, STUDY, folder)
    return folder


@pytest.mark.parametrize("name", ["vit_digits", "lstm_digits"])
def test_digit_sequence_models_train_cache_and_reload_bitwise(tmp_path, short_recipes, name):
    model = load_model({"zoo": name}, tmp_path, STUDY, tmp_path)
    assert (tmp_path / f"{name}.pt").is_file()
    again = load_model({"zoo": name}, tmp_path, STUDY, tmp_path)     # from the cache
    for (k, a), b in zip(model.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), k
    data = load_dataset({}, tmp_path, STUDY)
    with torch.no_grad():
        acc = (model(torch.from_numpy(data.x)).argmax(1).numpy() == data.y).mean()
    assert acc > 0.2   # chance: 0.1 +- 0.01 over 899 images; a few epochs learn well past it
    names = analog_layer_names(model)
    assert ("blocks.0.attn.in_proj" in names) == (name == "vit_digits")
    assert ("lstm.l0.hh" in names) == (name == "lstm_digits")


def test_charlm_trains_below_uniform_perplexity_and_caches(charlm_cache):
    model = load_model({"zoo": "charlm"}, charlm_cache, STUDY, charlm_cache)
    assert (charlm_cache / "charlm.pt").is_file()
    assert (charlm_cache / f"pydocs-py{python_version()}.npz").is_file()
    test = torch.from_numpy(pydocs_tokens("test", 64, charlm_cache)[:64])
    with torch.no_grad():
        scores = model(test[:, :-1])
        loss = nn.functional.cross_entropy(scores.reshape(-1, VOCAB), test[:, 1:].reshape(-1))
    # 40 steps: far below uniform's log(128) = 4.85 nats (the full recipe reaches ~2.2)
    assert scores.shape == (64, 64, VOCAB) and float(loss) < math.log(VOCAB) - 1.0
    names = analog_layer_names(model)
    assert {"blocks.1.attn.in_proj", "blocks.1.attn.out_proj", "blocks.1.mlp.0",
            "head"} <= set(names)
    assert not any(n.startswith(("tok", "pos")) for n in names)       # embeddings digital


def test_charlm_rows_have_perplexity_equal_across_executions(charlm_cache):
    model = load_model({"zoo": "charlm"}, charlm_cache, STUDY, charlm_cache)
    data = load_dataset({"dataset": "pydocs", "seq_len": 12, "limit": 6}, charlm_cache, STUDY,
                        cache_dir=charlm_cache)
    hw = HardwareConfig(device="pcm", adc_bits=8, dac_bits=8)
    rows = [evaluate_trial(model, hw, data.x, data.y, [1.0, 3.15e7], 5, execution=ex)
            for ex in (Execution(), Execution("torch", "cpu"))]
    assert rows[0] == [{**r, "wall_s": a["wall_s"]} for r, a in zip(rows[1], rows[0])]
    for row in rows[0]:
        assert row["n_samples"] == 6 * 12
        assert row["perplexity"] == pytest.approx(math.exp(row["loss"]), rel=1e-12)


def test_mc_engine_train_trains_charlm_hardware_aware(tmp_path):
    path = tmp_path / "lm.toml"
    path.write_text('[train]\nname = "lm"\nepochs = 2\nbatch_size = 16\nlr = 0.005\n'
                    '[model]\nzoo = "charlm"\n'
                    '[data]\ndataset = "pydocs"\nseq_len = 16\nlimit = 96\n'
                    '[noise]\nweight_noise = 0.05\nadc_bits = 8\n')
    outcome = train(load_train(path), tmp_path / "out", progress=False)
    side = json.loads(outcome.sidecar.read_text())
    first, last = side["history"][0], side["history"][-1]
    assert side["held_out"]["n_samples"] == 96 and last["loss"] < first["loss"]
    assert 0 < outcome.held_out_accuracy < 1          # next-token accuracy over all tokens
    model = load_model({"zoo": "charlm", "checkpoint": str(outcome.checkpoint)}, tmp_path,
                       STUDY, None)
    assert isinstance(model, type(build("charlm")))
