"""Model zoo: reference layouts, CIFAR architectures, digits training/caching, [model] table."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from mc_engine.data import digits_split
from mc_engine.errors import UserInputError
from mc_engine.zoo import ZOO_NAMES, build, load_model, train_digits

REFERENCE = Path(__file__).parent / "data" / "aihwkit"
STUDY = "study.toml"
# ideal accuracies (float32 in the reference: compare to 1e-6, far below one sample in 899)
_META = json.loads((REFERENCE / "meta.json").read_text())
REFERENCE_IDEAL = {"digits_mlp": _META["ideal_mlp"], "digits_cnn": _META["ideal_cnn"]}


@pytest.fixture(scope="module")
def test_set() -> tuple[torch.Tensor, torch.Tensor]:
    split = digits_split()
    return torch.from_numpy(split["x_test"]), torch.from_numpy(split["y_test"])


def accuracy(model: nn.Module, test_set: tuple[torch.Tensor, torch.Tensor]) -> float:
    x, y = test_set
    with torch.no_grad():
        return (model(x).argmax(1) == y).double().mean().item()


def same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def write_module(folder: Path, body: str) -> str:
    """A uniquely named Python module in folder (unique: sys.modules caches by name)."""
    name = f"user_models_{uuid.uuid4().hex}"
    (folder / f"{name}.py").write_text(body)
    return name


@pytest.fixture(scope="module")
def cached_digits(tmp_path_factory) -> dict:
    """Each digits model loaded once into an empty cache (so trained), with its training time."""
    cache = tmp_path_factory.mktemp("cache")
    out = {}
    for name in ("digits_mlp", "digits_cnn"):
        start = time.perf_counter()
        model = load_model({"zoo": name}, Path("."), STUDY, cache)
        out[name] = (model, time.perf_counter() - start)
    return {"cache": cache, "models": out}


@pytest.mark.parametrize("name", ["digits_mlp", "digits_cnn"])
def test_reference_state_dicts_load_and_reproduce_reference_accuracy(name, test_set):
    model = build(name)
    model.load_state_dict(torch.load(REFERENCE / f"{name}_public.pt", weights_only=True))
    assert accuracy(model.eval(), test_set) == pytest.approx(REFERENCE_IDEAL[name], abs=1e-6)


@pytest.mark.parametrize("name", ["resnet20", "vgg8", "mobilenet"])
@pytest.mark.parametrize("num_classes", [10, 100])
def test_cifar_models_map_32x32_images_to_num_classes_logits(name, num_classes):
    model = build(name, num_classes).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, num_classes) and torch.isfinite(out).all()
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())


def test_resnet20_is_the_standard_cifar_resnet20():
    model = build("resnet20")
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 19 and sum(isinstance(m, nn.Linear) for m in model.modules()) == 1
    assert sorted({c.out_channels for c in convs}) == [16, 32, 64]
    assert sum(p.numel() for p in model.parameters()) == 269_722  # 0.27 M as in He et al.


def test_mobilenet_uses_depthwise_separable_convolutions():
    convs = [m for m in build("mobilenet").modules() if isinstance(m, nn.Conv2d)]
    depthwise = [c for c in convs if c.groups > 1]
    assert len(depthwise) == 13 and all(c.groups == c.in_channels == c.out_channels
                                        for c in depthwise)


def test_build_is_seeded_and_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    a, b, c = build("vgg8"), build("vgg8"), build("vgg8", seed=1)
    assert torch.equal(torch.rand(1), expected_next)
    assert same_weights(a, b) and not same_weights(a, c)


def test_build_rejects_unknown_names_listing_the_known_ones():
    with pytest.raises(UserInputError, match="known: " + ", ".join(ZOO_NAMES)):
        build("resnet19")
    with pytest.raises(UserInputError, match="10 classes"):
        build("digits_mlp", num_classes=100)


def test_trained_digits_models_reach_95_percent_in_seconds(cached_digits, test_set):
    for name, (model, seconds) in cached_digits["models"].items():
        assert not model.training
        assert accuracy(model, test_set) >= 0.95, name
        assert seconds < 15, name  # a few seconds on one thread; generous for slow CI


def test_train_digits_is_reproducible_and_restores_torch_settings(cached_digits):
    threads = torch.get_num_threads()
    again = train_digits("digits_mlp", seed=0)
    assert torch.get_num_threads() == threads
    assert not torch.are_deterministic_algorithms_enabled()
    assert same_weights(again, cached_digits["models"]["digits_mlp"][0])
    assert all(p.grad is None for p in again.parameters())


def test_cached_digits_model_reloads_bitwise_identical(cached_digits, test_set):
    cache = cached_digits["cache"]
    for name, (first, _) in cached_digits["models"].items():
        assert (cache / f"{name}.pt").is_file()
        again = load_model({"zoo": name}, Path("."), STUDY, cache)
        assert same_weights(first, again)
        with torch.no_grad():
            assert torch.equal(first(test_set[0]), again(test_set[0]))


def test_corrupt_cache_file_is_retrained(cached_digits, tmp_path):
    (tmp_path / "digits_mlp.pt").write_bytes(b"garbage")
    model = load_model({"zoo": "digits_mlp"}, Path("."), STUDY, tmp_path)
    assert same_weights(model, cached_digits["models"]["digits_mlp"][0])
    assert torch.load(tmp_path / "digits_mlp.pt", weights_only=True).keys() == \
        model.state_dict().keys()
    assert [p.name for p in tmp_path.iterdir()] == ["digits_mlp.pt"]


def test_zoo_digits_with_checkpoint_loads_it_instead_of_training(tmp_path, test_set):
    spec = {"zoo": "digits_cnn", "checkpoint": str(REFERENCE / "digits_cnn_public.pt")}
    model = load_model(spec, tmp_path, STUDY, tmp_path / "cache")
    assert accuracy(model, test_set) == pytest.approx(REFERENCE_IDEAL["digits_cnn"], abs=1e-6)
    assert not (tmp_path / "cache").exists()


def test_cifar_checkpoint_roundtrip_in_eval_mode(tmp_path):
    trained = build("resnet20", 100, seed=7)
    torch.save({"state_dict": trained.state_dict(), "epoch": 3}, tmp_path / "ckpt.pt")
    spec = {"zoo": "resnet20", "num_classes": 100, "checkpoint": "ckpt.pt"}
    model = load_model(spec, tmp_path, STUDY, tmp_path)
    assert not model.training and same_weights(model, trained)


def test_factory_model_with_relative_checkpoint(tmp_path, test_set):
    module = write_module(tmp_path, (
        "from torch import nn\n"
        "def net():\n"
        "    return nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10)).train()\n"))
    (tmp_path / "w.pt").write_bytes((REFERENCE / "digits_mlp_public.pt").read_bytes())
    model = load_model({"factory": f"{module}:net", "checkpoint": "w.pt"}, tmp_path, STUDY,
                       tmp_path)
    assert not model.training
    assert accuracy(model, test_set) == pytest.approx(REFERENCE_IDEAL["digits_mlp"], abs=1e-6)


@pytest.mark.parametrize("spec, key, fragment", [
    ({"zoo": "resnet19"}, "model.zoo", "known: " + ", ".join(ZOO_NAMES)),
    ({}, "model", "exactly one of zoo"),
    ("resnet20", "model", "expected a table"),
    ({"zoo": "vgg8", "factory": "a:b"}, "model", "exactly one of zoo"),
    ({"zoo": "vgg8", "colour": "red"}, "model.colour", "allowed: zoo, factory"),
    ({"zoo": "resnet20", "num_classes": 1}, "model.num_classes", "integer >= 2"),
    ({"zoo": "resnet20", "num_classes": "10"}, "model.num_classes", "integer >= 2"),
    ({"zoo": "digits_mlp", "num_classes": 100}, "model.num_classes", "10 classes"),
    ({"zoo": "resnet20", "checkpoint": "missing.pt"}, "model.checkpoint", "missing.pt"),
    ({"zoo": "resnet20", "checkpoint": 5}, "model.checkpoint", "file path string"),
    ({"factory": "not_a_module_anywhere:net"}, "model.factory", "cannot import module"),
    ({"factory": "a:b", "num_classes": 10}, "model.num_classes", "factory builds its own"),
])
def test_bad_model_table_names_file_and_key(tmp_path, spec, key, fragment):
    with pytest.raises(UserInputError, match=fragment) as err:
        load_model(spec, tmp_path, STUDY, tmp_path)
    assert err.value.source == STUDY and err.value.key == key
    assert "\n" not in str(err.value)


def save(tmp_path: Path, obj: object) -> str:
    torch.save(obj, tmp_path / "ckpt.pt")
    return "ckpt.pt"


@pytest.mark.parametrize("make_checkpoint, spec, fragment", [
    (lambda: build("digits_mlp").state_dict(), {"zoo": "digits_cnn"},
     "missing 1.weight, 1.bias, 3.weight, 3.bias and 2 more; unexpected 0.weight"),
    (lambda: build("resnet20", 10).state_dict(), {"zoo": "resnet20", "num_classes": 100},
     r"fc.weight has shape \(10, 64\), the model \(100, 64\)"),
    (lambda: {k: torch.full_like(v, float("nan")) for k, v in
              build("digits_mlp").state_dict().items()}, {"zoo": "digits_mlp"},
     "weight 0.weight contains NaN or inf"),
    (lambda: build("digits_mlp"), {"zoo": "digits_mlp"}, r"torch.save\(model.state_dict"),
    (lambda: [1, 2], {"zoo": "digits_mlp"}, "does not hold a state_dict"),
])
def test_checkpoint_that_does_not_fit_is_rejected(tmp_path, make_checkpoint, spec, fragment):
    spec = {**spec, "checkpoint": save(tmp_path, make_checkpoint())}
    with pytest.raises(UserInputError, match=fragment) as err:
        load_model(spec, tmp_path, STUDY, tmp_path)
    assert err.value.key == "model.checkpoint" and "\n" not in str(err.value)


@pytest.mark.parametrize("body, fragment", [
    ("def net():\n    return 42\n", "must return a torch.nn.Module, got int"),
    (("from torch import nn\nimport torch\ndef net():\n    m = nn.Linear(2, 2)\n"
      "    with torch.no_grad():\n        m.bias[0] = float('inf')\n    return m\n"),
     "weight bias contains NaN or inf"),
    ("def net():\n    raise ValueError('no weights here')\n", "raised ValueError: no weights"),
    ("import torchvision\n", "cannot import module"),
])
def test_bad_model_factory_is_a_user_input_error(tmp_path, body, fragment):
    module = write_module(tmp_path, body)
    with pytest.raises(UserInputError, match=fragment) as err:
        load_model({"factory": f"{module}:net"}, tmp_path, STUDY, tmp_path)
    assert err.value.key == "model.factory"


def test_zoo_models_pickle_for_shipping_to_workers():
    import pickle

    for name in ZOO_NAMES:
        model = build(name).eval()
        clone = pickle.loads(pickle.dumps(model))
        assert same_weights(model, clone)
    x = torch.randn(1, 3, 32, 32)
    model = build("resnet20").eval()
    with torch.no_grad():
        assert np.array_equal(model(x).numpy(), pickle.loads(pickle.dumps(model))(x).numpy())
