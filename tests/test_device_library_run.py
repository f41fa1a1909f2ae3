"""The device library from study files, through the runner: the measured devices swept as
``device`` values with their own defaults, the converters swept as ``g_converter``, and the
table device with its table beside the study, on Dask workers that have no copy of the table."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from mc_engine.errors import UserInputError
from mc_engine.results import load_results
from mc_engine.run import run_study
from mc_engine.study import load_study

EXAMPLES = Path(__file__).parents[1] / "docs" / "examples"

DEVICES_STUDY = """
[study]
name = "library"
seed = 5
repeats = 1
inference_times = ["1s", "1d"]

[model]
zoo = "digits_mlp"

[data]
dataset = "digits"
limit = 120

[sweep]
device = ["pcm", "hermes", "reram_wan2022", "reram_cmo"]
"""

CONVERTERS_STUDY = DEVICES_STUDY.replace('name = "library"', 'name = "converters"').replace(
    'device = ["pcm", "hermes", "reram_wan2022", "reram_cmo"]',
    'g_converter = ["single_pair", "single_device", "dual_pair"]')


@pytest.fixture(scope="module")
def library(tmp_path_factory, warm_cluster, cache_dir):
    folder = tmp_path_factory.mktemp("library")
    frames = {}
    for name, text in (("devices", DEVICES_STUDY), ("converters", CONVERTERS_STUDY)):
        (folder / f"{name}.toml").write_text(text)
        outcome = run_study(load_study(folder / f"{name}.toml"), folder / "out",
                            scheduler=warm_cluster, progress=False, cache_dir=cache_dir)
        frames[name] = load_results(outcome.results_dir)
    return frames


def test_measured_devices_run_from_a_study_with_their_own_defaults(library):
    df = library["devices"]
    assert sorted(set(df.device)) == ["hermes", "pcm", "reram_cmo", "reram_wan2022"]
    first = df.groupby("device").first()
    assert first.g_max.to_dict() == {"hermes": 20.7, "pcm": 25.0, "reram_cmo": 88.2,
                                     "reram_wan2022": 25.0}
    assert first.g_converter["reram_cmo"] == "single_device"
    assert first.num_devices["hermes"] == 2.0 and np.isnan(first.num_devices["pcm"])
    assert first.acceptance_range["reram_cmo"] == 0.2
    # the digits MLP is ~96 % digital; every device holds it far above chance at 1 s
    assert (df[df.t_inference_s == 1.0].accuracy > 0.6).all()


def test_converters_are_swept_like_any_hardware_parameter(library):
    df = library["converters"]
    assert sorted(set(df.g_converter)) == ["dual_pair", "single_device", "single_pair"]
    assert (df.dual_pair_f == 3.0).all() and (df[df.t_inference_s == 1.0].accuracy > 0.6).all()


def test_the_table_example_study_runs_on_workers_without_the_table(tmp_path, warm_cluster,
                                                                    cache_dir):
    folder = tmp_path / "study"
    folder.mkdir()
    shutil.copy(EXAMPLES / "neurram_levels.csv", folder)
    text = (EXAMPLES / "table_study.toml").read_text().replace("repeats = 8", "repeats = 1")
    (folder / "study.toml").write_text(text.replace('dataset = "digits"',
                                                    'dataset = "digits"\nlimit = 120'))
    outcome = run_study(load_study(folder / "study.toml"), tmp_path / "out",
                        scheduler=warm_cluster, progress=False, cache_dir=cache_dir)
    assert outcome.n_run == 2
    df = load_results(outcome.results_dir)
    assert set(df.device_table) == {"neurram_levels.csv"} and set(df.g_max) == {40.0}
    assert sorted(set(df.t_inference_s)) == [1.0, 3600.0, 86400.0, 172800.0]
    assert (df.accuracy > 0.5).all()
    again = run_study(load_study(folder / "study.toml"), tmp_path / "out",
                      scheduler=warm_cluster, progress=False, cache_dir=cache_dir)
    assert (again.n_run, again.n_skipped) == (0, 2)
    table = folder / "neurram_levels.csv"
    table.write_text(table.read_text().replace("40,1,40,1.103000", "40,1,39.5,1.103000"))
    with pytest.raises(UserInputError, match=r"hardware.device_table: the device table "
                                             r"'neurram_levels.csv' differs from the one that "
                                             r"wrote the results .* the table file changed"):
        run_study(load_study(folder / "study.toml"), tmp_path / "out", scheduler=warm_cluster,
                  progress=False, cache_dir=cache_dir)
