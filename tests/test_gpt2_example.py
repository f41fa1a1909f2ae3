"""The documented GPT-2 factory (docs/examples/gpt2_factory.py) with a random tiny config and
from a saved folder: it loads as a study model, converts and gives language-model rows."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from mc_engine.analog import analog_layer_names, evaluate_trial
from mc_engine.data import load_dataset
from mc_engine.hardware import HardwareConfig
from mc_engine.zoo import load_model

pytest.importorskip("transformers")
EXAMPLES = Path(__file__).parent.parent / "docs" / "examples"


def test_gpt2_factory_tiny_and_local_run_as_language_models(tmp_path):
    torch.manual_seed(0)
    model = load_model({"factory": "gpt2_factory:tiny"}, EXAMPLES, "study.toml", None)
    names = analog_layer_names(model)
    assert "lm.transformer.h.0.attn.c_attn" in names and "lm.lm_head" in names
    assert not any("wte" in n or "wpe" in n for n in names)          # embeddings digital
    data = load_dataset({"dataset": "pydocs", "seq_len": 16, "limit": 4}, tmp_path,
                        "study.toml", cache_dir=tmp_path)
    ideal = evaluate_trial(model, HardwareConfig(), data.x, data.y, [0.0], 1)[0]
    # random weights of std 0.02: scores near equal, perplexity within 10 % of uniform (128)
    assert abs(ideal["perplexity"] / 128 - 1) < 0.1
    row = evaluate_trial(model, HardwareConfig(device="pcm"), data.x, data.y, [3600.0], 1)[0]
    assert row["n_samples"] == 64 and math.isfinite(row["loss"])

    model.lm.save_pretrained(tmp_path / "gpt2")                      # local(): from a folder
    import gpt2_factory  # on sys.path since load_model imported it

    loaded = gpt2_factory.local(tmp_path / "gpt2")
    x = torch.from_numpy(data.x)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
