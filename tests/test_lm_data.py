"""Token data of the language-model task: the embedded pydocs corpus, npz tokens, factories."""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from mc_engine.data import load_dataset, pydocs
from mc_engine.errors import UserInputError
from mc_engine.study.inputs import check_model_fits, fingerprint

STUDY = "study.toml"


def test_pydocs_is_the_same_text_every_time_and_cached(tmp_path):
    built = pydocs.streams()
    pydocs.streams.cache_clear()
    again = pydocs.streams()                     # parsed anew from the sources
    for split in ("train", "test"):
        assert np.array_equal(built[split], again[split])
    cached = pydocs.cached_streams(tmp_path)     # written, then read back
    assert (tmp_path / f"pydocs-py{pydocs.python_version()}.npz").is_file()
    reread = pydocs.cached_streams(tmp_path)
    for split in ("train", "test"):
        assert np.array_equal(cached[split], built[split])
        assert np.array_equal(reread[split], built[split])
    assert len(built["train"]) > 100_000 and len(built["test"]) > 20_000
    assert built["train"].max() < pydocs.VOCAB


def test_pydocs_splits_are_disjoint_whole_modules():
    test = [m for i, m in enumerate(pydocs.MODULES) if pydocs.split_of(i) == "test"]
    train = [m for i, m in enumerate(pydocs.MODULES) if pydocs.split_of(i) == "train"]
    assert not set(test) & set(train) and len(test) == len(pydocs.MODULES) // 5
    assert list(pydocs.MODULES) == sorted(pydocs.MODULES)
    streams = pydocs.streams()
    text = {split: pydocs.decode(streams[split]) for split in ("train", "test")}
    for name in test[:4]:                        # a test module's text is in test only
        doc = pydocs.module_text(name)
        probe = pydocs.decode(pydocs.encode(doc[:200]))
        assert probe in text["test"] and probe not in text["train"], name
    assert pydocs.module_text("no_such_module_here") is None


def test_pydocs_dataset_is_shifted_windows_with_the_python_version(tmp_path):
    data = load_dataset({"dataset": "pydocs", "seq_len": 16}, tmp_path, STUDY,
                        cache_dir=tmp_path)
    assert data.task == "language_model" and data.x.dtype == np.int64
    assert data.x.shape == data.y.shape and data.x.shape[1] == 16
    np.testing.assert_array_equal(data.x[:, 1:], data.y[:, :-1])   # next tokens
    stream = pydocs.cached_streams(tmp_path)["test"]
    np.testing.assert_array_equal(data.x[1], stream[17:33])        # windows of 17
    assert data.version == f"python {pydocs.python_version()}"
    other = load_dataset({"dataset": "pydocs", "seq_len": 16}, tmp_path, STUDY)
    other.version = "python 0.0"
    assert fingerprint(nn.Linear(1, 1), data)["data"] != fingerprint(nn.Linear(1, 1),
                                                                     other)["data"]
    limited = load_dataset({"dataset": "pydocs", "seq_len": 16, "limit": 5}, tmp_path, STUDY)
    assert len(limited) == 5
    train = load_dataset({"dataset": "pydocs", "seq_len": 16}, tmp_path, STUDY, split="train")
    assert len(train) > 3 * len(data)


@pytest.mark.parametrize("spec, key, message", [
    ({"dataset": "pydocs", "task": "classification"}, "data.task", "language_model"),
    ({"dataset": "digits", "task": "language_model"}, "data.task", "token sequences"),
    ({"dataset": "pydocs", "seq_len": 0}, "data.seq_len", ">= 1"),
    ({"dataset": "digits", "seq_len": 8}, "data.seq_len", "only used with dataset = 'pydocs'"),
    ({"task": "lm"}, "data.task", "classification, language_model"),
    ({"dataset": "pydocs", "path": "x.npz"}, "data.path", "embedded"),
])
def test_bad_language_model_tables_are_refused_by_key(tmp_path, spec, key, message):
    with pytest.raises(UserInputError, match=message) as err:
        load_dataset(spec, tmp_path, STUDY)
    assert err.value.key == key


