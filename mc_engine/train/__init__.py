"""Hardware-aware training (``mc-engine train``): train files, the noisy forward, the loop."""

from mc_engine.train.loop import DEFAULT_OUT, TrainOutcome, train
from mc_engine.train.noisy import NoiseSpec, noisy_forward
from mc_engine.train.spec import TrainSpec, load_train, parse_train

__all__ = ["DEFAULT_OUT", "NoiseSpec", "TrainOutcome", "TrainSpec", "load_train", "noisy_forward",
           "parse_train", "train"]
