"""The hardware parameter object: one declaration per field, validation generated from it.

Field names are the vocabulary used everywhere: ``HardwareConfig`` keyword arguments, the
``[hardware]`` / ``[sweep]`` keys of a study file and the Parquet result columns. Defaults equal
the IBM Analog Hardware Acceleration Kit's ``InferenceRPUConfig`` with ``PCMLikeNoiseModel``
(docs/physics.md), so that results are comparable with that toolkit. A few fields (``g_max``,
``on_off_ratio``, ``g_converter``) default to what the device model declares (HERMES's g_max of
20.7 µS, the CMO ReRAM's single device between 9 and 88.2 µS), and to :data:`DEVICE_DEFAULTS`
for the others.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mc_engine.errors import UserInputError, did_you_mean
from mc_engine.hardware.device_fields import (
    CONVERTERS,
    DEVICE_DEFAULTS,
    device_defaults,
    device_table,
    factor_list,
)

if TYPE_CHECKING:
    from mc_engine.hardware.tables import DeviceTable

#: Largest tile dimension accepted: far beyond any crossbar, and small enough that sizes derived
#: from it stay exact in the int64 result columns.
MAX_TILE_SIZE = 2**31 - 1


def _param(default: Any, doc: str, *, lo: float | None = None, hi: float | None = None,
           choices: tuple | None = None, lo_open: bool = False, inf_ok: bool = False,
           factors: bool = False) -> Any:
    """Declare one hardware parameter: default, doc line (unit and meaning) and allowed values.
    A default of None is the device model's (:data:`DEVICE_DEFAULTS`); ``factors``: a list of
    positive numbers, stored as a canonical string."""
    return field(default=default, metadata={"doc": doc, "lo": lo, "hi": hi, "choices": choices,
                                            "lo_open": lo_open, "inf_ok": inf_ok,
                                            "factors": factors})


@dataclass(frozen=True)
class HardwareConfig:
    """A full, validated, immutable set of analog hardware parameters (one hardware point)."""

    # --- periphery: DAC / ADC / noise (circuits) ---
    dac_bits: int = _param(7, "DAC resolution in bits; inp_res = 1/(2^b - 2) on [-1, 1] "
                              "(7 -> 127 levels). 0 switches the DAC off.", lo=0, hi=20)
    adc_bits: int = _param(9, "ADC resolution in bits; out_res = 1/(2^b - 2) of the range "
                              "[-out_bound, out_bound] (9 -> step 2*12/510), or 2^b levels over "
                              "a calibrated range (adc_range). 0 switches it off.",
                           lo=0, hi=20)
    inp_noise: float = _param(0.0, "Gaussian input noise sigma, added after the DAC, in units of "
                                   "the normalised input range [-1, 1].", lo=0.0)
    out_noise: float = _param(0.06, "Gaussian output noise sigma added before the ADC, per "
                                    "conversion, in output units (weight x normalised input on "
                                    "the default path, g/g_max x normalised input on the "
                                    "conductance path).", lo=0.0)
    out_bound: float = _param(12.0, "ADC saturation bound (adc_range = 'fixed'), in output units "
                                    "(as out_noise); inf disables clipping.",
                              lo=0.0, lo_open=True, inf_ok=True)
    w_noise: float = _param(0.0, "Short-term (per MVM) weight noise sigma, per device (see "
                                 "w_noise_type): weight units on the default path, g/g_max on "
                                 "the conductance path.", lo=0.0)
    w_noise_type: str = _param("additive_constant",
                               "Short-term weight noise model: 'additive_constant' (fresh "
                               "N(0, w_noise^2) on every weight) or 'pcm_read' "
                               "(sigma proportional to sqrt|W|).",
                               choices=("additive_constant", "pcm_read"))
    ir_drop: float = _param(0.0, "IR-drop scale s (aihwkit's forward.ir_drop): per input vector "
                                 "and tile, y_i -= s*c(a_i)*sum_j W_ij x_j (1 - (1 - j/n)^2), "
                                 "a_i = (n/ir_drop_g_ratio) sum_j |W_ij||x_j|, c(a) = "
                                 "a(a(0.05a - 0.2) + 0.5), n the tile's rows, row 0 farthest "
                                 "from the ADC; every array read. 0 = off.", lo=0.0)
    ir_drop_g_ratio: float = _param(1.0 / (0.35 * 5e-6), "IR drop: ratio of the wire "
                                                        "conductance to g_max (aihwkit's "
                                                        "ir_drop_g_ratio; 1/(0.35 Ohm x 5 uS)).",
                                    lo=0.0, lo_open=True)
    noise_management: str = _param("abs_max", "Input scaling before the DAC, x~ = "
                                              "DAC(clip(x, -alpha, alpha)/alpha), outputs "
                                              "times alpha: 'abs_max' (alpha = max|x| per "
                                              "input vector), 'none' (alpha = 1), 'constant' "
                                              "(alpha = nm_constant), 'calibrated' (a static "
                                              "range per tile: input_range_std x the std of "
                                              "the tile's inputs over the first "
                                              "calibration_samples of the training split "
                                              "through the digital model) or 'learned' (the "
                                              "ranges stored in the checkpoint, "
                                              "<layer>.input_range).",
                                   choices=("abs_max", "none", "constant", "calibrated",
                                            "learned"))
    nm_constant: float = _param(1.0, "alpha used by noise_management = 'constant' (input units).",
                                lo=0.0, lo_open=True)
    input_range_std: float = _param(3.0, "noise_management = 'calibrated': each tile's input "
                                         "range in standard deviations of its calibration "
                                         "inputs (aihwkit's init_std_alpha).",
                                    lo=0.0, lo_open=True)
    bound_management: str = _param("iterative", "ADC saturation handling: 'iterative' (retry the "
                                                "vector with inputs halved, r = 2, 4, ...) or "
                                                "'none' (outputs just clip).",
                                   choices=("iterative", "none"))
    # --- mapping ---
    max_input_size: int = _param(512, "Largest number of tile rows (layer inputs); larger layers "
                                      "are split into near-equal tiles summed digitally.", lo=1,
                                 hi=MAX_TILE_SIZE)
    max_output_size: int = _param(512, "Largest number of tile columns (layer outputs); larger "
                                       "layers are split likewise.", lo=1,
                                  hi=MAX_TILE_SIZE)
    digital_bias: bool = _param(True, "Bias added digitally after the ADC (the only supported "
                                      "mode; kept as a column for comparability).",
                                choices=(True,))
    weight_scaling_omega: float = _param(0.0, "If > 0, each tile's weights are scaled so that "
                                              "max|W| = omega before the MVM and scaled back "
                                              "digitally; 0 = no remapping (weight units).",
                                         lo=0.0)
    weight_scaling_columnwise: bool = _param(False, "Apply weight_scaling_omega per output column "
                                                    "instead of per tile.")
    # --- mapping: weight quantization, bit slicing, conductance range (docs/physics.md) ---
    weight_bits: int = _param(0, "Symmetric weight quantization before mapping: W_int = "
                                 "rint(W/w_max*(2^(B-1)-1)), w_max = max|W| of the layer. 0 = off "
                                 "(analog weights). Any value > 0 puts the ADC in conductance "
                                 "units.", lo=0, hi=16)
    cell_bits: int = _param(0, "Device precision c in bits (2^c levels per device): weights are "
                               "bit-sliced LSB first into ceil((weight_bits-1)/c) slices "
                               "(differential) or, with an offset scheme, the offset-binary "
                               "integer into ceil(weight_bits/c) slices, on separate devices. "
                               "0 = one device (pair) per weight. At most weight_bits - 1.",
                            lo=0, hi=16)
    slice_recombination: str = _param("digital", "How slices recombine: 'digital' (each slice "
                                                 "its own ADC, shift-and-add after) or 'analog' "
                                                 "(significance-weighted currents summed before "
                                                 "one ADC).", choices=("digital", "analog"))
    on_off_ratio: float = _param(None, "Device on/off ratio R: g_min = g_max/R; inf = g_min 0. "
                                       "Default: the device's (9.8 for reram_cmo; inf for "
                                       "most).", lo=1.0, lo_open=True, inf_ok=True)
    offset: str = _param("differential", "Signed-weight scheme: 'differential' (a device pair "
                                         "per weight), 'dummy_column' (one device per weight "
                                         "plus a reference column at (g_max+g_min)/2 subtracted "
                                         "after the ADC) or 'digital' (one device per weight, "
                                         "offset subtracted exactly after the ADC).",
                         choices=("differential", "dummy_column", "digital"))
    adc_range: str = _param("fixed", "ADC input range: 'fixed' (+-out_bound, symmetric) or "
                                     "'calibrated' (each conversion -- tile x slice x row group, "
                                     "dummy column included -- gets its own [lo, hi]: the min and "
                                     "max of its pre-ADC values over the first "
                                     "calibration_samples of the training split through the "
                                     "programmed, noise-free array at t = 0; 2^adc_bits levels "
                                     "from lo to hi).", choices=("fixed", "calibrated"))
    calibration_samples: int = _param(256, "Training-split samples used to calibrate ADC ranges "
                                           "(adc_range = 'calibrated') and input ranges "
                                           "(noise_management = 'calibrated').", lo=1,
                                      hi=1_000_000)
    g_converter: str = _param(None, "aihwkit's conductance converter, on the weight-unit path: "
                                    "'single_pair' (a pair per weight), 'single_device' (one "
                                    "device, [w_min, w_max] of the tile onto [g_min, g_max]), "
                                    "'dual_pair' (a second pair of significance dual_pair_f, "
                                    "used once the first is full) or 'n_pair' (pairs of "
                                    "significances n_pair_f). Default: the device's "
                                    "('single_device' for reram_cmo, else 'single_pair').",
                              choices=CONVERTERS)
    dual_pair_f: float = _param(3.0, "g_converter = 'dual_pair': significance F of the second "
                                     "pair (aihwkit's f_lst = [1, F]).", lo=0.0, lo_open=True)
    n_pair_f: str = _param("", "g_converter = 'n_pair': the significance of each pair, lowest "
                               "first, as a list ([1, 3, 9]; stored as '1.0,3.0,9.0').",
                           factors=True)
    # --- read-out (periphery) ---
    input_bits_per_cycle: int = _param(0, "Bit-serial inputs: k magnitude bits of the DAC "
                                          "output per cycle (LSB first), each cycle through "
                                          "noise and the ADC, shift-and-add after. 0 = whole "
                                          "input in one cycle.", lo=0, hi=19)
    readout: str = _param("parallel", "ADC read-out: 'parallel' (all rows of a tile in one "
                                      "conversion per column) or 'row_by_row' (rows_per_adc "
                                      "rows at a time, partial sums added digitally).",
                          choices=("parallel", "row_by_row"))
    rows_per_adc: int = _param(1, "Rows activated per conversion with readout = 'row_by_row'.",
                               lo=1, hi=1_000_000)
    # --- device (PCM statistical model) ---
    device: str = _param("pcm", "Device model: 'pcm' (Nandakumar/Joshi PCM statistics), "
                                "aihwkit's measured 'hermes', 'reram_wan2022', 'reram_cmo', "
                                "'pcm_custom_drift', 'table' (from a table of measurements), "
                                "'ideal' (exact weights, no drift), 'state_independent', or the "
                                "name of a registered DeviceModel subclass; in a study file also "
                                "'module:Class' (a DeviceModel subclass in a module beside it).")
    device_params: tuple[tuple[str, float], ...] = field(
        default=(), metadata={"doc": "The device model's own parameters (DeviceModel.params), "
                                     "as sorted (name, value) pairs, defaults filled in; given "
                                     "as a mapping. Each is a key and a result column of its "
                                     "own (docs/devices.md).", "column": False})
    device_table: str = _param("", "A CSV file of measurements beside the study, for the "
                                   "devices that read one: 'table' (per-level statistics over "
                                   "time) and 'pcm_custom_drift' (its drift table).")
    table: DeviceTable | None = field(
        default=None, repr=False, metadata={"doc": "The parsed device_table (read once by the "
                                                   "study; travels with the point).",
                                            "column": False})
    g_max: float = _param(None, "Maximum device conductance g_max, in microsiemens. Default: "
                                "the device's (25 for pcm; 20.7 for hermes, 88.2 for "
                                "reram_cmo, the top level of a table); from 1e-3 (1 nS) to "
                                "1e5 (0.1 S).", lo=1e-3, hi=1e5)
    prog_noise_scale: float = _param(1.0, "Multiplier of the programming-noise sigma.", lo=0.0)
    read_noise_scale: float = _param(1.0, "Multiplier of the 1/f read-noise sigma.", lo=0.0)
    drift_scale: float = _param(1.0, "Multiplier of the drift exponent nu.", lo=0.0)
    pair_drift: str = _param("net", "How a differential pair drifts: 'net' (the toolkit's "
                                    "convention: the programmed net weight is re-mapped to one "
                                    "device per weight at each read) or 'independent' (both "
                                    "programmed devices drift and are read on their own).",
                             choices=("net", "independent"))
    sigma_prog: float = _param(0.02, "state_independent device: programming-noise sigma as a "
                                     "fraction of g_max.", lo=0.0)
    sigma_read: float = _param(0.01, "state_independent device: read-noise sigma as a fraction of "
                                     "g_max.", lo=0.0)
    # --- device-to-device variation and faults ---
    d2d_sigma: float = _param(0.0, "Device-to-device variation: a fixed relative error per "
                                   "device drawn at programming, g <- g*(1 + d2d_sigma*xi).",
                              lo=0.0, hi=10.0)
    stuck_off_fraction: float = _param(0.0, "Fraction of devices stuck at g_min (drawn at "
                                            "programming; no drift, no read noise).",
                                       lo=0.0, hi=1.0)
    stuck_on_fraction: float = _param(0.0, "Fraction of devices stuck at g_max (drawn at "
                                           "programming; no drift, no read noise).",
                                      lo=0.0, hi=1.0)
    # --- compensation ---
    drift_compensation: str = _param("global", "Drift compensation: 'global' (one factor per "
                                               "tile from a one-hot probe through the noisy "
                                               "forward), 'per_column', 'exact' (reference from "
                                               "the ideal weights) or 'none'.",
                                     choices=("global", "per_column", "exact", "none"))

    def __post_init__(self) -> None:
        from mc_engine.hardware.devices import check_device_params

        # The device first: its parameters, table and defaults complete the other fields.
        device = _check(_FIELDS["device"], self.device)
        params = check_device_params(device, self.device_params)
        table = device_table(device, _check(_FIELDS["device_table"], self.device_table),
                              self.table)
        defaults = device_defaults(device, params, table)
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "device_params":
                value = params
            elif f.name == "table":
                value = table
            else:
                value = _check(f, defaults[f.name] if value is None and f.name in defaults
                               else value)
            object.__setattr__(self, f.name, value)
        from mc_engine.hardware.combinations import check_combination
        check_combination(self)

    # --- introspection used by studies and results ---
    @classmethod
    def field_names(cls) -> list[str]:
        """The fixed parameters: study keys and result columns (``device_params`` is not one:
        its entries are, under their own names)."""
        return [f.name for f in dataclasses.fields(cls) if f.metadata.get("column", True)]

    @classmethod
    def field_types(cls) -> dict[str, type]:
        return {f.name: _TYPES[f.type] for f in dataclasses.fields(cls)
                if f.metadata.get("column", True)}

    @classmethod
    def describe(cls) -> str:
        """A table of every parameter: name, default and meaning (for docs and --help)."""
        rows = [f"{f.name:26s} {_shown_default(f):22s} {f.metadata['doc']}"
                for f in dataclasses.fields(cls) if f.name != "table"]
        return "\n".join(rows)

    def to_dict(self) -> dict[str, Any]:
        """Every parameter by name, the device's own parameters flattened in after ``device``
        (what a study file's [hardware] table and a result row hold); ``from_dict`` inverts it."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if f.name == "device_params":
                out.update(self.device_params)
            elif f.name != "table":
                out[f.name] = getattr(self, f.name)
        return out

    def device_defaults(self) -> dict[str, Any]:
        """The values this point's device gives the fields with a device-dependent default."""
        return device_defaults(self.device, self.device_params, self.table)

    def replace(self, **changes: Any) -> HardwareConfig:
        """This point with ``changes``. On a change of device, the old model's parameters go,
        and the fields at the old model's defaults (g_max, ...) take the new model's."""
        base = self.to_dict()
        if changes.get("device", self.device) != self.device:
            for name, _ in self.device_params:
                base.pop(name)
            for name, value in self.device_defaults().items():
                if base[name] == value:
                    base.pop(name)
        params = dict(changes.pop("device_params", {}))
        values = {**base, **changes, **params}
        same_table = values.get("device_table", "") == self.device_table
        return from_dict(values, table=self.table if same_table else None)

    # --- derived quantities (docs/physics.md) ---
    @property
    def inp_res(self) -> float:
        """DAC resolution as a fraction of the half range: 1/(2^b - 2); 0 when off."""
        return 1.0 / (2 ** self.dac_bits - 2) if self.dac_bits > 1 else 0.0

    @property
    def conductance_units(self) -> bool:
        """True when the ADC sees conductance units (docs/physics.md): weights quantized or an
        offset scheme; False on the default path, where it sees the model's weight units."""
        return self.weight_bits > 0 or self.offset != "differential"

    @property
    def g_min(self) -> float:
        """Lowest device conductance in µS: g_max / on_off_ratio (0 for an infinite ratio)."""
        return self.g_max / self.on_off_ratio

    @property
    def n_slices(self) -> int:
        """Number of bit slices: S = ceil((weight_bits - 1)/cell_bits) for differential pairs
        (the magnitude bits), ceil(weight_bits/cell_bits) for offset schemes (the offset-binary
        integer, NeuroSim's scheme); 1 without slicing."""
        if self.weight_bits == 0 or self.cell_bits == 0:
            return 1
        bits = self.weight_bits - 1 if self.offset == "differential" else self.weight_bits
        return max(1, math.ceil(bits / self.cell_bits))

    @property
    def out_res(self) -> float:
        """ADC resolution as a fraction of the half range: 1/(2^b - 2); 0 when off."""
        return 1.0 / (2 ** self.adc_bits - 2) if self.adc_bits > 1 else 0.0


_TYPES = {"int": int, "float": float, "str": str, "bool": bool}


def _check(f: dataclasses.Field, value: Any) -> Any:
    kind = _TYPES[f.type]
    meta = f.metadata
    name = f.name
    if kind is bool:
        if not isinstance(value, bool):
            raise UserInputError(f"expected true or false, got {value!r}", key=name)
    elif kind is int:
        if isinstance(value, bool) or not (isinstance(value, int) or
                                           (isinstance(value, float) and value.is_integer())):
            raise UserInputError(f"expected an integer, got {value!r}", key=name)
        value = int(value)
        if meta["hi"] is None and abs(value) >= 2**63:  # the int64 result column
            raise UserInputError(f"must be < 2**63, got {value!r}", key=name)
    elif kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserInputError(f"expected a number, got {value!r}", key=name)
        try:
            value = float(value)
        except OverflowError:
            raise UserInputError("a number beyond the floating-point range", key=name) from None
        if math.isnan(value) or (math.isinf(value) and not meta["inf_ok"]):
            raise UserInputError(f"expected a finite number, got {value!r}", key=name)
    elif meta["factors"]:
        return factor_list(value, name)
    elif kind is str and not isinstance(value, str):
        raise UserInputError(f"expected a string, got {value!r}", key=name)
    choices = meta["choices"]
    if name == "device":
        from mc_engine.hardware.devices import DEVICES
        choices = tuple(DEVICES)
        if value not in choices and ":" in value:
            raise UserInputError(f"{value!r} is not registered: a 'module:Class' device is "
                                 f"imported by the study file that names it; in Python, import "
                                 f"the class and call register_device(cls) first (registered: "
                                 f"{_fmt_choices(choices)})", key=name)
    if choices is not None and value not in choices:
        raise UserInputError(f"expected one of {_fmt_choices(choices)}, got {value!r}",
                             key=name)
    lo, hi = meta["lo"], meta["hi"]
    if lo is not None and (value < lo or (meta["lo_open"] and value == lo)):
        op = ">" if meta["lo_open"] else ">="
        raise UserInputError(f"must be {op} {lo}, got {value!r}", key=name)
    if hi is not None and value > hi:
        raise UserInputError(f"must be <= {hi}, got {value!r}", key=name)
    if kind is int and name in ("dac_bits", "adc_bits", "weight_bits") and value == 1:
        raise UserInputError("1 bit leaves no level besides 0; use 0 (off) or >= 2", key=name)
    return value


def _fmt_choices(choices: tuple) -> str:
    return ", ".join(repr(c).lower() if isinstance(c, bool) else repr(c) for c in choices)


def _shown_default(f: dataclasses.Field) -> str:
    if f.default is None and f.name in DEVICE_DEFAULTS:
        return f"{DEVICE_DEFAULTS[f.name]!r} (device)"
    return repr(f.default)


def from_dict(values: dict[str, Any], table: DeviceTable | None = None) -> HardwareConfig:
    """Build a config from a flat mapping (``to_dict``'s form: the device's own parameters under
    their names; ``"preset"``: start from a named preset, :mod:`mc_engine.hardware.presets`),
    rejecting unknown keys with the list of known ones. ``table``: the parsed
    ``device_table``, when the caller has it (else it is looked up by name)."""
    from mc_engine.hardware.devices import DEVICES
    from mc_engine.hardware.presets import resolve_preset

    values = resolve_preset(values)
    device = values.get("device", _DEFAULTS["device"])
    if "device" in values:  # a bad device first, not its parameters as unknown keys
        device = _check(_FIELDS["device"], device)
    declared = DEVICES[device].params
    params = {k: values.pop(k) for k in list(values) if k in declared}
    known = set(HardwareConfig.field_names())
    unknown = sorted(set(values) - known)
    if unknown:
        own = f"; parameters of device {device!r}: {', '.join(sorted(declared))}" \
            if declared else ""
        hint = did_you_mean(unknown[0], known | set(declared))
        raise UserInputError(f"unknown hardware parameter{hint}; known: "
                             f"{', '.join(sorted(known))}{own}", key=unknown[0])
    return HardwareConfig(**values, device_params=params, table=table)


_FIELDS = {f.name: f for f in dataclasses.fields(HardwareConfig)}
_DEFAULTS = {f.name: f.default for f in dataclasses.fields(HardwareConfig)}


def field_default(name: str) -> Any:
    """The declared default of hardware field ``name`` (None: the device's own)."""
    return _DEFAULTS[name]
