"""The study file format, validation, grid expansion, trial keys and seed derivation."""

from mc_engine.study.keys import point_id, trial_seed
from mc_engine.study.spec import Study, Trial, load_study, parse_study
from mc_engine.study.units import UNIT_SECONDS, format_duration, parse_duration

__all__ = ["UNIT_SECONDS", "Study", "Trial", "format_duration", "load_study", "parse_duration",
           "parse_study", "point_id", "trial_seed"]
