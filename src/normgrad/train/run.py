"""Training runs in a directory: start one, resume one, evaluate one.

These are what ``normgrad train``, ``normgrad train --resume`` and ``normgrad evaluate``
call; each returns a small result for the caller to print. Bad input (a directory that
already holds a run, a missing config.json, a damaged checkpoint, a bad setting, a missing
dataset) raises a :class:`~normgrad.errors.NormgradUsageError`; a diverged run raises
:class:`~normgrad.train.trainer.TrainingDiverged`.

With an MPI communicator (``comm``) every rank calls the same function: each trains its
slice of every batch, rank 0 alone writes files and logs. No rank is left waiting: setup
(checking the directory, loading the dataset and the checkpoint, writing config.json) runs
on every rank inside :func:`_agreed`, one collective in which the ranks exchange whether
they succeeded and a fingerprint of their configuration, so a failure on one rank (or ranks
that disagree on a setting) ends every rank with the same message; a failure during
training aborts the job (``MPI_Abort``) after the failed rank has printed its message
(a file rank 0 cannot write, such as a full disk, instead stops every rank together).
"""

from __future__ import annotations

import contextlib
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from normgrad.errors import ConfigError, MissingDependencyError, NormgradUsageError
from normgrad.io import atomic_write, check_output_dir, remove_stale_temporaries
from normgrad.train.checkpoint import CheckpointError, load_verified
from normgrad.train.config import TrainConfig
from normgrad.train.trainer import (
    RUN_FILES,
    RunWriteError,
    Trainer,
    TrainingDiverged,
    TrainingInterrupted,
    accuracy,
    config_difference,
    load_model,
    read_config,
    stored_config,
)

__all__ = [
    "Evaluation",
    "RankFailed",
    "RunReport",
    "evaluate_run",
    "mpi_world",
    "resume_run",
    "start_run",
]


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
    config: TrainConfig,
    out_dir: str | Path,
    *,
    comm=None,
    progress: bool = False,
    overwrite: bool = False,
    rank_timeout: float | None = None,
) -> RunReport:
    """Train ``config`` from scratch in ``out_dir`` (created if need be), which must not
    already hold a run unless ``overwrite`` (its run files are then deleted first). Writes
    config.json, checkpoint.npz, metrics.csv and model.npz. ``rank_timeout`` (MPI): seconds a
    rank may wait in a collective before the job aborts naming the silent rank."""
    comm, watchdog = _watched(comm, rank_timeout)
    with watchdog:
        return _start(config, Path(out_dir), comm, progress, overwrite)


def _start(config: TrainConfig, out: Path, comm, progress: bool, overwrite: bool) -> RunReport:
    """start_run inside its watchdog: check on every rank, then rank 0 writes, then train."""

    def check() -> Trainer:  # every rank, before anything is created
        config.validate()
        check_output_dir(out, "--out")
        existing = [name for name in RUN_FILES if (out / name).exists()]
        if existing and not overwrite:
            raise NormgradUsageError(
                f"{out} already holds a run ({', '.join(existing)}): --resume {out} to "
                "continue it, --overwrite to replace it, or choose another --out"
            )
        return _trainer(config, out, comm, progress)

    trainer = _agreed(comm, check, fingerprint=True)

    def prepare() -> None:  # rank 0 writes
        if trainer.rank != 0:
            return
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            reason = exc.strerror
            raise NormgradUsageError(f"--out {out}: cannot create it ({reason})") from None
        remove_stale_temporaries(out, RUN_FILES)
        for name in RUN_FILES:  # --overwrite: nothing of the old run may be mixed in
            (out / name).unlink(missing_ok=True)
        again = "the same command again"
        with trainer.writing(out / "config.json", "nothing was trained yet", again):
            atomic_write(out / "config.json", config.to_json())

    _agreed(comm, prepare)
    return _train(trainer)


def resume_run(
    run_dir: str | Path,
    *,
    comm=None,
    progress: bool = False,
    log: Callable[[str], object] | None = None,
    rank_timeout: float | None = None,
) -> RunReport:
    """Continue the run in ``run_dir`` from its checkpoint (from the start if it has
    none); the result is bit-for-bit that of an uninterrupted run. ``log`` (rank 0) hears
    where it resumes.

    The configuration is the checkpoint's own (under its checksum) and must match
    config.json; a config.json that is damaged or missing is rewritten from the checkpoint
    (or from model.npz). A CheckpointError explains anything else that is wrong."""
    comm, watchdog = _watched(comm, rank_timeout)
    with watchdog:
        return _resume(Path(run_dir), comm, progress, log)


def _resume(out: Path, comm, progress: bool, log) -> RunReport:
    """resume_run inside its watchdog: read on every rank, then rank 0 writes, then train."""
    notes: list[str] = []

    def check() -> Trainer:  # every rank reads; nothing is written yet
        config, rewrite = _resume_config(out)
        check_output_dir(out, "--resume")  # it will write checkpoints there
        trainer = _trainer(config, out, comm, progress)
        if rewrite:
            notes.append(f"config.json was {rewrite}; rewrote it from the run's own files")
        if trainer.checkpoint_path.exists():
            trainer.load_checkpoint()
        return trainer

    trainer = _agreed(comm, check, fingerprint=True)

    def prepare() -> None:
        if trainer.rank != 0:
            return
        remove_stale_temporaries(out, RUN_FILES)
        if notes:
            with trainer.writing(out / "config.json", "the checkpoint is kept"):
                atomic_write(out / "config.json", trainer.config.to_json())

    _agreed(comm, prepare)
    resumed_at = trainer.step if trainer.checkpoint_path.exists() else None
    if log is not None and trainer.rank == 0:
        for note in notes:
            log(note)
        if resumed_at is not None:
            log(f"resuming {out} at step {trainer.step} of {trainer.total}")
    report = _train(trainer)
    report.resumed_at = resumed_at
    return report


