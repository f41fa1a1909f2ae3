"""The training recipes (mc_engine/train/recipes.py, sam.py, adversarial.py, swa.py,
act_noise.py) against hand computations on tiny models: SAM's perturbed step, ASAM's scaling,
FGSM's sign step, PGD's projection, AWP's per-layer perturbation, SWA's running mean and its
BatchNorm pass, and the activation noise's statistics per layer and level."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mc_engine.train import NoiseSpec, noisy_forward, parse_train, train
from mc_engine.train.adversarial import attack
from mc_engine.train.noisy import NoiseSource
from mc_engine.train.recipes import Recipe, Step
from mc_engine.train.swa import update_batch_norm
from mc_engine.zoo.loader import load_checkpoint

torch.set_default_dtype(torch.float32)


def softmax_grads(w: np.ndarray, b: np.ndarray, x: np.ndarray, y: np.ndarray):
    """By hand: the mean cross-entropy of softmax(x·wᵀ + b) and its gradients (float64)."""
    z = x @ w.T + b
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    d = p.copy()
    d[np.arange(len(y)), y] -= 1
    d /= len(y)
    return d.T @ x, d.sum(0), d @ w        # dL/dw, dL/db, dL/dx


def tiny():
    torch.manual_seed(0)
    layer = nn.Linear(5, 3)
    gen = torch.Generator().manual_seed(1)
    x = torch.rand((8, 5), generator=gen)
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    return layer, x, y


def f64(t: torch.Tensor) -> np.ndarray:
    return t.detach().double().numpy()


def run_step(layer, x, y, recipe, lr=0.1):
    opt = torch.optim.SGD(layer.parameters(), lr=lr, momentum=0.0)
    step = Step(layer, opt, nn.CrossEntropyLoss(), recipe, torch.Generator().manual_seed(5),
                (0.0, 1.0))
    return step(x, y, lambda value: None)


@pytest.mark.parametrize("adaptive", [False, True])
def test_sam_step_is_the_gradient_at_the_perturbed_weights(adaptive):
    """SGD(lr) around SAM: w ← w − lr·∇L(w + e), e = ρ·T²g/‖T·g‖ over all parameters; T = 1
    (SAM) or |w| + 0.01 for the weight and 1 for the bias (ASAM, Kwon et al.'s operator)."""
    layer, x, y = tiny()
    w, b = f64(layer.weight), f64(layer.bias)
    rho, lr = 0.3, 0.1
    gw, gb, _ = softmax_grads(w, b, f64(x), y.numpy())
    tw, tb = (np.abs(w) + 0.01, np.ones_like(b)) if adaptive else (1.0, 1.0)
    norm = np.sqrt(((tw * gw) ** 2).sum() + ((tb * gb) ** 2).sum())
    ew, eb = rho * tw ** 2 * gw / norm, rho * tb ** 2 * gb / norm
    gw2, gb2, _ = softmax_grads(w + ew, b + eb, f64(x), y.numpy())
    _, loss = run_step(layer, x, y, Recipe(sam=True, sam_rho=rho, sam_adaptive=adaptive), lr)
    # float32 training against float64 by hand: a few ulps of the weights (~1e-7).
    np.testing.assert_allclose(f64(layer.weight), w - lr * gw2, atol=2e-6)
    np.testing.assert_allclose(f64(layer.bias), b - lr * gb2, atol=2e-6)
    # The reported loss is the first pass's, at the unperturbed weights.
    z = f64(x) @ w.T + b
    hand = np.mean(np.log(np.exp(z).sum(1)) - z[np.arange(8), y.numpy()])
    assert loss == pytest.approx(hand, abs=1e-6)
    # Not the plain step, and the perturbation matters: ASAM moves differently from SAM.
    assert not np.allclose(gw2, gw, atol=1e-4)


def test_fgsm_is_one_sign_step_clipped_to_the_data_range():
    layer, x, y = tiny()
    _, _, gx = softmax_grads(f64(layer.weight), f64(layer.bias), f64(x), y.numpy())
    eps = 0.2
    x_adv = attack(layer, nn.CrossEntropyLoss(), x, y, Recipe(adversarial="fgsm", adv_eps=eps),
                   (0.0, 1.0), torch.Generator())
    hand = np.clip(f64(x) + eps * np.sign(gx), 0.0, 1.0)
    np.testing.assert_allclose(f64(x_adv), hand, atol=1e-7)
    assert ((x_adv == 0) | (x_adv == 1)).any()          # the clip acted somewhere


def test_pgd_steps_and_projects_onto_the_eps_ball():
    """A uniform start in ±ε, then α·sign steps each projected onto |x_adv − x| ≤ ε and the
    data range; with α > ε the projection binds at every step."""
    layer, x, y = tiny()
    eps, alpha, steps = 0.05, 0.08, 4
    recipe = Recipe(adversarial="pgd", adv_eps=eps, adv_alpha=alpha, adv_steps=steps)
    x_adv = attack(layer, nn.CrossEntropyLoss(), x, y, recipe, (0.0, 1.0),
                   torch.Generator().manual_seed(9))
    start = torch.rand(x.shape, generator=torch.Generator().manual_seed(9))
    w, b, x0 = f64(layer.weight), f64(layer.bias), f64(x)
    xa = np.clip(x0 + (2 * f64(start) - 1) * eps, 0, 1)
    for _ in range(steps):
        _, _, gx = softmax_grads(w, b, xa, y.numpy())
        xa = np.clip(np.clip(xa + alpha * np.sign(gx), x0 - eps, x0 + eps), 0, 1)
    np.testing.assert_allclose(f64(x_adv), xa, atol=1e-6)
    assert np.abs(f64(x_adv) - x0).max() <= eps + 1e-7
    assert np.isclose(np.abs(f64(x_adv) - x0), eps, atol=1e-6).mean() > 0.5   # on the ball


def test_adversarial_step_trains_on_the_mixture():
    """(1 − λ)·L(x) + λ·L(x_adv): the SGD step is the mixture of the two gradients."""
    layer, x, y = tiny()
    w, b = f64(layer.weight), f64(layer.bias)
    _, _, gx = softmax_grads(w, b, f64(x), y.numpy())
    x_adv = np.clip(f64(x) + 0.1 * np.sign(gx), 0, 1)
    lam = 0.25
    gw_c, gb_c, _ = softmax_grads(w, b, f64(x), y.numpy())
    gw_a, gb_a, _ = softmax_grads(w, b, x_adv, y.numpy())
    run_step(layer, x, y, Recipe(adversarial="fgsm", adv_eps=0.1, adv_weight=lam))
    np.testing.assert_allclose(f64(layer.weight), w - 0.1 * ((1 - lam) * gw_c + lam * gw_a),
                               atol=2e-6)
    np.testing.assert_allclose(f64(layer.bias), b - 0.1 * ((1 - lam) * gb_c + lam * gb_a),
                               atol=2e-6)


def test_awp_perturbs_each_weight_relative_to_its_norm():
    """v = γ·‖W‖·g/‖g‖ for the weight matrix (the bias is not perturbed); the step takes the
    gradient at W + v."""
    layer, x, y = tiny()
    w, b = f64(layer.weight), f64(layer.bias)
    gamma = 0.2
    gw, _, _ = softmax_grads(w, b, f64(x), y.numpy())
    v = gamma * np.linalg.norm(w) * gw / np.linalg.norm(gw)
    gw2, gb2, _ = softmax_grads(w + v, b, f64(x), y.numpy())
    run_step(layer, x, y, Recipe(awp_gamma=gamma))
    np.testing.assert_allclose(f64(layer.weight), w - 0.1 * gw2, atol=2e-6)
    np.testing.assert_allclose(f64(layer.bias), b - 0.1 * gb2, atol=2e-6)


def test_extra_passes_leave_batch_norm_statistics_to_the_training_pass():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 4), nn.BatchNorm1d(4), nn.Linear(4, 3))
    _, x, y = tiny()
    plain = nn.Sequential(nn.Linear(5, 4), nn.BatchNorm1d(4), nn.Linear(4, 3))
    plain.load_state_dict(model.state_dict())
    plain.train()(x)                                      # one training pass's statistics
    run_step(model.train(), x, y, Recipe(sam=True))   # SAM's second pass: no update
    assert torch.equal(model[1].running_mean, plain[1].running_mean)
    assert int(model[1].num_batches_tracked) == 1
    # PGD's attack passes and SAM's second pass update nothing; the training pass on x_adv
    # (adv_weight 1: the adversarial loss alone) updates once.
    run_step(model, x, y, Recipe(sam=True, adversarial="pgd", adv_steps=3, adv_weight=1.0))
    assert int(model[1].num_batches_tracked) == 2


