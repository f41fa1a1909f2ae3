"""The direct-convolution path of a convolution's tiles (docs/physics.md, "Tile forward").

When every input vector of a tile shares its alpha (static noise management: 'none',
'constant', 'calibrated', 'learned'), the DAC is elementwise: x~ = DAC(x/alpha) of a patch is
the patch of DAC(x/alpha) of the feature map. So the im2col matrix is not needed: the feature
map is quantized once, the MVM of every patch is torch's direct convolution with the array
matrix, ‖x~‖² of every patch (additive weight noise) a box sum, Σ_j |W_ij| x~_j² ('pcm_read') a
convolution of x~² with |W|, and IR drop's two terms convolutions of |x~| with |W| and of x~
with W·f. The ADC epilogue then runs on the output map, with the noise keys and counters of
the im2col path (row (image, oh, ow) × columns + column: the noise of an output element is the
same draw either way). Only the rows that saturate under iterative bound management go back to
patches (the tile's own retry at r = 2).

Both executions use it, with their own epilogue (the Numba kernel or the torch one), so they
stay equal bit for bit on the CPU; against the im2col path the MVM sums in another order
(float32 rounding, tests/test_direct_conv.py). Not taken with input noise (each patch's lines
get their own noise), read-out schemes, split input chunks or a calibrated ADC.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from mc_engine.analog.noise import GROUPED, KIND_OUT, KIND_W
from mc_engine.analog.torch_periphery import (
    arrays,
    epilogue,
    ir_drop_term_maps,
    quantize,
    static_alpha,
)

#: Whether eligible convolutions take the direct path (tests compare it with im2col).
ENABLED = True


def eligible(layer) -> bool:
    """Whether ``layer`` (an AnalogConv2d) can run the direct path."""
    mats = layer.matrices
    hw = mats[0].hw
    return ENABLED and hw.noise_management != "abs_max" and hw.inp_noise == 0 and all(
        len(m.in_chunks) == 1 and not m._calibrating and
        all(t.readout is None for row in m.tiles for t in row) for m in mats)


def _grouped_keys(mats) -> bool:
    """Whether the im2col path runs the layer as one batched grouped pass (its noise keys)."""
    return len(mats) > 1 and mats[0].hw.ir_drop == 0 and all(
        m.n_tiles == 1 and m.tiles[0][0].readout is None for m in mats)


def _maps(layer, x: torch.Tensor):
    """DAC of the feature map, the MVM and the noise sigma of every output: (rows × C_out
    outputs, sigma per (row, group) or per (row, output) or None, per group (alpha, 1/alpha))."""
    mats = layer.matrices
    per = mats[0].periphery
    hw = per.hw
    n_groups = len(mats)
    dev = x.device
    cg = x.shape[1] // n_groups
    kh, kw = layer.kernel_size
    conv = dict(stride=layer.stride, padding=layer.padding, dilation=layer.dilation,
                groups=n_groups)
    alphas = [static_alpha(hw, m.chunk_range(0)) for m in mats]
    scales = [np.float32(1.0) / a for a in alphas]
    xq = torch.cat([quantize(x[:, g * cg:(g + 1) * cg] * float(s), float(per.step_in), 1.0)
                    for g, s in enumerate(scales)], 1) if n_groups > 1 else \
        quantize(x * float(scales[0]), float(per.step_in), 1.0)
    tiles = [t for m in mats for t in m.tiles[0]]                  # output order
    arr = [arrays(t, dev) for t in tiles]
    w = torch.cat([a.wt.t() for a in arr]).reshape(-1, cg, kh, kw)  # C_out × cg × kh × kw
    y = F.conv2d(xq, w, **conv)
    if hw.ir_drop > 0:
        f = tiles[0].ir_rows().to(dev).reshape(1, cg, kh, kw)
        abs_w = torch.cat([a.abs_wt.t() for a in arr]).reshape(-1, cg, kh, kw)
        y = y - ir_drop_term_maps(hw, F.conv2d(xq.abs(), abs_w, **conv),
                                  F.conv2d(xq, w * f, **conv), cg * kh * kw)
    sigma = None
    if hw.w_noise > 0:
        sq = xq * xq
        if hw.w_noise_type == "pcm_read":
            k = torch.cat([a.abs_noise.t() for a in arr]).reshape(-1, cg, kh, kw)
        else:
            k = torch.ones((n_groups, cg, kh, kw), dtype=sq.dtype, device=dev)
        from mc_engine.analog.torch_rng import correct_sqrt

        sigma = float(per.w_noise) * correct_sqrt(F.conv2d(sq, k, **conv))
        sigma = sigma.permute(0, 2, 3, 1).reshape(-1, sigma.shape[1])
    rows = y.permute(0, 2, 3, 1).reshape(-1, y.shape[1])
    return rows, sigma, list(zip(alphas, scales))


def forward(layer, x: torch.Tensor, out_hw: tuple[int, int], numba: bool) -> torch.Tensor:
    """The layer's output (n × C_out × ho × wo, without the bias) through the direct path;
    ``numba``: the Numba execution's epilogue and retries (else the torch execution's)."""
    mats = layer.matrices
    per = mats[0].periphery
    hw = per.hw
    x = x.to(torch.float32)
    n = x.shape[0]
    ho, wo = out_hw
    y, sigma, scales = _maps(layer, x)
    last = hw.bound_management == "none" or 1.0 > per.r_last
    patches = _Patches(layer, x, numba)
    out = torch.empty_like(y)
    if _grouped_keys(mats):
        noise = mats[0].noise.call()
        _grouped(layer, y, sigma, scales, noise, last, patches, out)
    else:
        c = 0
        for g, mat in enumerate(mats):
            noise = mat.noise.call()
            for tile in mat.tiles[0]:
                width = tile.w_ideal.shape[0]
                block = slice(c, c + width)
                s = None if sigma is None else \
                    (sigma[:, g] if hw.w_noise_type != "pcm_read" else sigma[:, block])
                _tile(tile, y[:, block].contiguous(), s, *scales[g], noise, last, patches, g,
                      out, block, numba)
                c += width
    return out.view(n, ho * wo, -1).transpose(1, 2).reshape(n, -1, ho, wo)


class _Patches:
    """The im2col rows of the layer's input, made only if some row is retried."""

    def __init__(self, layer, x: torch.Tensor, numba: bool):
        self.layer, self.x, self.numba, self._rows = layer, x, numba, None

    def rows(self):
        if self._rows is None:
            layer = self.layer
            if self.numba:
                from mc_engine.analog.rows import PatchRows

                (ph, pw), (kh, kw) = layer.padding, layer.kernel_size
                n, _, h, w = self.x.shape
                ho = (h + 2 * ph - layer.dilation[0] * (kh - 1) - 1) // layer.stride[0] + 1
                wo = (w + 2 * pw - layer.dilation[1] * (kw - 1) - 1) // layer.stride[1] + 1
                padded = F.pad(self.x, (pw, pw, ph, ph)) if ph or pw else self.x
                self._rows = PatchRows(np.ascontiguousarray(padded.numpy()), layer.kernel_size,
                                       layer.stride, layer.dilation, (ho, wo))
            else:
                from mc_engine.analog.torch_pass import patch_rows

                self._rows = patch_rows(layer, self.x)
        return self._rows


