"""Dask orchestration: cluster start/connect, task submission, progress, retries, resume."""

from mc_engine.run.cluster import WORKER_ENV, RunError, check_scheduler_address, open_client
from mc_engine.run.runner import RunOutcome, run_study

__all__ = ["WORKER_ENV", "RunError", "RunOutcome", "check_scheduler_address", "open_client",
           "run_study"]