def base_doc(**train_keys):
    return {"train": {"name": "t", "epochs": 4, "seed": 3, "batch_size": 64, **train_keys},
            "model": {"zoo": "digits_mlp"}, "data": {"dataset": "digits", "limit": 256}}


def weights(path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)


def test_swa_checkpoint_is_the_running_mean_of_the_epochs(tmp_path):
    """average = 'swa' from epoch 2 of 4: the checkpoint is the mean of the weights after epochs
    2, 3 and 4 of the same trajectory (plain runs of 2, 3 and 4 epochs), to float32 rounding
    of the running mean (1e-6 on weights of order 0.1-1); reruns are bitwise equal."""
    ends = []
    for epochs in (2, 3, 4):
        out = train(parse_train(base_doc(epochs=epochs, name=f"p{epochs}")), tmp_path,
                    progress=False)
        ends.append(weights(out.checkpoint))
    swa = [weights(train(parse_train(base_doc(average="swa", swa_start=2, name=f"s{i}")),
                         tmp_path, progress=False).checkpoint) for i in (0, 1)]
    for key in ends[0]:
        mean = sum(e[key].double() for e in ends) / 3
        np.testing.assert_allclose(swa[0][key].double().numpy(), mean.numpy(), atol=1e-6)
        assert torch.equal(swa[0][key], swa[1][key])
    assert not torch.equal(swa[0]["0.weight"], ends[-1]["0.weight"])


