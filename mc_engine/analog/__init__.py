"""Turning a trained torch model into an analog model (Linear/Conv2d -> analog tiles)."""

from mc_engine.analog.convert import AnalogModel, convert
from mc_engine.analog.evaluate import evaluate_ideal, evaluate_trial

__all__ = ["AnalogModel", "convert", "evaluate_ideal", "evaluate_trial"]
