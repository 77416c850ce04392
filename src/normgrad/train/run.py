"""Training runs in a directory: start one, resume one, evaluate one.

These are what ``normgrad train``, ``normgrad train --resume`` and ``normgrad evaluate``
call; each returns a small result for the caller to print. Bad input (a directory that
already holds a run, a missing config.json, a damaged checkpoint, a bad setting, a missing
dataset) raises a :class:`~normgrad.errors.NormgradUsageError`; a diverged run raises
:class:`~normgrad.train.trainer.TrainingDiverged`.

With an MPI communicator (``comm``) every rank calls the same function: each trains its
slice of every batch, rank 0 alone writes files and logs.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from normgrad.errors import MissingDependencyError, NormgradUsageError
from normgrad.io import atomic_write
from normgrad.train.config import TrainConfig
from normgrad.train.trainer import Trainer, TrainingDiverged, accuracy, load_model, read_config

__all__ = ["Evaluation", "RunReport", "evaluate_run", "mpi_world", "resume_run", "start_run"]


@dataclass
class RunReport:
    """A finished run: its directory, steps taken, and accuracy on the ``split``."""

    run_dir: Path
    steps: int
    accuracy: float
    split: str
    resumed_at: int | None = None  # the step a resumed run continued from

    @property
    def model_path(self) -> Path:
        return self.run_dir / "model.npz"


@dataclass
class Evaluation:
    """A trained model's test accuracy over ``count`` images of ``dataset``."""

    run_dir: Path
    accuracy: float
    count: int
    dataset: str


def mpi_world():
    """``MPI.COMM_WORLD``; MissingDependencyError when mpi4py is not installed."""
    try:
        from mpi4py import MPI
    except ImportError:
        raise MissingDependencyError(
            "distributed training needs mpi4py: pip install 'normgrad[mpi]'"
        ) from None
    return MPI.COMM_WORLD


def start_run(
    config: TrainConfig, out_dir: str | Path, *, comm=None, progress: bool = False
) -> RunReport:
    """Train ``config`` from scratch in ``out_dir`` (created if need be), which must not
    already hold a run. Writes config.json, checkpoint.npz, metrics.csv and model.npz."""
    out = Path(out_dir)
    if (out / "checkpoint.npz").exists():
        raise NormgradUsageError(
            f"{out} already holds a run: --resume {out}, or choose another --out"
        )
    trainer = _trainer(config, out, comm, progress)
    out.mkdir(parents=True, exist_ok=True)
    if trainer.rank == 0:
        atomic_write(out / "config.json", config.to_json())
    return _train(trainer)


def resume_run(
    run_dir: str | Path,
    *,
    comm=None,
    progress: bool = False,
    log: Callable[[str], object] | None = None,
) -> RunReport:
    """Continue the run in ``run_dir`` with its own config.json from its checkpoint (from
    the start if it has none); the result is bit-for-bit that of an uninterrupted run.
    ``log`` (rank 0) hears where it resumes."""
    out = Path(run_dir)
    trainer = _trainer(read_config(out), out, comm, progress)
    resumed_at = None
    if trainer.checkpoint_path.exists():
        trainer.load_checkpoint()
        resumed_at = trainer.step
        if log is not None and trainer.rank == 0:
            log(f"resuming {out} at step {trainer.step} of {trainer.total}")
    report = _train(trainer)
    report.resumed_at = resumed_at
    return report


def evaluate_run(run_dir: str | Path) -> Evaluation:
    """The test accuracy of the model a run in ``run_dir`` saved."""
    model, config, data = load_model(run_dir)
    acc = accuracy(model, data.test.x.astype(config.dtype), data.test.y)
    return Evaluation(Path(run_dir), acc, len(data.test), config.dataset)


def _trainer(config: TrainConfig, out: Path, comm, progress: bool) -> Trainer:
    config.validate()
    rank = 0 if comm is None else comm.Get_rank()
    return Trainer(
        config, out, progress=progress and rank == 0, label=out.name or "train", comm=comm
    )


def _train(trainer: Trainer) -> RunReport:
    try:
        result = trainer.run()
    except TrainingDiverged:  # every rank sees the same loss, so all stop here together
        raise
    except Exception:
        if trainer.comm is None:
            raise
        # One failed rank must not leave the others waiting in a collective forever.
        traceback.print_exc()
        print(
            f"normgrad: rank {trainer.rank} failed; aborting all ranks", file=sys.stderr, flush=True
        )
        trainer.comm.Abort(1)
        raise  # not reached: MPI_Abort ends every rank
    return RunReport(trainer.out, result.steps, result.accuracy, result.split)
