"""`mc-engine train`: batches within epochs as plain lines in a log, and the checkpoint folder
resolved like every path in a file (relative to the file), a command-line --out relative to
where it is typed."""

from __future__ import annotations

import io
import math
import os
import re
from pathlib import Path

import pytest

from mc_engine.cli import main
from mc_engine.train import load_train
from mc_engine.train.progress import TrainProgress
from tests.test_train import write_train

STUDIES = Path(__file__).parent.parent / "studies"


def test_train_writes_plain_batch_lines_to_a_log(tmp_path, monkeypatch, capsys):
    """stderr is not a terminal under pytest: no bar redraws (no carriage return), a line per
    batch at interval 0, then one per epoch with the held-out accuracy."""
    monkeypatch.setenv("MC_ENGINE_PROGRESS_S", "0")
    path = write_train(tmp_path, "lines", epochs=2, noise="")
    assert main(["train", str(path), "--out", str(tmp_path / "ck")]) == 0
    err = capsys.readouterr().err
    assert "\r" not in err
    per_epoch = math.ceil(300 / 64)
    batch_lines = re.findall(r"^lines: epoch (\d)/2, batch (\d+)/(\d+), loss [0-9.]+, .* left$",
                             err, flags=re.M)
    assert [(int(e), int(b)) for e, b, _ in batch_lines] == \
        [(e, b) for e in (1, 2) for b in range(1, per_epoch + 1)]
    assert {int(n) for *_, n in batch_lines} == {per_epoch}
    assert len(re.findall(r"^lines: epoch \d/2, loss [0-9.]+, held-out accuracy [0-9.]+, ",
                          err, flags=re.M)) == 2


def test_train_progress_is_quiet_between_intervals():
    stream = io.StringIO()
    bar = TrainProgress("q", 2, 10, stream=stream, interval_s=3600.0)
    for index in range(10):
        bar.batch(0, index, 1.0)
    assert stream.getvalue() == ""
    bar.epoch(0, 1.0, 0.5)
    assert stream.getvalue().startswith("q: epoch 1/2, loss 1.0000, held-out accuracy 0.5000, ")
    bar.close()


def test_train_out_is_relative_to_the_train_file_and_the_option_to_cwd(tmp_path, monkeypatch):
    files = tmp_path / "recipes"
    files.mkdir()
    path = write_train(files, "rel", epochs=1, noise="",
                       extra='out = "../written"')
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert load_train(path).out == files / "../written"
    assert main(["train", str(path)]) == 0                  # [train] out, from the file
    assert (tmp_path / "written" / "rel.pt").is_file()
    assert not (elsewhere / "results").exists()
    assert main(["train", str(path), "--out", "here"]) == 0   # --out wins, relative to cwd
    assert (elsewhere / "here" / "rel.pt").is_file()
    plain = write_train(files, "plain", epochs=1, noise="")
    assert main(["train", str(plain)]) == 0                 # neither: results/checkpoints
    assert (elsewhere / "results" / "checkpoints" / "plain.pt").is_file()


@pytest.mark.parametrize("value", ['""', "3"])
def test_a_bad_train_out_is_one_line(tmp_path, capsys, value):
    path = write_train(tmp_path, "bad", epochs=1, noise="", extra=f"out = {value}")
    assert main(["train", str(path)]) == 2
    assert "train.out: expected the checkpoint folder" in capsys.readouterr().err


def test_every_study_template_has_a_train_file_writing_its_checkpoints():
    """Each checkpoint a shipped study names (relative to the study) is the <out>/<name>.pt of
    a shipped train file (its out relative to the train file): the two resolve alike."""
    import tomllib
    from fnmatch import fnmatch

    from mc_engine.train.sweep import load_points

    written = {}
    for train_file in STUDIES.glob("*.toml"):
        doc = tomllib.loads(train_file.read_text())
        if "train" not in doc:
            continue
        if "init" in doc["train"]:        # fine-tuning: its init need not exist yet
            names, out = [doc["train"]["name"]], STUDIES / doc["train"]["out"]
        else:                             # one point, or one per point of a recipe [sweep]
            points = load_points(train_file)
            names, out = [p.name for p in points], points[0].out
        for name in names:
            written[os.path.normpath(out / f"{name}.pt")] = train_file.name
    named = []
    for study_file in STUDIES.glob("*.toml"):
        doc = tomllib.loads(study_file.read_text())
        if "study" not in doc:
            continue
        ckpts = doc.get("model", {}).get("checkpoint", [])
        ckpts = [ckpts] if isinstance(ckpts, str) else list(ckpts)
        ckpts += list(doc.get("sweep", {}).get("checkpoint", []))
        named += [(study_file.name, os.path.normpath(STUDIES / c)) for c in ckpts]
    assert named, "the shipped studies name checkpoints"
    missing = [(s, c) for s, c in named if not any(fnmatch(w, c) for w in written)]
    assert not missing, f"checkpoints without a train file: {missing}"