def test_swa_recomputes_batch_norm_over_the_training_data():
    """Cumulative averages over equal batches: the running mean is the data's mean of the
    BatchNorm inputs, the running variance the mean of the batches' unbiased variances."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 4), nn.BatchNorm1d(4))
    model[1].running_mean.fill_(7.0)
    x = torch.rand((60, 5), generator=torch.Generator().manual_seed(2))
    update_batch_norm(model, x, 20, NoiseSpec(), NoiseSource.from_seed(0), torch.device("cpu"))
    with torch.no_grad():
        h = model[0](x)
    np.testing.assert_allclose(model[1].running_mean.numpy(), h.mean(0).numpy(), atol=1e-6)
    var = torch.stack([h[i:i + 20].var(0) for i in (0, 20, 40)]).mean(0)
    np.testing.assert_allclose(model[1].running_var.numpy(), var.numpy(), atol=1e-6)
    assert model[1].momentum == 0.1 and not model.training


def noisy_layer_outputs(model: nn.Module, spec: NoiseSpec, x: torch.Tensor):
    """(clean output from the layer's own input, noisy output) of every Linear/Conv2d."""
    seen = []

    def hook(module, inputs, output):
        clean = module._conv_forward(inputs[0], module.weight, module.bias) \
            if isinstance(module, nn.Conv2d) else F.linear(inputs[0], module.weight, module.bias)
        seen.append((clean, output))
    layers = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    handles = [m.register_forward_hook(hook) for m in layers]
    with torch.no_grad(), noisy_forward(model, spec, NoiseSource.from_seed(4)):
        model(x)
    for h in handles:
        h.remove()
    return seen


def test_activation_noise_per_layer_and_level():
    """y·(1 + σ_k·ξ) with σ_k the level of the k-th batch chunk (torch.tensor_split): the
    relative deviation y_noisy/y − 1 has mean 0 and std σ_k in chunk k of every layer. With
    > 35 000 values per chunk and layer, the std estimate is within 0.4 % of σ (1 sigma);
    the 3 % tolerance is > 7 sigma. Level 0 leaves its chunk as the plain layer computes it."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Unflatten(1, (1, 8, 8)), nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(),
                          nn.Flatten(), nn.Linear(256, 40))
    x = torch.rand((3001, 64), generator=torch.Generator().manual_seed(1)) + 0.5
    levels = (0.1, 0.0, 0.3)
    for clean, noisy in noisy_layer_outputs(model, NoiseSpec(act_noise=levels), x):
        bounds = np.cumsum([0] + [len(c) for c in torch.tensor_split(clean, 3)])
        assert list(bounds) == [0, 1001, 2001, 3001]
        for k, sigma in enumerate(levels):
            c, n = clean[bounds[k]:bounds[k + 1]], noisy[bounds[k]:bounds[k + 1]]
            keep = c.abs() > 1e-3
            rel = (n[keep] / c[keep] - 1).double()
            if sigma == 0:   # untouched (the bias added apart from the GEMM: float32 ulps)
                np.testing.assert_allclose(n.numpy(), c.numpy(), rtol=1e-5, atol=1e-6)
                continue
            assert rel.numel() > 35_000
            assert float(rel.std()) == pytest.approx(sigma, rel=0.03)
            assert abs(float(rel.mean())) < 5 * sigma / rel.numel() ** 0.5


def test_activation_and_weight_levels_share_the_chunks():
    """With as many weight_noise levels as act_noise levels, chunk k sees both k-th levels:
    a chunk with both at 0 is the plain layer's output (to float32 rounding of the bias)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 8))
    x = torch.rand((10, 16), generator=torch.Generator().manual_seed(1))
    spec = NoiseSpec(weight_noise=(0.0, 0.5), act_noise=(0.0, 0.2))
    ((clean, noisy),) = noisy_layer_outputs(model, spec, x)
    np.testing.assert_allclose(noisy[:5].numpy(), clean[:5].numpy(), rtol=1e-5, atol=1e-6)
    assert (noisy[5:] - clean[5:]).abs().min() > 0


def test_recipe_training_is_bitwise_reproducible(tmp_path):
    doc = base_doc(epochs=2, optimizer="sam", adversarial="pgd", adv_steps=2)
    doc["noise"] = {"act_noise": [0.1, 0.2], "weight_noise": [0.1, 0.3]}
    a, b = (train(parse_train({**doc, "train": {**doc["train"], "name": n}}), tmp_path,
                  progress=False) for n in ("a", "b"))
    wa, wb = weights(a.checkpoint), weights(b.checkpoint)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    load_checkpoint(model, a.checkpoint, lambda key, message: AssertionError(message))
