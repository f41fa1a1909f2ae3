"""The metrics a trial row can carry and how the summaries, comparisons and figures read them.

``accuracy`` (top-1, or next-token accuracy for a language model) is in every row; ``loss``
(mean cross-entropy) and ``perplexity`` (exp(loss)) where the run recorded them. Accuracy is
better high, loss and perplexity low: their change from the digital model is a *rise*, reported
in a column ``rise_from_ideal`` (mean − ideal) where accuracy has ``drop_from_ideal``
(ideal − mean), so that a positive number always means "worse than digital".
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from mc_engine.errors import UserInputError


@dataclass(frozen=True)
class Metric:
    """A result column as a quantity: its name, the direction that is better, the range its
    mean lies in (intervals are clipped to it) and how tables name its change from ideal."""

    name: str
    higher_is_better: bool
    lo: float
    hi: float

    @property
    def change_column(self) -> str:
        """``drop_from_ideal`` (higher is better) or ``rise_from_ideal`` (lower is better)."""
        return "drop_from_ideal" if self.higher_is_better else "rise_from_ideal"

    @property
    def change_word(self) -> str:
        return "drop" if self.higher_is_better else "rise"

    def change(self, ideal, mean):
        """How much worse than the digital model ``mean`` is (positive: worse)."""
        return ideal - mean if self.higher_is_better else mean - ideal

    @property
    def diff_bounds(self) -> tuple[float, float]:
        """The range of a difference of two means."""
        return self.lo - self.hi, self.hi - self.lo

    def best_first(self, values: pd.Series) -> pd.Series:
        """``values`` ordered best first (stable)."""
        return values.sort_values(ascending=not self.higher_is_better, kind="stable")


METRICS = {
    "accuracy": Metric("accuracy", True, 0.0, 1.0),
    "loss": Metric("loss", False, 0.0, math.inf),
    "perplexity": Metric("perplexity", False, 1.0, math.inf),
}


def metric(name: str, df: pd.DataFrame | None = None, key: str = "--metric") -> Metric:
    """The :class:`Metric` called ``name``; with ``df``, it must be one of its columns."""
    known = METRICS.get(name)
    if df is None:
        if known is None:
            raise UserInputError(f"unknown metric {name!r}; expected one of "
                                 f"{', '.join(METRICS)}", key=key)
        return known
    present = available(df)
    if name not in present:
        raise UserInputError(f"unknown metric {name!r}; these results have: "
                             f"{', '.join(present)}", key=key,
                             source=df.attrs.get("results_dir"))
    return known


def available(df: pd.DataFrame) -> list[str]:
    """The metrics the rows of ``df`` carry (a column with at least one value: a classifier's
    rows have an empty perplexity column), in :data:`METRICS` order."""
    return [m for m in METRICS if m in df and bool(df[m].notna().any())]
