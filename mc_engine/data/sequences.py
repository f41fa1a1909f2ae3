"""Token sequences of the language-model task (``[data] task = "language_model"``).

A language model's data are integer token sequences (N × T); its inputs are the first T − 1
tokens of each sequence and its targets the last T − 1 (the inputs shifted by one: at every
position the next token), so a model maps N × (T − 1) tokens to N × (T − 1) × vocabulary
scores and every predicted token counts in the metrics (mc_engine/analog/evaluate.py).
"""

from __future__ import annotations

import numpy as np

from mc_engine.errors import Fail

TASKS = ("classification", "language_model")
#: Largest token id accepted (a model needs a vocabulary of this many + 1).
MAX_TOKEN = 1_000_000


def check_tokens(tokens: object, fail: Fail, key: str, what: str) -> np.ndarray:
    """``tokens`` as an int64 array N × T (T ≥ 2, ids in [0, MAX_TOKEN]); anything else is
    ``fail(key, ...)`` saying what ``what`` (the array's name) must be."""
    detach = getattr(tokens, "detach", None)     # a torch tensor
    if callable(detach):
        tokens = detach().cpu().numpy()
    try:
        array = np.asarray(tokens)
    except Exception:  # ragged lists
        array = np.empty(0, dtype=object)
    if array.dtype.kind not in "iu" or array.ndim != 2 or array.shape[1] < 2 or not len(array):
        raise fail(key, f"{what} must be integer token ids of shape N x T (T >= 2 tokens per "
                        f"sequence; a language model predicts each next one), got dtype "
                        f"{array.dtype} with shape {array.shape}")
    if array.min() < 0 or array.max() > MAX_TOKEN:
        bad = array.min() if array.min() < 0 else array.max()
        raise fail(key, f"{what} must hold token ids >= 0 and <= {MAX_TOKEN:_}, got {bad}")
    return np.ascontiguousarray(array, dtype=np.int64)


def shifted(tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Inputs (the first T − 1 tokens) and targets (the last T − 1) of sequences N × T."""
    return np.ascontiguousarray(tokens[:, :-1]), np.ascontiguousarray(tokens[:, 1:])
