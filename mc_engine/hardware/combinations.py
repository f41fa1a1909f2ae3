"""Which hardware parameters may be combined (docs/physics.md).

Each field of :class:`HardwareConfig` is checked on its own by its declaration; this module holds
the rules that involve two or more fields, so that a combination that makes no physical sense is
rejected by name, with what would make it valid, before anything runs. The error's key is the
field to change.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mc_engine.errors import UserInputError

if TYPE_CHECKING:
    from mc_engine.hardware.config import HardwareConfig


def check_combination(hw: HardwareConfig) -> None:
    """Raise UserInputError naming the field of the first combination that is not allowed."""
    for key, ok, message in _rules(hw):
        if not ok:
            raise UserInputError(message, key=key)


def _rules(hw: HardwareConfig):
    yield ("cell_bits", hw.cell_bits == 0 or hw.weight_bits > 0,
           f"cell_bits = {hw.cell_bits} slices quantized weights: set weight_bits > 0 as well "
           "(or cell_bits = 0)")
    yield ("cell_bits", hw.cell_bits == 0 or hw.weight_bits == 0 or
           hw.cell_bits <= hw.weight_bits - 1,
           f"cell_bits = {hw.cell_bits} exceeds the {hw.weight_bits - 1} magnitude bits of "
           f"weight_bits = {hw.weight_bits}: a cell that wide leaves most of its conductance "
           f"range unused; set cell_bits <= {hw.weight_bits - 1} (or 0: one device per weight)")
    yield ("adc_range", hw.adc_range == "fixed" or hw.adc_bits > 0,
           "adc_range = 'calibrated' sets the ADC's levels: it needs adc_bits > 0")
    yield ("bound_management", hw.adc_range == "fixed" or hw.bound_management == "none",
           "bound_management = 'iterative' re-runs inputs that saturate +-out_bound, while "
           "adc_range = 'calibrated' gives every conversion its own range from calibration "
           "data: set bound_management = 'none' (or adc_range = 'fixed')")
    yield ("slice_recombination", hw.slice_recombination == "digital" or hw.weight_bits > 0,
           "slice_recombination = 'analog' combines bit slices: it needs weight_bits > 0")
    yield ("weight_scaling_omega", hw.weight_scaling_omega == 0 or not hw.conductance_units,
           "weight_scaling_omega rescales weights in weight units; with weight_bits > 0 or an "
           "offset scheme the array works in conductance units (g/g_max): set it to 0")
    yield ("input_bits_per_cycle", hw.input_bits_per_cycle == 0 or hw.dac_bits >= 2,
           "bit-serial inputs slice the DAC's output: set dac_bits >= 2 (or "
           "input_bits_per_cycle = 0)")
    yield ("input_bits_per_cycle", hw.input_bits_per_cycle <= max(hw.dac_bits - 1, 1),
           f"input_bits_per_cycle = {hw.input_bits_per_cycle} exceeds the {hw.dac_bits - 1} "
           f"magnitude bits of dac_bits = {hw.dac_bits}: set it to at most {hw.dac_bits - 1}")
    yield ("bound_management", hw.input_bits_per_cycle == 0 or hw.bound_management == "none",
           "bound_management = 'iterative' re-runs saturated inputs at a smaller scale, which "
           "bit-serial inputs (input_bits_per_cycle > 0) cannot do: set bound_management = "
           "'none' or input_bits_per_cycle = 0")
    yield ("rows_per_adc", hw.readout == "row_by_row" or hw.rows_per_adc == 1,
           f"rows_per_adc = {hw.rows_per_adc} applies to readout = 'row_by_row'; with "
           "readout = 'parallel' every row is converted at once")
    yield ("stuck_on_fraction", hw.stuck_off_fraction + hw.stuck_on_fraction <= 1.0,
           f"stuck_off_fraction + stuck_on_fraction = "
           f"{hw.stuck_off_fraction + hw.stuck_on_fraction:g} exceeds 1")
    yield ("g_converter", hw.g_converter == "single_pair" or not hw.conductance_units,
           f"g_converter = {hw.g_converter!r} is aihwkit's weight-unit mapping; it does not "
           "combine with weight quantization and slicing (weight_bits > 0) or an offset scheme "
           "(offset not 'differential'): set g_converter = 'single_pair' for those")
    yield ("dual_pair_f", hw.g_converter == "dual_pair" or hw.dual_pair_f == 3.0,
           f"dual_pair_f = {hw.dual_pair_f:g} sets the second pair of g_converter = "
           "'dual_pair'; set that converter too (or leave dual_pair_f out)")
    yield ("n_pair_f", hw.g_converter == "n_pair" or not hw.n_pair_f,
           "n_pair_f lists the pairs of g_converter = 'n_pair'; set that converter too (or "
           "leave n_pair_f out)")
    yield ("n_pair_f", hw.g_converter != "n_pair" or bool(hw.n_pair_f),
           "g_converter = 'n_pair' needs the significance of each pair: n_pair_f = [1, 3, 9] "
           "(lowest first)")
    from mc_engine.hardware.devices import DEVICES

    yield from DEVICES[hw.device].combination_rules(hw)


def inert_keys(hw: HardwareConfig) -> dict[str, str]:
    """The parameters set away from their default that cannot act in this combination, each
    with why: {key: reason}. A study rejects a key that is inert at every one of its points and
    warns once about a key inert at some of them (a sweep over the option that uses it)."""
    from mc_engine.hardware.config import field_default

    def off(key: str) -> bool:
        return getattr(hw, key) != field_default(key)

    found: dict[str, str] = {}
    fixed_infinite = hw.adc_range == "fixed" and hw.out_bound == float("inf")
    rules = [
        ("adc_bits", hw.adc_bits > 0 and fixed_infinite,
         "out_bound = inf leaves the fixed-range ADC no range to divide into levels (every "
         "adc_bits gives the same rows): give out_bound a finite value or adc_range = "
         "'calibrated'"),
        ("nm_constant", hw.noise_management != "constant",
         f"nm_constant is the input range of noise_management = 'constant', not "
         f"{hw.noise_management!r}"),
        ("weight_scaling_columnwise", hw.weight_scaling_omega == 0,
         "weight_scaling_columnwise applies weight_scaling_omega per column: set "
         "weight_scaling_omega > 0"),
        ("sigma_prog", hw.device != "state_independent",
         f"sigma_prog is a parameter of device = 'state_independent', not {hw.device!r}"),
        ("sigma_read", hw.device != "state_independent",
         f"sigma_read is a parameter of device = 'state_independent', not {hw.device!r}"),
        ("pair_drift", hw.offset != "differential" or hw.g_converter == "single_device",
         "pair_drift chooses how a pair of devices drifts, and this mapping has one device per "
         "weight"),
        ("slice_recombination", hw.n_slices == 1,
         "slice_recombination combines bit slices, and this mapping has one slice (set "
         "cell_bits)"),
        ("input_range_std", hw.noise_management != "calibrated",
         f"input_range_std sets the input ranges of noise_management = 'calibrated', not "
         f"{hw.noise_management!r}"),
        ("calibration_samples", hw.adc_range != "calibrated" and
         hw.noise_management != "calibrated",
         "calibration_samples sizes the calibration of adc_range = 'calibrated' and of "
         "noise_management = 'calibrated'"),
    ]
    for key in ("prog_noise_scale", "read_noise_scale", "drift_scale"):
        rules.append((key, hw.device in ("ideal", "state_independent"),
                      f"{key} scales the PCM statistics, which device = {hw.device!r} does not "
                      f"have"))
    for key, inert, reason in rules:
        if inert and off(key):
            found[key] = reason
    return found