def _kernel_sigma(sigma: torch.Tensor | None) -> tuple[np.ndarray, np.ndarray]:
    """The weight-noise sigma as adc_rows takes it: (per row, per element), the unused one
    empty."""
    from mc_engine.analog.periphery import _EMPTY1, _EMPTY2

    if sigma is None:
        return _EMPTY1, _EMPTY2
    wn = np.ascontiguousarray(sigma.numpy())
    return (wn, _EMPTY2) if wn.ndim == 1 else (_EMPTY1, wn)


def _tile(tile, y, sigma, alpha_g, scale, noise, last, patches, g, out, block, numba) -> None:
    """The epilogue of one tile's outputs (rows × its columns) with its own keys, then its
    saturated rows retried from patches as the tile retries them."""
    per = tile.per
    m = y.shape[0]
    pass_noise = noise.sub(tile.noise_id, 0)
    post = arrays(tile, y.device).post
    inv = torch.full((m,), float(scale), device=y.device)
    if numba:
        from mc_engine.kernels.periphery import adc_rows

        yn = y.numpy()
        res = np.empty_like(yn)
        sat = np.empty(m, np.bool_)
        wn_row, wn_full = _kernel_sigma(sigma)
        rows = np.arange(m)
        adc_rows(yn, per.out_noise, pass_noise.stream(KIND_OUT), wn_row, wn_full,
                 pass_noise.stream(KIND_W), rows, per.step_out, per.bound, inv.numpy(), rows,
                 last, post.numpy().reshape(1, -1), res, sat)
        out[:, block] = torch.from_numpy(res)
        if last or not sat.any():
            return
        alpha = np.where(sat, alpha_g, np.float32(0.0)).astype(np.float32)
        part = np.empty((m, res.shape[1]), np.float32)
        tile.forward(patches.rows(), g * tile.w_ideal.shape[1], alpha, noise, part,
                     post.numpy(), r=2.0)
        out[sat, block] = torch.from_numpy(part[sat])
        return
    from mc_engine.analog.torch_pass import tile_forward
    from mc_engine.analog.torch_periphery import key_tensor

    ids = torch.arange(m, device=y.device)
    key_w = key_tensor(pass_noise, KIND_W, y.device) if sigma is not None else None
    key_out = key_tensor(pass_noise, KIND_OUT, y.device) if per.out_noise > 0 else None
    s = None if sigma is None else (sigma[:, None] if sigma.dim() == 1 else sigma)
    yc, sat = epilogue(y, s, key_w, key_out, ids, float(per.out_noise), float(per.step_out),
                       float(per.bound))
    res = (yc / inv[:, None]) * post
    out[:, block] = res
    if last or not bool(sat.any()):
        return
    width = tile.w_ideal.shape[1]
    alpha = torch.where(sat, float(alpha_g), 0.0)
    part = tile_forward(tile, patches.rows()[:, g * width:(g + 1) * width], alpha, noise, post,
                        r=2.0)
    out[sat, block] = part[sat]


