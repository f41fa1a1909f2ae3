"""mc-engine train: the differentiable noisy forward against the Monte Carlo engine, the train
file's validation, the loop's determinism, checkpoints and Ctrl-C."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from mc_engine import HardwareConfig, convert
from mc_engine.analog import direct_conv
from mc_engine.analog.matrix import AnalogMatrix
from mc_engine.cli import main
from mc_engine.data import digits_split
from mc_engine.train import NoiseSpec, noisy_forward, parse_train, train
from mc_engine.train.arrays import quantize_weight
from mc_engine.train.augment import crop_flip
from mc_engine.train.mvm import quantize
from mc_engine.train.noisy import TRAIN_PERIPHERY, NoiseSource, noisy_weights
from mc_engine.train.spec import NOISE_KEYS, TRAIN_KEYS
from mc_engine.zoo import build, load_model

ENGINE_QUIET = {"device": "ideal", "out_noise": 0.0, "drift_compensation": "none"}


def small_cnn() -> nn.Sequential:
    torch.manual_seed(3)
    return nn.Sequential(nn.Conv2d(2, 5, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(5, 4, 3, stride=2, padding=1, bias=False), nn.Flatten(),
                         nn.Linear(4 * 3 * 3, 6))


def engine_out(model: nn.Module, hw: HardwareConfig, x: torch.Tensor) -> torch.Tensor:
    return convert(model, hw).program(0).drift(0.0)(x)


def noisy_out(model: nn.Module, spec: NoiseSpec, x: torch.Tensor, seed: int = 0) -> torch.Tensor:
    with torch.no_grad(), noisy_forward(model, spec, NoiseSource.from_seed(seed)):
        return model(x)


def test_noise_off_is_the_plain_model_bit_for_bit():
    model = build("digits_cnn", seed=1).eval()
    x = torch.from_numpy(digits_split()["x_test"][:64])
    plain = model(x).detach()
    assert torch.equal(noisy_out(model, NoiseSpec(), x), plain)
    # Three multi-scale levels of zero noise: the batch split in three chunks, same numbers.
    assert torch.equal(noisy_out(model, NoiseSpec(weight_noise=(0.0, 0.0, 0.0)), x), plain)
    # The analog path with everything off but a far bound: x*s, W·x~, /s — equal to rounding.
    far = NoiseSpec(hardware=HardwareConfig(**{**TRAIN_PERIPHERY, "out_bound": 1e30}))
    assert far.periphery
    np.testing.assert_allclose(noisy_out(model, far, x).numpy(), plain.numpy(), rtol=1e-5,
                               atol=1e-5)
    assert "forward" not in vars(model[1])   # the layers are restored afterwards


@pytest.mark.parametrize("hw", [
    dict(dac_bits=7, adc_bits=9),
    dict(dac_bits=5, adc_bits=6, out_bound=0.5),             # saturates: iterative retries
    dict(dac_bits=4, adc_bits=5, out_bound=1.0, bound_management="none"),
    dict(dac_bits=6, adc_bits=0, noise_management="constant", nm_constant=2.0),
])
def test_dac_adc_and_bound_management_equal_the_engine_exactly(hw, monkeypatch):
    """The same float32 operations in the same order as the engine's Numba kernels: with the
    noise off, every output (quantized, so rounding edges would show) is bit-identical."""
    config = HardwareConfig(**ENGINE_QUIET, **hw)
    spec = NoiseSpec(hardware=config)
    gen = torch.Generator().manual_seed(0)
    # With a static alpha the engine runs convolutions through the direct path, which sums the
    # MVM in another order (tests/test_direct_conv.py); training mirrors the im2col path.
    monkeypatch.setattr(direct_conv, "ENABLED", False)
    mlp = build("digits_mlp", seed=2).eval()
    x = torch.from_numpy(digits_split()["x_test"][:200]) * 3
    x[0] = 0.0                                                      # an all-zero input vector
    assert torch.equal(noisy_out(mlp, spec, x), engine_out(mlp, config, x))
    cnn = small_cnn().eval()
    xc = torch.randn(6, 2, 6, 6, generator=gen)
    assert torch.equal(noisy_out(cnn, spec, xc), engine_out(cnn, config, xc))
    torch.manual_seed(4)   # grouped and depthwise convolutions: one tile per group
    grouped = nn.Sequential(nn.Conv2d(2, 6, 3, padding=1, groups=2), nn.ReLU(),
                            nn.Conv2d(6, 6, 3, stride=2, padding=1, groups=6)).eval()
    assert torch.equal(noisy_out(grouped, spec, xc), engine_out(grouped, config, xc))


def test_weight_quantization_equals_the_engine():
    mlp = build("digits_mlp", seed=4).eval()
    x = torch.from_numpy(digits_split()["x_test"][:100])
    config = HardwareConfig(**ENGINE_QUIET, dac_bits=0, adc_bits=0, out_bound=math.inf,
                            weight_bits=4)
    got = noisy_out(mlp, NoiseSpec(hardware=HardwareConfig(**TRAIN_PERIPHERY, weight_bits=4)), x)
    np.testing.assert_allclose(got.numpy(), engine_out(mlp, config, x).numpy(), atol=2e-5)
    w = mlp[0].weight
    q = quantize_weight(w, 4)
    levels = (q.detach() / w.detach().abs().max() * 7).numpy()
    assert np.allclose(levels, np.rint(levels), atol=1e-5) and len(np.unique(levels)) > 8


def test_programming_noise_is_the_engines_draw_for_the_same_stream():
    """Through the engine's pair mapping and device model: the same generator gives the same
    programmed weights as a tile programmed by AnalogMatrix, exactly."""
    w = torch.randn(12, 20, generator=torch.Generator().manual_seed(5))
    hw = HardwareConfig(device="pcm", prog_noise_scale=2.0, drift_compensation="none")
    matrix = AnalogMatrix(w.numpy(), hw, layer_index=0)
    matrix.program(77)
    src = NoiseSource(torch.Generator(), matrix._rng(0, 0, 0))   # the tile's programming stream
    (mine,) = noisy_weights(w, NoiseSpec(hardware=hw, program=True), src)
    assert np.array_equal(mine.numpy(), matrix.tiles[0][0].w)
    assert not np.array_equal(mine.numpy(), w.numpy())


def test_noise_matches_the_engine_in_distribution():
    """Output, input and short-term weight noise (both types): the std of (noisy - clean) agrees
    with the engine's over 40 000 outputs each; the std's standard error is ~0.4 %, the
    tolerance 3 %."""
    torch.manual_seed(0)
    layer = nn.Sequential(nn.Linear(30, 40))
    x = torch.rand(1000, 30)
    for noise in (dict(out_noise=0.1), dict(w_noise=0.05),
                  dict(w_noise=0.05, w_noise_type="pcm_read"), dict(inp_noise=0.05)):
        config = HardwareConfig(**{**ENGINE_QUIET, "dac_bits": 0, "adc_bits": 0,
                                   "out_bound": math.inf, **noise})
        clean = layer(x).detach()
        engine = (engine_out(layer, config, x) - clean).std().item()
        mine = (noisy_out(layer, NoiseSpec(hardware=config), x) - clean).std().item()
        assert mine == pytest.approx(engine, rel=0.03)
        assert mine > 0.01


def test_weight_noise_is_relative_to_max_w_and_levels_split_the_batch():
    w = torch.randn(50, 60)
    spec = NoiseSpec(weight_noise=(0.1, 0.3))
    draws = noisy_weights(w, spec, NoiseSource.from_seed(1))
    assert len(draws) == 2
    for level, wn in zip(spec.weight_noise, draws):
        # 3000 normals: the std's relative standard error is 1.3 %; 6 % is > 4 sigma.
        assert ((wn - w) / w.abs().max()).std().item() == pytest.approx(level, rel=0.06)


def test_quantizers_pass_gradients_straight_through():
    v = torch.tensor([0.013, -0.4, 0.77, 1.6], requires_grad=True)
    quantize(v, 0.1, 1.0).sum().backward()
    assert v.grad.tolist() == [1.0, 1.0, 1.0, 0.0]           # clipped beyond the bound
    w = torch.randn(5, 5, requires_grad=True)
    quantize_weight(w, 3).sum().backward()
    assert torch.equal(w.grad, torch.ones(5, 5))


def test_crop_flip_shifts_and_mirrors_reproducibly():
    x = torch.arange(2 * 3 * 6 * 6, dtype=torch.float32).reshape(2, 3, 6, 6)
    a = crop_flip(x, np.random.default_rng(0))
    assert torch.equal(a, crop_flip(x, np.random.default_rng(0))) and a.shape == x.shape
    same = crop_flip(x, np.random.default_rng(1), pad=0)
    for img, out in zip(x, same):
        assert torch.equal(out, img) or torch.equal(out, img.flip(2))
    flips = [torch.equal(o, i.flip(2)) for s in range(20)
             for o, i in zip(crop_flip(x, np.random.default_rng(s), pad=0), x)]
    assert 5 < sum(flips) < 35                                # 40 fair coins


TRAIN = """
[train]
name = "{name}"
seed = 3
epochs = {epochs}
batch_size = 64
lr = 0.01
{extra}
[model]
{model}
[data]
dataset = "digits"
limit = 300
[noise]
{noise}
"""


def write_train(folder: Path, name: str = "m", epochs: int = 3, extra: str = "",
                model: str = 'zoo = "digits_mlp"', noise: str = "weight_noise = 0.2") -> Path:
    path = folder / f"{name}.toml"
    path.write_text(TRAIN.format(name=name, epochs=epochs, extra=extra, model=model,
                                 noise=noise))
    return path


def test_training_is_deterministic_and_the_checkpoint_loads_in_a_study(tmp_path):
    from mc_engine.train import load_train

    spec = load_train(write_train(tmp_path, noise="weight_noise = [0.1, 0.3]\nadc_bits = 8\n"
                                                  "dac_bits = 6\nout_noise = 0.02"))
    first = train(spec, tmp_path / "a", progress=False)
    second = train(spec, tmp_path / "b", progress=False)
    a = torch.load(first.checkpoint, weights_only=True)
    b = torch.load(second.checkpoint, weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    model = load_model({"zoo": "digits_mlp", "checkpoint": str(first.checkpoint)}, tmp_path,
                       "study.toml", tmp_path)
    assert all(torch.equal(model.state_dict()[k], a[k]) for k in a)
    side = json.loads(first.sidecar.read_text())
    assert side["epochs_done"] == 3 and not side["interrupted"]
    assert side["held_out_accuracy"] == first.held_out_accuracy > 0.5
    assert side["recipe"]["noise"]["weight_noise"] == [0.1, 0.3]
    assert len(side["history"]) == 3


def test_ctrl_c_keeps_the_last_completed_epoch(tmp_path):
    """A model that raises KeyboardInterrupt in the third epoch: the checkpoint on disk is the
    one a two-epoch run writes, and the sidecar says it was interrupted."""
    per_epoch = math.ceil(300 / 64)
    (tmp_path / "stopper.py").write_text(f"""
