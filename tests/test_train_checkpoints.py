"""mc-engine train never loses a checkpoint: no overwrite without --fresh, one training of a
name at a time, a stopped re-run keeps the finished file, the sidecar always fingerprints the
weights beside it, and diverging weights are an error naming train.lr instead of a NaN file."""

from __future__ import annotations

import hashlib
import json
import math
import os
import signal
import sys
from pathlib import Path

import pytest
import torch

from mc_engine.cli import main
from mc_engine.data import load_dataset
from mc_engine.errors import UserInputError
from mc_engine.fileio import file_lock
from mc_engine.study.inputs import fingerprint
from mc_engine.train import load_train, train
from tests.test_train import write_train

PER_EPOCH = math.ceil(300 / 64)   # batches per epoch of write_train's data (300 samples, 64)

#: A factory model that calls ``ACTION`` at the ``AT``-th training forward: raise
#: KeyboardInterrupt, send this process SIGTERM, or nothing (AT = 0).
STOPPER = """
import os, signal
from torch import nn

AT, ACTION = {at}, "{action}"

class Stopper(nn.Module):
    calls = 0
    def forward(self, x):
        if self.training:
            Stopper.calls += 1
            if Stopper.calls == AT:
                if ACTION == "interrupt":
                    raise KeyboardInterrupt
                os.kill(os.getpid(), signal.SIGTERM)
        return x

def net():
    return nn.Sequential(nn.Linear(64, 16), Stopper(), nn.ReLU(), nn.Linear(16, 10))
"""


def stopper(folder: Path, module: str, at: int, action: str = "interrupt") -> str:
    """A model module in ``folder`` (a fresh module name per test: imports are cached)."""
    (folder / f"{module}.py").write_text(STOPPER.format(at=at, action=action))
    sys.modules.pop(module, None)
    return f'factory = "{module}:net"'


def test_a_finished_checkpoint_is_never_overwritten_without_fresh(tmp_path, capsys):
    """A re-run of a finished training and another train file of the same name are refused
    (exit 2, one line naming train.name and --fresh) before anything trains; --fresh replaces."""
    out = tmp_path / "ck"
    path = write_train(tmp_path, "m", epochs=1, noise="")
    assert main(["train", str(path), "--out", str(out)]) == 0
    finished = {p: p.read_bytes() for p in (out / "m.pt", out / "m.json")}
    other = tmp_path / "other"
    other.mkdir()
    same_name = write_train(other, "m", epochs=2, noise="weight_noise = 0.1")
    capsys.readouterr()
    for train_file in (path, same_name):
        assert main(["train", str(train_file), "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and err.startswith(f"{train_file}: train.name: "), err
        assert f"{out / 'm.pt'} already exists (1 of 1 epochs, trained from {path})" in err
        assert "--fresh" in err
        assert all(p.read_bytes() == data for p, data in finished.items())
    assert main(["train", str(same_name), "--out", str(out), "--fresh"]) == 0
    assert json.loads((out / "m.json").read_text())["train_file"] == str(same_name)


def test_a_training_of_the_same_name_at_once_is_refused(tmp_path):
    """While a training holds <out>/.<name>.lock, another of that name into the same folder is
    refused by name and writes nothing; another name trains beside it."""
    out = tmp_path / "ck"
    with file_lock(out / ".m.lock"):
        with pytest.raises(UserInputError, match=r"train\.name: another 'mc-engine train' of "
                                                 r"this name is writing"):
            train(load_train(write_train(tmp_path, "m", epochs=1)), out, progress=False)
        assert not (out / "m.pt").exists() and not (out / "m.json").exists()
        assert train(load_train(write_train(tmp_path, "n", epochs=1)), out,
                     progress=False).epochs_done == 1


def test_a_fresh_re_run_stopped_before_its_first_epoch_keeps_the_finished_file(tmp_path):
    out = tmp_path / "ck"
    done = train(load_train(write_train(tmp_path, "m", epochs=1)), out, progress=False)
    before = done.checkpoint.read_bytes(), done.sidecar.read_bytes()
    again = write_train(tmp_path, "m", epochs=3, model=stopper(tmp_path, "stop_first", 2))
    stopped = train(load_train(again), out, fresh=True, progress=False)
    assert stopped.interrupted and stopped.checkpoint is None and stopped.epochs_done == 0
    assert (done.checkpoint.read_bytes(), done.sidecar.read_bytes()) == before


def test_the_sidecar_fingerprints_the_weights_beside_it_after_a_mid_epoch_interrupt(tmp_path):
    """Ctrl-C in the middle of epoch 3 (weights already changed by its first steps): the
    sidecar's sha256s are those of the epoch-2 file on disk (it used to fingerprint the
    half-trained weights in memory)."""
    model = stopper(tmp_path, "stop_mid", 2 * PER_EPOCH + 3)
    spec = load_train(write_train(tmp_path, "s", epochs=5, model=model))
    stopped = train(spec, tmp_path / "out", progress=False)
    assert stopped.interrupted and stopped.epochs_done == 2
    side = json.loads(stopped.sidecar.read_text())
    assert side["interrupted"] and side["stopped"] == "interrupted" and side["epochs_done"] == 2
    assert side["file_sha256"] == hashlib.sha256(stopped.checkpoint.read_bytes()).hexdigest()
    import stop_mid

    loaded = stop_mid.net()
    loaded.load_state_dict(torch.load(stopped.checkpoint, weights_only=True))
    held_out = load_dataset(spec.data, spec.base_dir, spec.source, split="test")
    assert side["fingerprint"] == fingerprint(loaded, held_out)
    assert not list((tmp_path / "out").glob(".*.tmp"))


def test_sigterm_during_training_exits_143_keeping_the_last_epoch(tmp_path, capsys):
    path = write_train(tmp_path, "t", epochs=4,
                       model=stopper(tmp_path, "stop_term", PER_EPOCH + 2, "sigterm"))
    previous = signal.getsignal(signal.SIGTERM)
    assert main(["train", str(path), "--out", str(tmp_path / "ck")]) == 143
    assert signal.getsignal(signal.SIGTERM) == previous
    err = capsys.readouterr().err
    assert "terminated (SIGTERM)" in err and "holds the last completed epoch (1)" in err
    side = json.loads((tmp_path / "ck" / "t.json").read_text())
    assert side["epochs_done"] == 1 and side["stopped"] == "terminated"


def test_weights_that_diverge_are_an_error_naming_train_lr_and_nothing_is_written(tmp_path,
                                                                                   capsys):
    train_file = write_train(tmp_path, "d", epochs=3, noise="",
                             extra='optimizer = "sgd"\nmomentum = 0.9')
    train_file.write_text(train_file.read_text().replace("lr = 0.01", "lr = 1e30"))
    assert main(["train", str(train_file), "--out", str(tmp_path / "ck")]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]   # after the progress bar
    assert err.startswith(f"{train_file}: train.lr: "), err
    assert "lower the learning rate, got 1e+30; nothing written" in err
    assert not list((tmp_path / "ck").glob("d.*"))


def test_an_out_that_is_a_file_is_refused_before_training(tmp_path, capsys):
    (tmp_path / "taken").write_text("a file")
    path = write_train(tmp_path, "m", epochs=1)
    assert main(["train", str(path), "--out", str(tmp_path / "taken" / "ck")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("--out: ") and "exists and is not a folder" in err
    assert os.path.isfile(tmp_path / "taken")
