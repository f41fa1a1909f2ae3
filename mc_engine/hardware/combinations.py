"""Which hardware parameters may be combined (DESIGN.md §2.3).

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
