"""Training one run: its config (config), the settings that change speed only (settings), one
optimizer step (step), the loop with checkpoints and resume (loop, stage), evaluation (evaluate)
and the run directory's files (rundir)."""

from squeezestudy.training.config import TrainConfig, build_model
from squeezestudy.training.loop import ConfigMismatchError, NonFiniteLossError, RunResult, fit
from squeezestudy.training.stage import TrainingInterrupted

__all__ = ["TrainConfig", "build_model", "fit", "RunResult", "ConfigMismatchError", "NonFiniteLossError",
           "TrainingInterrupted"]
