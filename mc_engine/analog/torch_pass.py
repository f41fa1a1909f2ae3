"""The torch execution of a tile's forward pass (docs/physics.md, "Tile forward"; the read-out
schemes of "Mappings, read-out, variation and faults"), on any torch device.

This is the second execution of the pass that :meth:`mc_engine.analog.tile.Tile.forward`,
:func:`mc_engine.analog.readout.convert` and :func:`mc_engine.analog.grouped.grouped_forward`
drive through the Numba kernels: the same row sets (silent rows, rows that ride along, bound
management's retries of the saturated rows), the same noise keys (``MVMNoise.sub(tile,
attempt)``, the kinds and row groups of :mod:`mc_engine.analog.noise`) and counters (row index
in the call × columns + column), the same float32 operations in the same order, and the
counter-based generator of :mod:`mc_engine.analog.torch_rng`. What a tile holds (its array
matrix, ω's k, its drift compensation, its calibrated ADC ranges) is the tile's own: this module
only reads it, copying the arrays to the device once per set of weights.

On the CPU the outputs equal the Numba execution's bit for bit (tests/test_torch_pass.py): both
sum the same numbers in the same GEMM (torch's, for a batch within one of the Numba execution's
row blocks), and the digital row sums of the offset mappings are exact in both. On a GPU the
GEMM's sums differ at float32 rounding: an output on a rounding edge of the ADC may then land
one step apart.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from mc_engine.analog.noise import GROUPED, KIND_INP, KIND_OUT, KIND_W, MVMNoise
from mc_engine.analog.torch_rng import correct_sqrt, normal_rows
from mc_engine.errors import UserInputError


@dataclass
class DeviceArrays:
    """A tile's arrays on the execution's device: the array matrix (in × columns), |matrix|
    for 'pcm_read' noise or IR drop, IR drop's row weighting, and the digital factor
    comp/k (rebuilt when the drift compensation changes)."""

    wt: torch.Tensor
    abs_noise: torch.Tensor | None = None
    abs_wt: torch.Tensor | None = None
    ir_f: torch.Tensor | None = None
    post: torch.Tensor | None = None
    post_of: object = None


def arrays(tile, device: torch.device) -> DeviceArrays:
    """The device copy of ``tile``'s arrays (made once per set of weights). A tile without
    drift compensation (``comp`` None: training's tiles) brings its arrays with it."""
    a = tile.device_arrays
    if tile.comp is None:
        return a
    if a is None:
        hw = tile.per.hw
        a = DeviceArrays(wt=tile.w_analog_t.to(device))
        if hw.ir_drop > 0 or (hw.w_noise > 0 and hw.w_noise_type == "pcm_read"):
            a.abs_wt = tile._abs_array().to(device)
        if hw.w_noise > 0 and hw.w_noise_type == "pcm_read":
            a.abs_noise = tile._abs_w()[0].to(device)
        if hw.ir_drop > 0:
            a.ir_f = tile.ir_rows().to(device)
        tile.device_arrays = a
    if a.post_of is not tile.comp:
        a.post = torch.from_numpy(tile.comp / tile.k).to(a.wt.device)
        a.post_of = tile.comp
    return a


class RoundSTE(torch.autograd.Function):
    """rint(v/step)·step (half to even) forward; the identity backward (straight through)."""

    @staticmethod
    def forward(ctx, v: torch.Tensor, step: float) -> torch.Tensor:
        return torch.round(v / step) * step

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad, None


def _round(v: torch.Tensor, step: float) -> torch.Tensor:
    """rint(v/step)·step; in grad mode the gradient passes straight through."""
    return RoundSTE.apply(v, step) if v.requires_grad else torch.round(v / step) * step


def quantize(v: torch.Tensor, step: float, bound: float) -> torch.Tensor:
    """The DAC/ADC quantizer: rint(v/step)·step (half to even; step 0 = no rounding), clipped
    at ±bound; in grad mode rounding passes the gradient straight through."""
    if step > 0:
        v = _round(v, step)
    return v.clamp(-bound, bound) if math.isfinite(bound) else v


def _normal(noise, words: tuple[int, ...], ids: torch.Tensor, n: int) -> torch.Tensor:
    """Standard normals for the (len(ids) × n) elements of rows ``ids`` of the stream ``words``
    of ``noise``: counter-based for the engine's MVMNoise (the Numba kernels' draws), from the
    noise object itself otherwise (training's generator)."""
    if isinstance(noise, MVMNoise):
        return normal_rows(int(noise.stream(*words)), ids, n)
    return noise.normal_rows(words, ids, n)


def weight_noise_sigma(per, x3: torch.Tensor, abs_w: torch.Tensor | None) -> torch.Tensor:
    """Sigma of the short-term weight noise for DAC outputs x3 (rows × groups × inputs):
    w_noise·‖x~‖₂ per (row, group) ('additive_constant', abs_w None: rows·groups), or
    w_noise·sqrt(Σ_j |W_ij| x~_j²) per output ('pcm_read', abs_w groups × in × out:
    rows·groups × out). The one formula of both executions (Periphery.weight_noise)."""
    sq = x3 * x3
    w = float(per.w_noise)
    if abs_w is None:
        return w * correct_sqrt(sq.sum(-1)).reshape(-1)
    sigma = correct_sqrt(torch.einsum("mgi,gio->mgo", sq, abs_w))
    return w * sigma.reshape(-1, abs_w.shape[-1])


def static_alpha(hw, r: float | None) -> np.float32:
    """The alpha of every input vector under a static noise management: 1 ('none'),
    nm_constant ('constant') or the tile's input range ``r`` ('calibrated', 'learned'; None
    when its ranges were never set). The one rule of both executions."""
    mode = hw.noise_management
    if mode == "none":
        return np.float32(1.0)
    if mode == "constant":
        return np.float32(hw.nm_constant)
    if r is None:
        how = "program(seed, calibration=x_train) first" if mode == "calibrated" else \
            "convert a model that carries them (<layer>.input_range)"
        raise UserInputError(f"noise_management = {mode!r} needs each tile's input range: "
                             f"{how}", key="noise_management")
    return np.float32(r)


def ir_drop_term(hw, x: torch.Tensor, w_t: torch.Tensor, abs_w_t: torch.Tensor,
                 f: torch.Tensor, n_rows: int) -> torch.Tensor:
    """aihwkit's IR drop of the read of inputs ``x`` (rows × in) on ``w_t`` (in × columns):
    s·c·((x·f)·Wᵀ), a = (n/G)·|x|·|W|ᵀ, c = a·(a·(0.05·a − 0.2) + 0.5). The one formula of
    both executions (Periphery.ir_drop subtracts it)."""
    a = (x.abs() @ abs_w_t) * float(np.float32(n_rows / hw.ir_drop_g_ratio))
    c = a * (a * (a * float(np.float32(0.05)) - float(np.float32(0.2))) + 0.5)
    return c * ((x * f) @ w_t) * float(np.float32(hw.ir_drop))


def _adc(per, y: torch.Tensor, sigma_w: torch.Tensor | None, noise: MVMNoise | None,
         ids: torch.Tensor, step: float, bound: float, group: tuple[int, ...] = ()
         ) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight noise, output noise and the ADC of one conversion (adc_rows' order): (clipped
    outputs, which rows saturated). ``sigma_w``: per row (rows) or per element, or None."""
    n = y.shape[1]
    if sigma_w is not None:
        z = _normal(noise, (KIND_W, *group), ids, n)
        sigma_w = sigma_w.detach()
        y = y + (sigma_w[:, None] if sigma_w.dim() == 1 else sigma_w) * z
    if noise is not None and per.out_noise > 0:
        y = y + float(per.out_noise) * _normal(noise, (KIND_OUT, *group), ids, n)
    if step > 0:
        y = _round(y, step)
    over = (y > bound) | (y < -bound)
    return y.clamp(-bound, bound), over.any(1)


# ---- one tile ----
def tile_forward(tile, x: torch.Tensor, alpha: torch.Tensor, noise: MVMNoise | None,
                 post: torch.Tensor, r: float = 1.0, row0: int = 0,
                 first: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """Tile.forward in torch: the tile output (rows × out) of inputs ``x`` (rows × the tile's
    inputs) with noise-management ``alpha``, times ``post``; see Tile.forward for ``r``,
    ``row0`` and ``first``."""
    per = tile.per
    hw = per.hw
    a = arrays(tile, x.device)
    n = x.shape[0]
    out = x.new_zeros((n, a.post.shape[-1]))
    if first is None and per.inp_noise > 0 and noise is not None:
        alpha = torch.where(alpha > 0, alpha, torch.ones_like(alpha))
    silent = alpha <= 0
    n_silent = int(silent.sum())
    live = ~silent
    ride = 0 < n_silent and 2 * n_silent < n
    rows = torch.nonzero(live).flatten() if n_silent and not ride else \
        torch.arange(n, device=x.device)
    if first is not None:
        inv_alpha, xq = first
        if ride:
            inv_alpha = torch.where(live, inv_alpha, torch.ones_like(inv_alpha))
        elif rows.numel() < n:
            inv_alpha, xq = inv_alpha[rows], xq[rows]
    else:
        inv_alpha = (1.0 / torch.where(live, alpha, torch.ones_like(alpha)))[rows]
        xq = None
    one_pass = _pass if tile.readout is None else _readout_pass
    attempt = int(round(math.log2(r)))
    while rows.numel():
        last = hw.bound_management == "none" or r > per.r_last
        scale = inv_alpha / r
        if xq is None:
            xq = quantize(x[rows] * scale[:, None], float(per.step_in), 1.0)
        pass_noise = None if noise is None else noise.sub(tile.noise_id, attempt)
        y, sat = one_pass(tile, a, xq, pass_noise, scale, row0 + rows, last, post)
        if ride:
            sat = sat & live[rows]
        keep = slice(None) if last else ~sat
        out[rows[keep]] = y[keep]
        if last or not bool(sat.any()):
            break
        rows, inv_alpha, xq = rows[sat], inv_alpha[sat], None
        r *= 2.0
        attempt += 1
    if n_silent:
        out[silent] = 0.0
    return out


def _pass(tile, a: DeviceArrays, xq, noise, scale, ids, last, post):
    """The fused default pass (§2.1 steps 3-5): MVM, IR drop, noise, ADC, rescale."""
    per = tile.per
    hw = per.hw
    if per.inp_noise > 0 and noise is not None:
        xq = xq + float(per.inp_noise) * _normal(noise, (KIND_INP,), ids, xq.shape[1])
    y = xq @ a.wt
    if hw.ir_drop > 0:
        y = y - ir_drop_term(hw, xq, a.wt, a.abs_wt, a.ir_f, a.wt.shape[0])
    sigma = None
    if per.w_noise > 0 and noise is not None:
        sigma = weight_noise_sigma(per, xq[:, None], None if a.abs_noise is None
                                   else a.abs_noise[None])
    y, sat = _adc(per, y, sigma, noise, ids, float(per.step_out), float(per.bound))
    return (y / scale[:, None]) * post, sat


def _readout_pass(tile, a: DeviceArrays, xq, noise, scale, ids, last, post):
    """One pass through a read-out scheme (readout.convert in torch), rescaled."""
    y, sat = convert(tile, a, xq, noise, ids)
    y = (y / scale[:, None]) * post
    layout = tile.mapping.layout
    if layout.correction:                       # exact, digital: not drift-compensated
        y = y + float(np.float32(layout.rescale * layout.correction)) * (
            row_sums(xq) / scale[:, None])
    return y, sat


def bit_serial_cycles(xq: torch.Tensor, m_bits: int, k_bits: int, cycles: int) -> torch.Tensor:
    """kernels.periphery.bit_serial_cycles: cycles × rows × in, LSB first."""
    mag = torch.round(xq.abs() * float(2 ** m_bits - 1)).to(torch.int32)
    top = float(np.float32(1.0) / np.float32(2 ** k_bits - 1))
    sign = torch.where(xq > 0, top, torch.where(xq < 0, -top, 0.0)).to(torch.float32)
    mask = (1 << k_bits) - 1
    return torch.stack([sign * torch.bitwise_and(torch.bitwise_right_shift(mag, j * k_bits),
                                                 mask).to(torch.float32)
                        for j in range(cycles)])


def convert(tile, a: DeviceArrays, xq: torch.Tensor, noise: MVMNoise | None, ids: torch.Tensor
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """readout.convert in torch: digitised, recombined outputs of DAC outputs ``xq`` and which
    rows saturated in any conversion."""
    per, readout, layout, adc = tile.per, tile.readout, tile.mapping.layout, tile.adc
    hw = per.hw
    m, n_in = xq.shape
    cycles = bit_serial_cycles(xq, readout.m, readout.k, readout.cycles) if readout.k \
        else xq[None]
    k_cycles = cycles.shape[0]
    n_conv = k_cycles * m
    conv_ids = (ids[None, :] + (torch.arange(k_cycles, device=ids.device,
                                             dtype=torch.int64) << 40)[:, None]).reshape(-1)
    x_all = cycles.reshape(n_conv, n_in)
    lines = x_all
    if per.inp_noise > 0 and noise is not None:
        lines = x_all + float(per.inp_noise) * _normal(noise, (KIND_INP,), conv_ids, n_in)
    step, bound = (float(per.step_out), float(per.bound)) if adc is None else (0.0, math.inf)
    saturated = torch.zeros(n_conv, dtype=torch.bool, device=xq.device)
    groups = readout.row_groups(n_in)
    part = None
    for gi, (j0, j1) in enumerate(groups):
        x_in, x_line = x_all[:, j0:j1], lines[:, j0:j1]
        if len(groups) > 1:
            x_line = x_line.contiguous()
        y = x_line @ a.wt[j0:j1]
        if hw.ir_drop > 0:
            y = y - ir_drop_term(hw, x_line, a.wt[j0:j1], a.abs_wt[j0:j1], a.ir_f[j0:j1],
                                 a.wt.shape[0])
        sigma = None
        if per.w_noise > 0 and noise is not None:
            sigma = weight_noise_sigma(per, x_line[:, None], None if a.abs_noise is None
                                       else a.abs_noise[None, j0:j1])
            if sigma.dim() == 1 and layout.w_noise_gain != 1:
                sigma = sigma * float(np.float32(layout.w_noise_gain))
        y, sat = _adc(per, y, sigma, noise, conv_ids, step, bound, (gi,))
        if adc is not None:
            if adc.recording:
                adc.record(gi, y.cpu().numpy())
            else:
                y, over = calibrated_adc(adc, gi, y)
                sat = sat | over
        saturated |= sat
        y = _recombine(layout, y, x_in)
        part = y if part is None else part + y
    part = part.reshape(k_cycles, m, layout.n_out)
    if readout.k:
        acc = torch.zeros_like(part[0])
        for y_cycle in part:                     # acc <- (acc + y_j)/2^k, LSB first
            acc = (acc + y_cycle) / float(2 ** readout.k)
    else:
        acc = part[0]
    gain = float(np.float32(layout.rescale * readout.serial_gain))
    return (acc * gain if gain != 1 else acc), saturated.reshape(-1, m).any(0)


def calibrated_adc(adc, row_group: int, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """CalibratedADC.convert in torch: (digitised y, rows beyond a range)."""
    lo_np, step_np = adc._cols[row_group]
    lo = torch.from_numpy(lo_np).to(y.device)
    step = torch.from_numpy(step_np).to(y.device)
    top = float(adc.top)
    k = torch.where(step > 0, torch.round((y - lo) / torch.where(step > 0, step, 1.0)),
                    torch.zeros_like(y))
    sat = ((k > top) | (k < 0)).any(1)
    return lo + k.clamp(0.0, top) * step, sat


def row_sums(x: torch.Tensor) -> torch.Tensor:
    """readout.row_sums in torch: row sums in float64, rounded once to float32."""
    return x.sum(1, keepdim=True, dtype=torch.float64).to(torch.float32)


def _recombine(layout, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Dummy column or digital offset subtracted, slices shift-and-added."""
    n_out = layout.n_out
    base = len(layout.coefs) * n_out
    out = None
    for i, coef in enumerate(layout.coefs):
        y_i = y[:, i * n_out:(i + 1) * n_out]
        if layout.dummy:
            y_i = y_i - y[:, base + i:base + i + 1]
        if coef != 1:
            y_i = float(np.float32(coef)) * y_i
        out = y_i if out is None else out + y_i
    if layout.offset:
        out = out - float(np.float32(layout.offset)) * row_sums(x)
    return out


# ---- one matrix, one layer ----
def _abs_max_dac(per, x: torch.Tensor, wake: bool):
    """abs_max noise management fused with the DAC (dac_abs_max_rows): alpha, scale (0 for a
    silent row), DAC output."""
    alpha = x.detach().abs().amax(1) if x.shape[1] else x.new_zeros(x.shape[0])
    if wake:
        alpha = torch.where(alpha == 0, torch.ones_like(alpha), alpha)
    scale = torch.where(alpha > 0, 1.0 / torch.where(alpha > 0, alpha, 1.0),
                        torch.zeros_like(alpha))
    return alpha, scale, quantize(x * scale[:, None], float(per.step_in), 1.0)


def chunk_range(matrix, chunk: int):
    """AnalogMatrix.chunk_range, None for a matrix without static ranges (training's)."""
    ranges = getattr(matrix, "input_ranges", None)
    return None if ranges is None else ranges[chunk]


def _const_alpha(per, n: int, device, r=None) -> torch.Tensor:
    """The static alpha (periphery.static_alpha) of ``n`` rows; ``r``: the tile's range."""
    return torch.full((n,), float(static_alpha(per.hw, r)), device=device)


def matrix_forward(matrix, x: torch.Tensor, col_offset: int = 0) -> torch.Tensor:
    """AnalogMatrix.forward in torch: W·x of every row of ``x`` (rows × columns, this matrix
    reading columns col_offset..) -> rows × out, on x's device."""
    per = matrix.periphery
    x = x.to(torch.float32)
    noise = None if matrix._calibrating else matrix.noise.call()
    fused = matrix.hw.noise_management == "abs_max"
    y = x.new_zeros((x.shape[0], matrix.out_features))
    for ci, ((i0, i1), row) in enumerate(zip(matrix.in_chunks, matrix.tiles)):
        xs = x[:, col_offset + i0:col_offset + i1]
        first = None
        if fused:
            alpha, scale, xq = _abs_max_dac(per, xs, per.inp_noise > 0)
            first = (scale, xq)
        else:
            alpha = _const_alpha(per, xs.shape[0], x.device, chunk_range(matrix, ci))
        for (o0, o1), tile in zip(matrix.out_chunks, row):
            post = arrays(tile, x.device).post
            y[:, o0:o1] += tile_forward(tile, xs, alpha, noise, post, first=first)
    return y


def grouped_forward(matrices, x: torch.Tensor) -> torch.Tensor:
    """grouped.grouped_forward in torch: G single-tile matrices reading consecutive column
    groups of the rows ``x`` (rows × G·width), one batched pass, per-group retries."""
    tiles = [m.tiles[0][0] for m in matrices]
    per = matrices[0].periphery
    hw = per.hw
    noise = matrices[0].noise.call()
    first = noise.sub(GROUPED, 0)
    n_groups = len(tiles)
    dev = x.device
    width = matrices[0].in_features
    arr = [arrays(t, dev) for t in tiles]
    w = torch.stack([a.wt for a in arr])                              # G, width, n_out
    abs_w = torch.stack([a.abs_noise for a in arr]) if hw.w_noise > 0 and \
        hw.w_noise_type == "pcm_read" else None
    post = torch.stack([a.post for a in arr])                         # G, n_out
    n_out = post.shape[1]
    last = hw.bound_management == "none" or 1.0 > per.r_last
    m = x.shape[0]
    x3 = x.view(m, n_groups, width)
    if hw.noise_management == "abs_max":
        alpha = x3.detach().abs().amax(2)
    else:
        alpha = torch.tensor([float(static_alpha(hw, chunk_range(mat, 0))) for mat in matrices],
                             device=dev)[None].repeat(m, 1)
    if per.inp_noise > 0:
        alpha = torch.where(alpha > 0, alpha, torch.ones_like(alpha))
    active = alpha > 0
    scale = 1.0 / torch.where(active, alpha, torch.ones_like(alpha))
    xq = quantize(x3 * scale[:, :, None], float(per.step_in), 1.0)
    ids = torch.arange(m, device=dev)
    if per.inp_noise > 0:
        xq = xq + float(per.inp_noise) * _normal(first, (KIND_INP,), ids,
                                                 n_groups * width).view(m, n_groups, width)
    y = torch.einsum("mgi,gio->mgo", xq, w).contiguous().reshape(m * n_groups, n_out)
    sigma = weight_noise_sigma(per, xq, abs_w) if per.w_noise > 0 else None
    y, sat = _adc(per, y, sigma, first, torch.arange(m * n_groups, device=dev),
                  float(per.step_out), float(per.bound))
    out3 = ((y / scale.reshape(-1, 1)).view(m, n_groups, n_out) * post[None])
    out3 = out3.masked_fill(~active[:, :, None], 0.0)
    if last:
        return out3.reshape(m, n_groups * n_out)
    retry = sat.view(m, n_groups) & active
    for g in torch.nonzero(retry.any(0)).flatten().tolist():
        again = retry[:, g]
        alpha_g = torch.where(again, alpha[:, g], torch.zeros_like(alpha[:, g]))
        part = tile_forward(tiles[g], x[:, g * width:(g + 1) * width], alpha_g, noise, post[g],
                            r=2.0)
        out3[again, g] = part[again]
    return out3.reshape(m, n_groups * n_out)


def patch_rows(layer, x: torch.Tensor) -> torch.Tensor:
    """The im2col rows of a convolution (rows (n, oh, ow), columns (C, kh, kw)), as the
    Numba execution's PatchRows reads them."""
    ph, pw = layer.padding
    cols = F.unfold(x.to(torch.float32), layer.kernel_size, dilation=layer.dilation,
                    padding=(ph, pw), stride=layer.stride)               # n, C·kh·kw, L
    return cols.transpose(1, 2).reshape(-1, cols.shape[1])


def conv_forward(layer, x: torch.Tensor, out_hw: tuple[int, int]) -> torch.Tensor:
    """AnalogConv2d.forward in torch (without the bias): n × out × ho × wo."""
    n = x.shape[0]
    ho, wo = out_hw
    rows = patch_rows(layer, x)
    mats = layer.matrices
    if len(mats) > 1 and mats[0].hw.ir_drop == 0 and all(
            m.n_tiles == 1 and m.tiles[0][0].readout is None for m in mats):
        y = grouped_forward(mats, rows)
    else:
        width = mats[0].in_features
        parts = [matrix_forward(m, rows, g * width) for g, m in enumerate(mats)]
        y = parts[0] if len(parts) == 1 else torch.cat(parts, 1)
    return y.view(n, ho * wo, layer.out_channels).transpose(1, 2).reshape(
        n, layer.out_channels, ho, wo)
