"""Typed, validated hardware parameters and the physics they describe."""

from mc_engine.hardware import measured, table  # noqa: F401 (register their device models)
from mc_engine.hardware.config import HardwareConfig, from_dict

__all__ = ["HardwareConfig", "from_dict"]
