"""Training: the loop, checkpoints, and the paper reproductions (at the edge)."""

from normgrad.train.checkpoint import CheckpointError, load_verified, save_atomic
from normgrad.train.trainer import (
    RunResult,
    TrainConfig,
    Trainer,
    TrainingDiverged,
    accuracy,
    build_model,
    load_model,
)

__all__ = [
    "CheckpointError",
    "RunResult",
    "TrainConfig",
    "Trainer",
    "TrainingDiverged",
    "accuracy",
    "build_model",
    "load_model",
    "load_verified",
    "save_atomic",
]
