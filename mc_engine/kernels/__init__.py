"""Numba-jitted numeric kernels: flat functions over float32 arrays, no policy, no torch.

Callers (``mc_engine.analog``) validate inputs and choose parameters; the kernels assume valid
input. Random normals are passed in pre-drawn, so every kernel is deterministic and
thread-count independent.
"""

from mc_engine.kernels.pcm import pcm_drift_read, pcm_program
from mc_engine.kernels.periphery import adc_rows, dac_rows, row_abs_max

__all__ = ["adc_rows", "dac_rows", "row_abs_max", "pcm_drift_read", "pcm_program"]
