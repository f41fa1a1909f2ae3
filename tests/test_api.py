"""The Python API, mc_engine.run_study: a study file or a dict of its tables, a model and test
set given as objects (fingerprinted, so resume and point ids work), the same validation."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

import mc_engine
from mc_engine.data import digits_split
from mc_engine.errors import UserInputError
from mc_engine.zoo import load_model

TABLES = {
    "study": {"name": "api", "seed": 5, "repeats": 2, "inference_times": ["0s", "1d"]},
    "hardware": {"out_noise": 0.05},
    "sweep": {"adc_bits": [6, 8]},
}
MODEL = {"zoo": "digits_mlp"}
DATA = {"dataset": "digits", "limit": 120}


def comparable(df: pd.DataFrame) -> pd.DataFrame:
    return df.drop(columns=["wall_s"]).sort_values(["point_id", "repeat", "t_inference_s"]) \
        .reset_index(drop=True)


@pytest.fixture(scope="module")
def objects(cache_dir):
    """The zoo model (trained once into the session's cache) and the digits test arrays that
    the MODEL and DATA tables load."""
    model = load_model(MODEL, cache_dir, "api", cache_dir)
    split = digits_split()
    return model, (split["x_test"][:120], split["y_test"][:120])


def test_in_memory_model_and_data_give_the_rows_of_the_tables(objects, warm_cluster, tmp_path,
                                                              cache_dir):
    """The same network and test set, once as tables and once as objects: the same point ids,
    seeds and rows bit for bit, and a second call resumes (fingerprint of the objects)."""
    model, data = objects
    (tmp_path / "t" / ".cache").mkdir(parents=True)
    for f in cache_dir.iterdir():               # the trained zoo model, as in a study's cache
        (tmp_path / "t" / ".cache" / f.name).symlink_to(f)
    tables = mc_engine.run_study({**TABLES, "model": MODEL, "data": DATA}, out=tmp_path / "t",
                                 scheduler=warm_cluster, progress=False)
    memory = mc_engine.run_study(TABLES, model=model, data=data, out=tmp_path / "m",
                                 scheduler=warm_cluster, progress=False)
    assert len(memory) == 2 * 2 * 2 and memory["accuracy"].between(0, 1).all()
    pd.testing.assert_frame_equal(comparable(tables), comparable(memory))
    again = mc_engine.run_study(TABLES, model=model, data=data, out=tmp_path / "m",
                                scheduler=warm_cluster, progress=False)
    pd.testing.assert_frame_equal(memory, again)     # resumed: nothing run, the same rows
    # Other weights under the same class name: refused by the fingerprint, unless fresh.
    changed = load_model(MODEL, cache_dir, "api", cache_dir)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in changed.parameters():
            p.add_(0.5 * torch.randn(p.shape, generator=generator))
    with pytest.raises(UserInputError, match="model differs"):
        mc_engine.run_study(TABLES, model=changed, data=data, out=tmp_path / "m",
                            scheduler=warm_cluster, progress=False)
    fresh = mc_engine.run_study(TABLES, model=changed, data=data, out=tmp_path / "m",
                                scheduler=warm_cluster, progress=False, fresh=True)
    assert len(fresh) == 8 and (comparable(fresh)["n_correct"] !=
                                comparable(memory)["n_correct"]).any()


def test_a_study_file_with_an_in_memory_model(objects, warm_cluster, tmp_path):
    model, _ = objects
    path = tmp_path / "s.toml"
    path.write_text('[study]\nname = "file"\nseed = 1\nrepeats = 1\ninference_times = ["0s"]\n'
                    '[data]\ndataset = "digits"\nlimit = 50\n')
    df = mc_engine.run_study(path, model=model, out=tmp_path / "r", scheduler=warm_cluster,
                             progress=False)
    assert len(df) == 1 and df["n_samples"].iloc[0] == 50
    study_toml = (tmp_path / "r" / "file" / "study.toml").read_text()
    assert 'in_memory = "Sequential"' in study_toml and "fingerprint" in study_toml


@pytest.mark.parametrize("kwargs, key, fragment", [
    ({"study": {**TABLES, "model": MODEL}, "model": "net"}, "model", "nn.Module"),
    ({"study": {**TABLES, "model": MODEL}, "model": torch.nn.Linear(64, 10)}, "model",
     "given twice"),
    ({"study": {**TABLES, "model": MODEL}, "data": [1, 2, 3]}, "data", "(x_test, y_test)"),
    ({"study": {**TABLES, "model": MODEL}, "data": ([[1.0]], [0, 1])}, "data",
     "same number"),
    ({"study": {**TABLES, "data": DATA}, "model": torch.nn.Linear(3, 10)}, "model",
     "cannot process"),
    ({"study": {**TABLES, "study": {"name": "x"}, "data": DATA},
      "model": torch.nn.Linear(64, 10)}, "study.seed", "missing"),
    ({"study": dict(TABLES)}, "model", "missing the [model] table"),
    ({"study": 42}, "study", "study file path or a dict"),
])
def test_bad_api_input_is_one_user_input_error(tmp_path, kwargs, key, fragment):
    study = kwargs.pop("study")
    with pytest.raises(UserInputError) as err:
        mc_engine.run_study(study, out=tmp_path, progress=False, **kwargs)
    assert err.value.key == key and fragment in str(err.value)


def test_calibrated_ranges_need_a_data_table(objects, tmp_path):
    model, data = objects
    tables = {**TABLES, "hardware": {"adc_range": "calibrated", "bound_management": "none"},
              "sweep": {}}
    with pytest.raises(UserInputError) as err:
        mc_engine.run_study(tables, model=model, data=data, out=tmp_path, progress=False)
    assert err.value.key == "hardware.adc_range"