def _grouped(layer, y, sigma, scales, noise, last, patches, out) -> None:
    """The epilogue of a grouped layer with the keys of the im2col path's batched grouped
    pass (grouped_forward), then each group's saturated rows retried from patches."""
    mats = layer.matrices
    numba = patches.numba
    tiles = [mt.tiles[0][0] for mt in mats]
    per = mats[0].periphery
    n_groups = len(mats)
    first = noise.sub(GROUPED, 0)
    m, c_out = y.shape
    n_out = c_out // n_groups
    dev = y.device
    post = torch.stack([arrays(t, dev).post for t in tiles])           # G × n_out
    inv = torch.tensor([float(s) for _, s in scales], device=dev).repeat(m)  # (row, group)
    y2 = y.reshape(m * n_groups, n_out)
    s2 = None if sigma is None else (sigma.reshape(-1) if sigma.shape[1] == n_groups
                                     else sigma.reshape(m * n_groups, n_out))
    if numba:
        from mc_engine.kernels.periphery import adc_rows

        yn = y2.numpy()
        res = np.empty_like(yn)
        sat = np.empty(m * n_groups, np.bool_)
        wn_row, wn_full = _kernel_sigma(s2)
        ids = np.arange(m * n_groups)
        adc_rows(yn, per.out_noise, first.stream(KIND_OUT), wn_row, wn_full,
                 first.stream(KIND_W), ids, per.step_out, per.bound, inv.numpy(), ids, last,
                 post.numpy(), res, sat)
        out.copy_(torch.from_numpy(res).view(m, c_out))
        sat = torch.from_numpy(sat)
    else:
        from mc_engine.analog.torch_periphery import key_tensor

        ids = torch.arange(m * n_groups, device=dev)
        key_w = key_tensor(first, KIND_W, dev) if s2 is not None else None
        key_out = key_tensor(first, KIND_OUT, dev) if per.out_noise > 0 else None
        s = None if s2 is None else (s2[:, None] if s2.dim() == 1 else s2)
        yc, sat = epilogue(y2, s, key_w, key_out, ids, float(per.out_noise),
                           float(per.step_out), float(per.bound))
        res = (yc / inv[:, None]).view(m, n_groups, n_out) * post[None]
        out.copy_(res.view(m, c_out))
    if last or not bool(sat.any()):
        return
    retry = sat.view(m, n_groups)
    width = tiles[0].w_ideal.shape[1]
    for g in torch.nonzero(retry.any(0)).flatten().tolist():
        again = retry[:, g]
        block = slice(g * n_out, (g + 1) * n_out)
        a = float(scales[g][0])
        if numba:
            alpha = np.where(again.numpy(), np.float32(a), np.float32(0.0)).astype(np.float32)
            part = np.empty((m, n_out), np.float32)
            tiles[g].forward(patches.rows(), g * width, alpha, noise, part, post[g].numpy(),
                             r=2.0)
            out[again, block] = torch.from_numpy(part)[again]
        else:
            from mc_engine.analog.torch_pass import tile_forward

            alpha = torch.where(again, a, 0.0)
            part = tile_forward(tiles[g], patches.rows()[:, g * width:(g + 1) * width], alpha,
                                noise, post[g], r=2.0)
            out[again, block] = part[again]
