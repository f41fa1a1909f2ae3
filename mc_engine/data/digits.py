"""The embedded default dataset: scikit-learn's 8×8 digits, split exactly as the reference.

The split (pixels / 16 as float32, 50/50 stratified with ``random_state=1``) is the one used for
the aihwkit reference figures, so accuracies computed here are comparable with them.
"""

from __future__ import annotations

import numpy as np


def digits_split() -> dict[str, np.ndarray]:
    """Train and test halves of scikit-learn digits: x_train, y_train, x_test, y_test."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.data / 16).astype(np.float32)
    y = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.5, random_state=1, stratify=y)
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}
