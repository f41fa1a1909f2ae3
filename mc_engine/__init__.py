"""mc-engine: Monte Carlo accuracy studies of neural networks on analog in-memory hardware."""

from __future__ import annotations

__version__ = "0.1.0"

from mc_engine.environment import check_environment as check_environment  # before numba
from mc_engine.errors import UserInputError
from mc_engine.hardware import HardwareConfig

__all__ = ["HardwareConfig", "UserInputError", "compare", "convert", "load_results", "run_study",
           "summarize", "__version__"]


def __getattr__(name: str):
    # Heavy layers (torch, numba, pandas) load on first use, so `import mc_engine` stays cheap.
    if name == "convert":
        from mc_engine.analog import convert
        return convert
    if name == "run_study":
        from mc_engine.api import run_study
        return run_study
    if name in ("compare", "load_results", "summarize"):
        from mc_engine import results
        return getattr(results, name)
    raise AttributeError(name)