def test_npz_tokens_load_shifted_and_bad_ones_are_refused(tmp_path):
    tokens = np.random.default_rng(0).integers(0, 50, size=(6, 9))
    np.savez(tmp_path / "ok.npz", x_test=tokens, x_train=tokens[:3])
    spec = {"dataset": "npz", "path": "ok.npz", "task": "language_model"}
    data = load_dataset(spec, tmp_path, STUDY)
    np.testing.assert_array_equal(data.x, tokens[:, :-1])
    np.testing.assert_array_equal(data.y, tokens[:, 1:])
    assert len(load_dataset(spec, tmp_path, STUDY, split="train")) == 3
    bad = {"float.npz": tokens.astype(np.float32), "flat.npz": tokens[0],
           "short.npz": tokens[:, :1], "negative.npz": -tokens}
    for name, array in bad.items():
        np.savez(tmp_path / name, x_test=array)
        with pytest.raises(UserInputError) as err:
            load_dataset({**spec, "path": name}, tmp_path, STUDY)
        assert err.value.key == "data.path" and "x_test" in str(err.value), name
        assert ("token ids" in str(err.value)), name
    assert "dtype float32 with shape (6, 9)" in _message(tmp_path, {**spec, "path": "float.npz"})
    np.savez(tmp_path / "nox.npz", y_test=tokens)
    assert "lacks array 'x_test'" in _message(tmp_path, {**spec, "path": "nox.npz"})


def _message(folder: Path, spec: dict) -> str:
    with pytest.raises(UserInputError) as err:
        load_dataset(spec, folder, STUDY)
    return str(err.value)


def test_a_factory_gives_token_sequences(tmp_path):
    name = f"user_tokens_{uuid.uuid4().hex}"
    (tmp_path / f"{name}.py").write_text(
        "import torch\n"
        "def tokens(split='test'):\n"
        "    n = 4 if split == 'test' else 7\n"
        "    return torch.arange(n * 5).reshape(n, 5) % 11\n"
        "def pair(split='test'):\n"
        "    return [[0.5, 1.5]], [1]\n")
    spec = {"factory": f"{name}:tokens", "task": "language_model"}
    data = load_dataset(spec, tmp_path, STUDY)
    assert data.x.shape == (4, 4) and data.y[0].tolist() == [1, 2, 3, 4]
    assert len(load_dataset(spec, tmp_path, STUDY, split="train")) == 7
    with pytest.raises(UserInputError, match="one token array") as err:
        load_dataset({**spec, "factory": f"{name}:pair"}, tmp_path, STUDY)
    assert err.value.key == "data.factory"


class Bigram(nn.Module):
    """Linear-only language model: one-hot tokens into next-token scores."""

    def __init__(self, vocab: int):
        super().__init__()
        self.vocab = vocab
        self.fc = nn.Linear(vocab, vocab)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.fc(nn.functional.one_hot(tokens, self.vocab).float())


def test_a_language_model_must_give_scores_per_token(tmp_path):
    tokens = np.arange(40).reshape(4, 10) % 20
    np.savez(tmp_path / "t.npz", x_test=tokens)
    data = load_dataset({"dataset": "npz", "path": "t.npz", "task": "language_model"},
                        tmp_path, STUDY)
    check_model_fits(Bigram(20), data, {"zoo": "x"}, STUDY)
    with pytest.raises(UserInputError, match="needs at least 20"):
        check_model_fits(Bigram(19), data, {"zoo": "x"}, STUDY)

    class Pooled(Bigram):
        def forward(self, tokens):
            return super().forward(tokens).mean(1)

    with pytest.raises(UserInputError, match=r"next-token scores of shape \(2, 9, vocabulary\)"):
        check_model_fits(Pooled(20), data, {"zoo": "x"}, STUDY)
