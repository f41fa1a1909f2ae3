"""Parquet schema and writing, load_results, summarize, compare, plots (the README's "Results")."""

from mc_engine.results.analysis import (
    load_ideal,
    load_results,
    summarize,
    swept_columns,
)
from mc_engine.results.compare import compare
from mc_engine.results.layers import rank_layers
from mc_engine.results.plot import plot
from mc_engine.results.report import report
from mc_engine.results.schema import result_schema, trial_rows
from mc_engine.results.store import ResultStore

__all__ = ["ResultStore", "compare", "load_ideal", "load_results", "plot", "rank_layers",
           "report", "result_schema", "summarize", "swept_columns", "trial_rows"]
