"""Training: settings, the loop, checkpoints, and runs in a directory (at the edge)."""

from normgrad.train.checkpoint import CheckpointError, load_verified, save_atomic
from normgrad.train.config import NORM_CHOICES, TrainConfig, canonical_norm
from normgrad.train.run import (
    Evaluation,
    RankFailed,
    RunReport,
    evaluate_run,
    mpi_world,
    resume_run,
    start_run,
)
from normgrad.train.trainer import (
    RUN_FILES,
    RunResult,
    RunWriteError,
    Trainer,
    TrainingDiverged,
    TrainingInterrupted,
    accuracy,
    build_model,
    load_model,
    read_config,
)

__all__ = [
    "NORM_CHOICES",
    "RUN_FILES",
    "CheckpointError",
    "Evaluation",
    "RankFailed",
    "RunReport",
    "RunResult",
    "RunWriteError",
    "TrainConfig",
    "Trainer",
    "TrainingDiverged",
    "TrainingInterrupted",
    "accuracy",
    "build_model",
    "canonical_norm",
    "evaluate_run",
    "load_model",
    "load_verified",
    "mpi_world",
    "read_config",
    "resume_run",
    "save_atomic",
    "start_run",
]