def _resume_config(out: Path) -> tuple[TrainConfig, str | None]:
    """The configuration to resume ``out`` with, and why config.json must be rewritten
    (None: it is fine). The checkpoint's (or a finished run's model.npz's) stored
    configuration is the authority; config.json, its readable copy, must agree."""
    if not out.is_dir():
        raise CheckpointError(f"--resume {out}: no such run directory")
    try:
        copy, problem = read_config(out), None
    except CheckpointError as exc:
        copy, problem = None, exc
    stored = None
    for name in ("checkpoint.npz", "model.npz"):
        if (out / name).exists():
            stored = stored_config(load_verified(out / name), out / name)
            break
    if copy is None:
        if stored is not None:
            return stored, "missing" if not (out / "config.json").exists() else "damaged"
        if not (out / "config.json").exists() and any(out.glob(".config.json.*.tmp")):
            raise CheckpointError(
                f"{out}: the run never started (it was stopped while writing config.json): "
                f"start it again with normgrad train --out {out} and its settings"
            )
        raise problem
    if stored is not None and stored != copy:
        raise CheckpointError(
            f"{out / 'config.json'} does not match the configuration stored in the run's "
            f"checkpoint ({config_difference(copy, stored, ('config.json', 'checkpoint'))}): "
            "restore config.json"
        )
    return copy, None


def evaluate_run(run_dir: str | Path) -> Evaluation:
    """The test accuracy of the model a run in ``run_dir`` saved (its configuration and
    config.json checked: :func:`~normgrad.train.trainer.load_model`)."""
    model, config, data = load_model(run_dir)
    acc = accuracy(model, data.test.x.astype(config.dtype), data.test.y)
    return Evaluation(Path(run_dir), acc, len(data.test), config.dataset)


class RankFailed(NormgradUsageError):
    """Another MPI rank failed in setup; the message is that rank's."""


def _agreed(comm, work: Callable, *, fingerprint: bool = False):
    """Run ``work()`` on this rank; with ``comm``, every rank then learns in one collective
    whether every rank succeeded (and, with ``fingerprint``, whether the Trainers that
    ``work`` returned share one configuration), and all fail together if not.

    Without ``comm`` this is ``work()``. A usage error on any rank becomes the same
    NormgradUsageError on every rank (naming the rank); any other exception is re-raised
    on its own rank (a bug: its traceback) and reported by the others as a RankFailed."""
    try:
        result, failure = work(), None
    except Exception as exc:
        result, failure = None, exc
    if comm is None:
        if failure is not None:
            raise failure
        return result
    if failure is None:
        message = None
    elif isinstance(failure, NormgradUsageError):
        message = str(failure)
    else:
        message = f"{type(failure).__name__}: {failure}"
    config = result.config if fingerprint and failure is None else None
    views = comm.allgather((message, None if config is None else config.fingerprint(), config))
    failed = [(rank, m) for rank, (m, _, _) in enumerate(views) if m is not None]
    if failed:
        if failure is not None and not isinstance(failure, NormgradUsageError):
            raise failure
        rank, m = failed[0]
        raise RankFailed(f"rank {rank} of {len(views)}: {m}")
    if fingerprint:
        first = views[0]
        for rank, (_, print_, other) in enumerate(views):
            if print_ != first[1]:
                raise ConfigError(
                    "the ranks disagree on the run's configuration: "
                    f"{config_difference(other, first[2], (f'rank {rank}', 'rank 0'))}; every "
                    "rank must run the same command on the same files"
                )
    return result


def _watched(comm, rank_timeout: float | None):
    """``(comm, context)``: with a ``rank_timeout``, the communicator wrapped so that a
    :class:`~normgrad.train.watchdog.Watchdog` (the context) can watch its collectives."""
    if comm is None or rank_timeout is None:
        return comm, contextlib.nullcontext()
    if not rank_timeout > 0:
        raise ConfigError(
            f"--rank-timeout must be a positive number of seconds; got {rank_timeout}"
        )
    from normgrad.train.watchdog import Watchdog, WatchedComm

    watched = WatchedComm(comm)
    return watched, Watchdog(watched, rank_timeout)


def _trainer(config: TrainConfig, out: Path, comm, progress: bool) -> Trainer:
    config.validate()
    rank = 0 if comm is None else comm.Get_rank()
    return Trainer(
        config, out, progress=progress and rank == 0, label=out.name or "train", comm=comm,
        stop_on_signals=True,
    )  # fmt: skip


def _train(trainer: Trainer) -> RunReport:
    try:
        result = trainer.run()
    except (TrainingDiverged, TrainingInterrupted, RunWriteError):
        raise  # every rank stops here together (a failed write: Trainer.rank_0_writes)
    except Exception as exc:
        if trainer.comm is None:
            raise
        # One failed rank must not leave the others waiting in a collective forever.
        from normgrad.train.watchdog import abort_job

        if isinstance(exc, NormgradUsageError):
            line = f"normgrad train: error: rank {trainer.rank}: {exc}; aborting all ranks"
            abort_job(trainer.comm, 2, line)
        traceback.print_exc()
        abort_job(trainer.comm, 1, f"normgrad: rank {trainer.rank} failed; aborting all ranks")
    return RunReport(trainer.out, result.steps, result.accuracy, result.split)