import torch
from torch import nn

class Stopper(nn.Module):
    calls = 0
    def forward(self, x):
        if self.training:
            Stopper.calls += 1
            if Stopper.calls > {2 * per_epoch}:
                raise KeyboardInterrupt
        return x

def net():
    return nn.Sequential(nn.Linear(64, 16), Stopper(), nn.ReLU(), nn.Linear(16, 10))
""")
    from mc_engine.train import load_train

    stopped = train(load_train(write_train(tmp_path, "s", epochs=5,
                                           model='factory = "stopper:net"')),
                    tmp_path / "out", progress=False)
    assert stopped.interrupted and stopped.epochs_done == 2
    import stopper

    stopper.Stopper.calls = -10**9
    two = train(load_train(write_train(tmp_path, "t", epochs=2, model='factory = "stopper:net"')),
                tmp_path / "out", progress=False)
    a = torch.load(stopped.checkpoint, weights_only=True)
    b = torch.load(two.checkpoint, weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)
    side = json.loads(stopped.sidecar.read_text())
    assert side["interrupted"] and side["epochs_done"] == 2


def test_cli_train_writes_checkpoint_and_fine_tunes_from_it(tmp_path, capsys):
    path = write_train(tmp_path, "plain", epochs=2, noise="")
    assert main(["train", str(path), "--out", str(tmp_path / "ck")]) == 0
    assert (tmp_path / "ck" / "plain.pt").is_file()
    tune = write_train(tmp_path, "tuned", epochs=1, extra='init = "ck/plain.pt"')
    assert main(["train", str(tune), "--out", str(tmp_path / "ck")]) == 0
    assert "tuned.pt (1 of 1 epochs" in capsys.readouterr().out


@pytest.mark.parametrize("change, key, fragment", [
    (("[train]", '[train]\ncolour = "red"'), "train.colour", "allowed: " + ", ".join(TRAIN_KEYS)),
    (("[noise]", "[noise]\nsigma = 1"), "noise.sigma", "allowed: " + ", ".join(NOISE_KEYS)),
    (("[noise]", "[noise]\nadc_bits = 1"), "noise.adc_bits", "1 bit"),
    (("[noise]", '[noise]\ndevice = "nope"'), "noise.device", "expected one of"),
    (("weight_noise = 0.2", "weight_noise = -1"), "noise.weight_noise", ">= 0"),
    (("weight_noise = 0.2", "weight_noise = []"), "noise.weight_noise", "empty"),
    (("epochs = 3", "epochs = 0"), "train.epochs", "integer >= 1"),
    (("lr = 0.01", 'lr = "fast"'), "train.lr", "> 0"),
    (("batch_size = 64", 'optimizer = "lbfgs"'), "train.optimizer", "'adam', 'sgd'"),
    (('name = "m"', 'name = "a/b"'), "train.name", "letters"),
    (("seed = 3", 'init = "none.pt"'), "train.init", "does not exist"),
    (('zoo = "digits_mlp"', 'zoo = "digits_mlp"\ncheckpoint = "x.pt"'), "model.checkpoint",
     "train.init"),
    (('zoo = "digits_mlp"', 'zoo = "resnet20"'), "model", "cannot process"),
    (('dataset = "digits"', 'dataset = "digits"\ncolour = 1'), "data.colour", "allowed"),
    (("[data]", "[extra]\n[data]"), "extra", "allowed tables: train, model, data, noise"),
])
def test_bad_train_files_get_one_line_and_exit_2(tmp_path, capsys, change, key, fragment):
    path = write_train(tmp_path)
    path.write_text(path.read_text().replace(*change, 1))
    assert main(["train", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith(f"{path}: {key}: ") and fragment in err
    assert not (tmp_path / "out").exists()


def test_parse_train_fills_defaults_and_adc_bound():
    spec = parse_train({"train": {"name": "x"}, "model": {"zoo": "digits_mlp"},
                        "noise": {"adc_bits": 8, "device": "pcm", "prog_noise_scale": 2.0}})
    assert spec.epochs == 10 and spec.optimizer == "adam" and spec.init is None
    assert spec.noise.hardware.out_bound == 12.0 and spec.noise.program
    assert spec.noise.hardware.dac_bits == 0 and spec.noise.hardware.out_noise == 0.0


def test_gradients_reach_every_weight_through_the_full_noisy_forward():
    """MobileNetV2 (plain, pointwise and depthwise convs, BatchNorm, a linear head) with every
    option on, layers split into tiles and weights bit-sliced in conductance units: finite,
    non-zero gradients for every parameter after one backward pass."""
    from mc_engine.zoo.models import mobilenetv2

    torch.manual_seed(0)
    model = mobilenetv2(10, width_mult=0.1).train()
    config = HardwareConfig(**{**TRAIN_PERIPHERY, "dac_bits": 7, "adc_bits": 9,
                               "out_bound": 12.0, "out_noise": 0.04, "inp_noise": 0.01,
                               "w_noise": 0.01, "device": "pcm", "weight_bits": 8,
                               "cell_bits": 3, "max_input_size": 40, "max_output_size": 24})
    spec = NoiseSpec(hardware=config, weight_noise=(0.02, 0.05), program=True)
    x, y = torch.randn(2, 3, 16, 16), torch.randint(0, 10, (2,))
    with noisy_forward(model, spec, NoiseSource.from_seed(0)):
        nn.functional.cross_entropy(model(x), y).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name
