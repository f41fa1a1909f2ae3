"""Analog tiles: one crossbar array of a layer's weight matrix, programmed, drifted and read.

A layer's (out × in) matrix (:class:`mc_engine.analog.matrix.AnalogMatrix`) is split into tiles
of at most ``max_input_size`` rows and ``max_output_size`` columns (docs/physics.md); each
:class:`Tile` has its own conductance scale, devices, drift compensation and, in the forward
pass, its own noise-management alpha, DAC, noise, ADC and bound management.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from mc_engine.analog.adc_range import CalibratedADC
from mc_engine.analog.mapping import make_mapping
from mc_engine.analog.noise import KIND_INP, KIND_OUT, KIND_W, MVMNoise, stream
from mc_engine.analog.periphery import _EMPTY1, _EMPTY2, Periphery
from mc_engine.analog.readout import Readout, convert
from mc_engine.analog.rows import InputRows, ProbeRows
from mc_engine.analog.torch_readout import row_sums
from mc_engine.hardware import device_calls
from mc_engine.hardware.devices import DeviceModel
from mc_engine.hardware.variation import NO_FAULTS, apply_variation
from mc_engine.kernels.periphery import adc_rows, add_normal_rows

# Random-stream stages: every draw comes from SeedSequence(seed, spawn_key=(layer, group, stage,
# tile, time)), so a trial's numbers do not depend on worker count, thread count or
# evaluation order.
STAGE_PROGRAM, STAGE_READ, STAGE_MVM, STAGE_FAULTS = 0, 1, 2, 3


def split_sizes(size: int, max_size: int) -> list[tuple[int, int]]:
    """[start, stop) of n = ceil(size/max_size) near-equal chunks, the first size mod n larger."""
    n = max(1, math.ceil(size / max_size))
    base, extra = divmod(size, n)
    bounds, start = [], 0
    for i in range(n):
        stop = start + base + (1 if i < extra else 0)
        bounds.append((start, stop))
        start = stop
    return bounds


def time_key(t_s: float) -> int:
    """A seed component that identifies an inference time exactly (its float64 bit pattern)."""
    return int(np.float64(t_s).view(np.uint64))


class Tile:
    """One crossbar array holding the block ``w_ideal`` (out_c × in_c, model units).

    The mapping (:mod:`mc_engine.analog.mapping`) turns the block into target conductances and
    read conductances into the array matrix; the device model programs and reads them;
    variation and faults (:mod:`mc_engine.hardware.variation`) sit on top of the device model.
    The forward pass is the fused default of docs/physics.md or, for bit slices, offset schemes,
    bit-serial inputs and row-by-row read-out, :func:`mc_engine.analog.readout.convert`.
    """

    def __init__(self, w_ideal: np.ndarray, periphery: Periphery, device: DeviceModel,
                 w_max: float | None = None):
        self.w_ideal = np.ascontiguousarray(w_ideal, dtype=np.float32)
        self.per = periphery
        self.device = device
        hw = periphery.hw
        n_out = w_ideal.shape[0]
        self.mapping = make_mapping(self.w_ideal, hw,
                                    float(np.abs(self.w_ideal).max()) if w_max is None else w_max)
        general = not self.mapping.weight_units or hw.readout != "parallel" or \
            hw.input_bits_per_cycle > 0 or hw.adc_range == "calibrated"
        self.readout = Readout(hw) if general else None
        self.adc = CalibratedADC(self.mapping.layout,
                                 len(self.readout.row_groups(w_ideal.shape[1])), hw.adc_bits) \
            if hw.adc_range == "calibrated" else None
        # Weight scaling omega (§2.1 step 3): the array holds W*k, outputs are scaled by 1/k.
        if hw.weight_scaling_omega > 0:
            absw = np.abs(self.w_ideal)
            wmax = absw.max(axis=1) if hw.weight_scaling_columnwise else \
                np.full(n_out, absw.max(), np.float32)
            wmax = np.where(wmax > 0, wmax, 1.0).astype(np.float32)
            self.k = (np.float32(hw.weight_scaling_omega) / wmax).astype(np.float32)
        else:
            self.k = np.ones(n_out, np.float32)
        self.comp = np.ones(n_out, np.float32)
        self.m0: np.ndarray | None = None
        self.load_ideal()
        self.g_prog: np.ndarray | None = None
        self.state: np.ndarray | None = None
        self.faults = NO_FAULTS
        self.noise_id = 0                    # set by the AnalogMatrix: the tile's noise streams
        self.in_range: np.float32 | None = None   # static input range (AnalogMatrix sets it)
        self._probing = False

    # ---- weights in the array ----
    def load(self, g: np.ndarray, scale: float | None = None) -> None:
        """Put conductances ``g`` (the mapping's flat layout) into the array."""
        m = self.mapping
        self.set_weights(m.matrix(g) if scale is None else m.matrix(g, scale), m.noise_matrix(g))

    def load_ideal(self) -> None:
        """Put the ideal (target) weights into the array."""
        m = self.mapping
        self.set_weights(m.ideal_matrix(), m.noise_matrix(m.targets()))

    def set_weights(self, w: np.ndarray, noise_w: np.ndarray | None = None) -> None:
        """Set the array matrix (columns × in): weights, or g/g_max in conductance units.
        ``noise_w``: the matrix that weights 'pcm_read' noise when it is not |w| (analog
        recombination)."""
        self.w = np.ascontiguousarray(w, dtype=np.float32)
        self.noise_w = noise_w
        held = self.w * self.k[:, None] if self.mapping.weight_units else self.w
        # (in × columns), contiguous. A transposed view of (columns × in) is up to 30 % faster in
        # MKL's GEMM on 16-column tiles but sums in another order: the training forward
        # (mc_engine/train) and the aihwkit references are bit-exact against this layout.
        self.w_analog_t = torch.from_numpy(np.ascontiguousarray(held.T))
        self.abs_w_t = None
        self._abs_t: torch.Tensor | None = None
        self._ir_f: torch.Tensor | None = None
        self.device_arrays = None          # the torch execution's copy on its device

    def program(self, rng: np.random.Generator, rng_faults: np.random.Generator | None) -> None:
        """Program every device (programming noise, drift exponents, variation and faults)."""
        g_target = self.mapping.targets()
        self.g_prog, self.state = device_calls.program(self.device, g_target, rng)
        if rng_faults is not None:
            self.g_prog, self.faults = apply_variation(self.g_prog, self.per.hw, rng_faults)
        self.comp = np.ones_like(self.comp)
        self.load(self.g_prog)

    def read(self, t_s: float, rng: np.random.Generator) -> None:
        """Weights seen at time t: drift and fresh read noise (docs/physics.md, pair_drift).

        Under 'net' a weight with a stuck device is read as its two devices on their own (the
        stuck one pinned, its partner drifting), all other weights as their re-mapped net."""
        if self.g_prog is None or self.device.exact:
            return
        if self.per.hw.pair_drift != "net":
            self.load(self.faults.pin(device_calls.read(self.device, self.g_prog, self.state,
                                                        t_s, rng)))
            return
        g, s = self.mapping.remap_net(self.g_prog)
        g_read = device_calls.read(self.device, g, self.state, t_s, rng)
        if self.faults.index.size:
            pairs = self.mapping.pairs()
            if pairs is None:           # one device per weight: the device itself is stuck
                self.faults.pin(g_read)
            else:
                self._read_stuck_pairs(g_read, pairs, self.mapping.scale_ratio(s), t_s, rng)
        self.load(g_read, s)

    def _read_stuck_pairs(self, g_read: np.ndarray, pairs: tuple[np.ndarray, np.ndarray],
                          ratio: float, t_s: float, rng: np.random.Generator) -> None:
        """Replace, in the re-mapped read ``g_read``, every pair holding a stuck device by its
        two programmed devices read independently (net conductance times ``ratio`` = s'/s, so
        that it holds the same weight on the re-mapped scale)."""
        plus, minus = pairs
        stuck = np.zeros(self.g_prog.size, np.bool_)
        stuck[self.faults.index] = True
        hit = np.flatnonzero(stuck[plus] | stuck[minus])
        devices = np.concatenate([plus[hit], minus[hit]])
        alone = self.g_prog.copy()
        alone[devices] = device_calls.read(self.device, self.g_prog[devices],
                                           self.state[devices], t_s, rng)
        self.faults.pin(alone)
        net = (alone[plus[hit]] - alone[minus[hit]]) * ratio
        g_min = self.mapping.g_min
        g_read[plus[hit]] = g_min + np.maximum(net, 0.0)
        g_read[minus[hit]] = g_min + np.maximum(-net, 0.0)

    # ---- forward ----
    def forward(self, source: InputRows, c0: int, alpha: np.ndarray, noise: MVMNoise | None,
                out: np.ndarray, post: np.ndarray, r: float = 1.0, row0: int = 0,
                first: tuple[np.ndarray, np.ndarray] | None = None) -> None:
        """out[i] = tile output of input row i (columns c0.. of ``source``) times ``post``.

        Implements DAC, MVM, weight/output noise, ADC and iterative bound management (noise
        management's alpha is given), retrying only the rows that saturated; ``r`` is the
        bound-management factor of the first pass. ``noise`` None switches every noise source
        off; ``row0`` is the index of ``source``'s first row in the forward call (the noise
        counter). ``first``: (scale, DAC output) of every row at r = 1 when the caller has
        already quantised them (abs_max noise management fused with the DAC, shared by the
        tiles of one input range); ``alpha`` is then already woken.
        """
        per = self.per
        hw = per.hw
        n_in = self.w_ideal.shape[1]
        c1 = c0 + n_in
        if first is None:
            alpha = per.wake_zero_rows(alpha, per.inp_noise if noise is not None else 0.0)
        # Silent rows (alpha 0: an all-zero input vector) have output 0. A few of them ride
        # along with scale 1 (their DAC output is 0), which keeps the rows of the pass
        # consecutive (no copy, vectorised noise); most of them are left out.
        silent = alpha <= 0
        n_silent = int(np.count_nonzero(silent))
        live = ~silent
        ride = 0 < n_silent and 2 * n_silent < alpha.size
        rows = np.flatnonzero(live) if n_silent and not ride else np.arange(alpha.size)
        if first is not None:
            inv_alpha, xq = first
            if ride:
                inv_alpha = np.where(live, inv_alpha, np.float32(1.0))
            elif rows.size < alpha.size:
                inv_alpha, xq = inv_alpha[rows], xq[rows]
        else:
            inv_alpha = np.float32(1.0) / np.where(live, alpha, np.float32(1.0))[rows]
            xq = None
        post = post.reshape(1, -1)
        one_pass = self._pass if self.readout is None else self._readout_pass
        attempt = int(round(math.log2(r)))
        while rows.size:
            last = hw.bound_management == "none" or r > per.r_last
            scale = inv_alpha / np.float32(r)
            if xq is None:
                xq = source.dac(c0, c1, rows, scale[:, None], n_in, per.step_in)
            pass_noise = None if noise is None else noise.sub(self.noise_id, attempt)
            if isinstance(source, ProbeRows) and self.readout is None:
                sat = self._pass(xq, pass_noise, scale, rows, row0 + rows, last, post, out,
                                 y=self._probe_mvm(xq, rows, scale, pass_noise))
            else:
                sat = one_pass(xq, pass_noise, scale, rows, row0 + rows, last, post, out)
            if ride:
                sat &= live[rows]
            if last or not sat.any():
                break
            rows, inv_alpha, xq = rows[sat], inv_alpha[sat], None
            r *= 2.0
            attempt += 1
        if n_silent:
            out[silent] = 0.0

    def _pass(self, xq, noise, scale, rows, ids, last, post, out, y=None) -> np.ndarray:
        """One default pass (§2.1 steps 3-5, fused): MVM, noise, ADC, rescale into ``out``.
        ``y``: the MVM when the caller already has it (the probe's one-hot rows)."""
        per = self.per
        off = noise is None
        if per.inp_noise > 0 and not off:
            xq = xq.copy()                      # the DAC output may be shared by other tiles
            add_normal_rows(xq, per.inp_noise, noise.stream(KIND_INP), ids)
        if y is None:
            y = (torch.from_numpy(xq) @ self.w_analog_t).numpy()
        if per.hw.ir_drop > 0:
            self.ir_drop(y, torch.from_numpy(xq), 0, xq.shape[1])
        wn_row, wn_full = _EMPTY1, _EMPTY2
        if per.w_noise > 0 and not off:
            wn_row, wn_full = per.weight_noise(torch.from_numpy(xq)[:, None], self._abs_w())
        out_noise = np.float32(0.0) if off else per.out_noise
        sat = np.empty(xq.shape[0], np.bool_)
        adc_rows(y, out_noise, stream(noise, KIND_OUT), wn_row, wn_full, stream(noise, KIND_W), ids,
                 per.step_out, per.bound, scale, rows, last, post, out, sat)
        return sat

    def _readout_pass(self, xq, noise, scale, rows, ids, last, post, out) -> np.ndarray:
        """One pass through a read-out scheme (slices, offsets, cycles, row groups)."""
        y, sat = convert(self.readout, self.mapping.layout, self.w_analog_t,
                         self._abs_w() if self.per.w_noise > 0 else None, xq, self.per, noise,
                         ids, self.adc, self.ir_drop if self.per.hw.ir_drop > 0 else None)
        keep = slice(None) if last else ~sat
        y = (y[keep] / scale[keep, None]) * post
        layout = self.mapping.layout
        if layout.correction and not self._probing:   # exact, digital: not drift-compensated
            y += np.float32(layout.rescale * layout.correction) * (
                row_sums(torch.from_numpy(xq[keep])).numpy() / scale[keep, None])
        out[rows[keep]] = y
        return sat

    def _abs_array(self) -> torch.Tensor:
        """|array matrix| (in × columns), computed once per set of weights."""
        if self._abs_t is None:
            self._abs_t = self.w_analog_t.abs()
        return self._abs_t

    def ir_drop(self, y: np.ndarray, x: torch.Tensor, j0: int, j1: int) -> None:
        """IR drop (docs/physics.md) of the read of rows j0..j1 of this tile with inputs x."""
        n = self.w_analog_t.shape[0]
        self.per.ir_drop(y, x, self.w_analog_t[j0:j1], self._abs_array()[j0:j1],
                         self.ir_rows()[j0:j1], n)

    def ir_rows(self) -> torch.Tensor:
        """IR drop's row weighting 1 - (1 - j/n)^2 of the tile's n rows (made once)."""
        if self._ir_f is None:
            n = self.w_analog_t.shape[0]
            f = 1.0 - (1.0 - np.arange(n, dtype=np.float64) / n) ** 2
            self._ir_f = torch.from_numpy(f.astype(np.float32))
        return self._ir_f

    def _abs_w(self) -> torch.Tensor | None:
        """|array matrix| for 'pcm_read' weight noise (groups × in × columns), else None."""
        if self.per.hw.w_noise_type != "pcm_read":
            return None
        if self.abs_w_t is None:
            self.abs_w_t = self._abs_array()[None] if self.noise_w is None else \
                torch.from_numpy(np.ascontiguousarray(self.noise_w.T, np.float32))[None]
        return self.abs_w_t

    def _probe_mvm(self, xq: np.ndarray, rows: np.ndarray, scale: np.ndarray,
                   noise: MVMNoise | None) -> np.ndarray | None:
        """The MVM of one-hot DAC outputs without the GEMM: row k holds one value q at column
        rows[k], so y[k] = q * W[:, rows[k]] exactly (the GEMM adds only exact zeros). None
        where that does not hold (input noise on the lines, rows with different scales)."""
        if (noise is not None and self.per.inp_noise > 0) or scale.min() != scale.max() or \
                self.per.hw.ir_drop > 0:
            return None
        q = xq[0, rows[0]]
        return self.w_analog_t.numpy()[rows] * q

    def probe(self, noise: MVMNoise | None) -> np.ndarray:
        """Outputs for the one-hot probe (identity matrix of in_size inputs), in_c × out_c."""
        n_out, n_in = self.w_ideal.shape
        eye = ProbeRows(np.eye(n_in, dtype=np.float32))
        out = np.empty((n_in, n_out), np.float32)
        self._probing = True           # the level of what the array reads, no digital terms
        try:
            self.forward(eye, 0, self.per.alpha(eye, 0, n_in, self.in_range), noise, out,
                         np.ones(n_out, np.float32))
        finally:
            self._probing = False
        return out

    def reference_level(self, noise: MVMNoise | None) -> np.ndarray:
        """Drift-compensation level: mean |probe output| (per column or broadcast), >= 1e-4."""
        y = np.abs(self.probe(noise).astype(np.float64))
        if self.per.hw.drift_compensation == "per_column":
            m = y.mean(axis=0)
        else:
            m = np.full(y.shape[1], y.mean())
        return np.maximum(m, 1e-4)
