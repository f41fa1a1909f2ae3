"""Turning a trained torch model into an analog model (Linear/Conv2d -> analog tiles)."""

from mc_engine.analog.convert import AnalogModel, analog_layer_names, convert
from mc_engine.analog.evaluate import evaluate_chips, evaluate_ideal, evaluate_trial

__all__ = ["AnalogModel", "analog_layer_names", "convert", "evaluate_chips", "evaluate_ideal",
           "evaluate_trial"]
