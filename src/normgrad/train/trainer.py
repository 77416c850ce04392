"""The training loop: deterministic, checkpointed, resumable to the bit.

Determinism: weights come from ``seed``; the order of the data in epoch ``e`` is
``default_rng([seed, e]).permutation(n)``, so the data position is just the step number.
A checkpoint holds the parameters, running statistics, optimizer state, step and the
per-step loss/accuracy history; resuming from it replays exactly the steps an
uninterrupted run would take, so a run killed at any point and resumed ends with the same
``model.npz``.

Files in the output directory, each written atomically (:mod:`normgrad.io`):

- ``config.json``: the run's settings (``--resume`` reads them back; written by
  :mod:`normgrad.train.run`);
- ``checkpoint.npz``: the latest checkpoint (verified on load);
- ``metrics.csv``: step, mean loss and batch accuracy over the last ``log_every`` steps,
  and the accuracy on the evaluation split (``test_acc``) at evaluation steps;
- ``model.npz``: the final parameters and running statistics, by plain dotted names, and
  the run's configuration (``config``), so the model describes itself under its checksum
  (with ``eval_stats="population"``, the population statistics the run is evaluated with).

A write that fails (a full disk, a directory made read-only) raises :class:`RunWriteError`
naming the file, with the previous version of that file left as it was. With
``stop_on_signals`` SIGINT and SIGTERM end the run after the current step, with a
checkpoint: :class:`TrainingInterrupted`.

Inference statistics (``eval_stats``): batch norm is evaluated with its running averages,
or with the paper's population statistics (Algorithm 2, :mod:`normgrad.nn.population`):
the mean and unbiased variance of each layer's input over ``population_batches`` training
mini-batches, recomputed at every evaluation from the weights as they are then (the
metrics then also hold ``test_acc_running``, the accuracy the running averages give). The
batches are the first ones of epoch 0, so they are the same at every evaluation and
after a resume.

Threads: the matrices of these networks are small (the paper's: 60 x 784 by 784 x 100),
and there a second BLAS thread costs more in synchronization than it saves; on a busy
machine it can make a step ten times slower. :meth:`Trainer.run` therefore limits BLAS and
OpenMP to ``blas_threads`` threads (default 1) with threadpoolctl (``normgrad[train]``;
without it the libraries keep their own setting).
"""

from __future__ import annotations

import contextlib
import csv
import io
import itertools
import json
import math
import os
import signal
import threading
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from normgrad.data import Dataset, Split, load_dataset
from normgrad.errors import ConfigError, NonFiniteStatisticsWarning, NormgradUsageError
from normgrad.io import atomic_write
from normgrad.nn import SGD, Adam, FullyConnectedNet, softmax_cross_entropy
from normgrad.nn.population import (
    batch_norm_layers,
    population_statistics,
    recompute_population_statistics,
    using_statistics,
)
from normgrad.progress import progress_bar
from normgrad.train.checkpoint import CheckpointError, load_verified, save_atomic
from normgrad.train.config import GROUP_NORM_GROUPS, TrainConfig

#: The files a training run writes in its directory.
RUN_FILES = ("config.json", "metrics.csv", "model.npz", "checkpoint.npz")
#: The key of the run's configuration (JSON) inside model.npz and checkpoint.npz.
MODEL_CONFIG = "config"
#: What a network may take, as a share of the machine's memory (the rest is the data,
#: NumPy's temporaries and everything else running).
MEMORY_SHARE = 0.5


class RunWriteError(NormgradUsageError):
    """A run's file could not be written (a full disk, no permission); the previous
    version of the file is left as it was."""


class TrainingInterrupted(Exception):
    """SIGINT or SIGTERM stopped the run after a finished step, with a checkpoint.

    ``signal_number`` is the signal, ``step`` the last finished step and
    ``checkpoint_path`` where it was saved."""

    def __init__(self, signal_number: int, step: int, total: int, checkpoint_path: Path):
        name = signal.Signals(signal_number).name
        super().__init__(f"{name} at step {step} of {total}")
        self.signal_number, self.step, self.total = signal_number, step, total
        self.checkpoint_path = checkpoint_path


class TrainingDiverged(Exception):
    """The loss, the parameters or the running statistics became NaN or Inf; the last good
    checkpoint is left as it was.

    ``checkpoint_kept`` says whether the run directory holds one (set by :meth:`Trainer.run`).
    """

    checkpoint_kept = False


def _nonfinite_buffer(model) -> str | None:
    """The name of the first buffer (running statistic) holding NaN/Inf, or None."""
    for name, value in model.buffers().items():
        if not np.all(np.isfinite(value)):
            return name
    return None


def build_model(config: TrainConfig, data: Dataset, comm=None) -> FullyConnectedNet:
    return FullyConnectedNet(
        data.num_features,
        config.hidden,
        data.num_classes,
        normalization=None if config.norm == "none" else config.norm,
        activation=config.activation,
        weight_scale=config.weight_scale,
        seed=config.seed,
        dtype=np.dtype(config.dtype),
        num_groups=GROUP_NORM_GROUPS,
        comm=comm,
    )


def _machine_memory() -> int | None:
    """Physical memory in bytes (POSIX), or None where it cannot be asked."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def check_run_fits(
    config: TrainConfig, num_features: int, num_classes: int, total_steps: int
) -> None:
    """ConfigError if a run of ``config`` would need more than ``MEMORY_SHARE`` of the
    machine's memory: weights, gradients and optimizer state (3 or 4 copies of the
    parameters), the activations of a training batch and of an evaluation batch (about 8
    arrays of each layer's width per sample, as the layers keep for backward), and the
    per-step loss and accuracy history (16 bytes a step)."""
    dims = [num_features, *config.hidden, num_classes]
    params = sum(a * b + b for a, b in itertools.pairwise(dims))
    itemsize = np.dtype(config.dtype).itemsize
    copies = 4 if config.optimizer == "adam" else 3
    samples = config.batch_size + 2000  # accuracy() evaluates 2000 images at a time
    need = itemsize * (copies * params + 8 * samples * sum(dims)) + 16 * total_steps
    memory = _machine_memory()
    if memory is not None and need > MEMORY_SHARE * memory:
        raise ConfigError(
            f"--hidden {','.join(map(str, config.hidden))} with --batch-size "
            f"{config.batch_size} for {total_steps:,} steps needs about {need / 2**30:,.1f} GiB "
            f"({params:,} parameters, {config.dtype}); at most {MEMORY_SHARE:.0%} of this "
            f"machine's {memory / 2**30:.1f} GiB is allowed: choose smaller sizes"
        )


def build_optimizer(config: TrainConfig, model):
    if config.optimizer == "adam":
        return Adam(model, lr=config.lr)
    return SGD(model, lr=config.lr, momentum=config.momentum)


@contextlib.contextmanager
def blas_threads(limit: int | None) -> Iterator[bool]:
    """BLAS and OpenMP limited to ``limit`` threads within the block (threadpoolctl); None
    changes nothing. Yields whether the limit is in force (False without threadpoolctl)."""
    if limit is None:
        yield False
        return
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # an optional speed-up: train anyway, as the libraries are set
        yield False
        return
    with threadpool_limits(limits=limit):
        yield True


def accuracy(model, x: np.ndarray, y: np.ndarray, batch: int = 2000) -> float:
    """Accuracy on images ``x`` (n, features) with labels ``y`` (n,), in eval mode (batch
    norm with the statistics its running buffers hold); the model is put back in training
    mode."""
    model.eval()
    correct = sum(
        int((model.forward(x[i : i + batch]).argmax(axis=1) == y[i : i + batch]).sum())
        for i in range(0, len(x), batch)
    )
    model.train()
    return correct / len(x)


@dataclass
class RunResult:
    """What a finished run reached: ``accuracy`` on the ``split`` it was evaluated on."""

    steps: int
    accuracy: float
    split: str  # "test", or "validation" for a dataset that holds one out
    metrics: list[dict]


class Trainer:
    """Runs one configuration in ``out_dir``.

    ``data`` (default: the configured dataset) supplies the training images and the split
    progress is measured on: ``evaluate_on="test"``, or ``"validation"`` for a dataset
    with one held out (:meth:`Dataset.hold_out_validation`). The metrics name the split:
    ``test_acc`` or ``validation_acc``.

    ``probe(step, model) -> dict`` (optional) is called at each evaluation and its values go
    into the metrics rows (the ioffe2015 experiment records sigmoid-input percentiles so);
    it runs while eval mode holds the statistics the run is evaluated with. With
    ``eval_stats="population"``, a probe's ``running_averages(step, model) -> dict``, if it
    has one, is called first, while eval mode still holds the running averages.
    ``extra_eval_steps``: steps to evaluate at besides every ``eval_every`` (the experiment
    adds log-spaced early ones, so the start of training is visible on a log axis).
    ``progress`` shows a bar while a terminal watches; ``bar_options`` go to tqdm.
    ``blas_threads``: BLAS/OpenMP threads while training (module docstring; None: leave
    the libraries' own setting).
    """

    def __init__(
        self,
        config: TrainConfig,
        out_dir: str | Path,
        *,
        data: Dataset | None = None,
        evaluate_on: str = "test",
        probe: Callable | None = None,
        progress: bool = False,
        bar_options: Mapping[str, Any] | None = None,
        label: str = "train",
        comm=None,
        stop_on_signals: bool = False,
        blas_threads: int | None = 1,
        extra_eval_steps=(),
    ):
        config.validate(data_supplied=data is not None)
        self.blas_threads = blas_threads
        self.extra_eval_steps = frozenset(int(s) for s in extra_eval_steps)
        self.config, self.out = config, Path(out_dir)
        # Data-parallel over MPI: every rank takes its slice of each global batch, batch
        # norm is synchronized, gradients are summed in one buffer, and rank 0 writes.
        self.comm = comm
        self.rank = 0 if comm is None else comm.Get_rank()
        self.world = 1 if comm is None else comm.Get_size()
        self.data = data if data is not None else load_dataset(config.dataset, config.data_dir)
        eval_split = {"test": self.data.test, "validation": self.data.validation}.get(evaluate_on)
        if eval_split is None:
            raise ValueError(f"{self.data.name} has no {evaluate_on!r} split to evaluate on")
        self.steps_per_epoch = len(self.data.train) // config.batch_size
        if self.steps_per_epoch < 1:
            raise ConfigError(
                f"--batch-size {config.batch_size} is larger than the training set "
                f"({len(self.data.train)} samples)"
            )
        self.total = config.steps or config.epochs * self.steps_per_epoch
        check_run_fits(config, self.data.num_features, self.data.num_classes, self.total)
        self.model = build_model(config, self.data, comm)
        self.opt = build_optimizer(config, self.model)
        self.probe, self.label = probe, label
        self.progress, self.bar_options = progress, dict(bar_options or {})
        dtype = np.dtype(config.dtype)
        self.train_split = Split(self.data.train.x.astype(dtype, copy=False), self.data.train.y)
        self.eval_split = Split(eval_split.x.astype(dtype, copy=False), eval_split.y)
        self.eval_name = evaluate_on
        self.eval_key = f"{evaluate_on}_acc"
        self.step = 0
        self.losses = np.zeros(self.total)
        self.accs = np.zeros(self.total)
        self.evals: list[dict] = []  # one per evaluation: step, accuracy, probe values
        self._perm_epoch, self._perm = -1, None
        self.stop_on_signals = stop_on_signals
        self._signal: int | None = None  # the signal that asked this rank to stop
        self._stop_agreed = False  # every rank has heard it (one rank is enough)
        self._population_batches: list[np.ndarray] | None = None

    # -- paths -------------------------------------------------------------
    @property
    def checkpoint_path(self) -> Path:
        return self.out / "checkpoint.npz"

    # -- state -------------------------------------------------------------
    def _state(self) -> dict[str, np.ndarray]:
        state = {f"model/{k}": v for k, v in self.model.state_dict().items()}
        state |= {f"optim/{k}": v for k, v in self.opt.state_dict().items()}
        state["step"] = np.array(self.step)
        state["losses"] = self.losses[: self.step]
        state["accs"] = self.accs[: self.step]
        state["evals"] = np.array(json.dumps(self.evals))
        state[MODEL_CONFIG] = np.array(self.config.to_json())
        state["world_size"] = np.array(self.world)
        return state

    def save_checkpoint(self) -> None:
        # Every rank holds the same parameters, so every rank reaches the same verdict.
        params = self.model.parameters()
        if not all(np.all(np.isfinite(p)) for p in params.values()):
            raise TrainingDiverged(f"parameters became NaN/Inf by step {self.step}")
        bad = _nonfinite_buffer(self.model)
        if bad:
            raise TrainingDiverged(f"running statistic {bad} became NaN/Inf by step {self.step}")
        with self.rank_0_writes():
            if self.rank == 0:
                self._note_where(f"step {self.step} (writing checkpoint.npz)")
                kept = "the previous checkpoint is kept"
                if not self.checkpoint_path.exists():
                    kept = "no checkpoint was written yet"
                with self.writing(self.checkpoint_path, kept):
                    save_atomic(self.checkpoint_path, self._state())

    @contextlib.contextmanager
    def rank_0_writes(self):
        """Rank 0 writes inside this block; over MPI every rank then hears whether it could.

        A write that fails on rank 0 (a full disk) then raises the same RunWriteError on
        every rank at the same step, and the job ends like any usage error: one line,
        exit 2. The alternative, rank 0 aborting the job while the others wait in the next
        step's collective, loses the line whenever ``mpiexec`` tears the job down before
        it has forwarded rank 0's stderr (seen on a loaded machine)."""
        failure = None
        try:
            yield
        except RunWriteError as exc:
            if self.comm is None:
                raise
            failure = exc
        if self.comm is None:
            return
        message = self.comm.allgather(None if failure is None else str(failure))[0]
        if message is not None:
            raise RunWriteError(
                f"rank 0 of {self.world}: {message}; every rank stopped after step {self.step}"
            ) from None

    @contextlib.contextmanager
    def writing(self, path: Path, kept: str, then: str | None = None):
        """Turn an OSError while writing ``path`` into a RunWriteError saying what is kept
        and what to run ``then`` (default: the command that resumes)."""
        try:
            yield
        except OSError as exc:
            reason = exc.strerror or str(exc)
            if then is None and self.comm is not None:
                then = f"mpiexec -n {self.world} normgrad train --resume {self.out} --distributed"
            then = then or f"normgrad train --resume {self.out}"
            raise RunWriteError(
                f"cannot write {path}: {reason}; {kept} (free space or fix the permissions, "
                f"then: {then})"
            ) from None

    def load_checkpoint(self) -> None:
        """Continue from ``checkpoint.npz``; CheckpointError if it belongs to another run."""
        path = self.checkpoint_path
        state = load_verified(path)
        try:
            saved = TrainConfig.from_json(str(state[MODEL_CONFIG]))
            saved_world = int(state.get("world_size", 1))
        except (KeyError, ValueError, TypeError) as exc:
            raise CheckpointError(f"{path}: does not fit this run ({exc})") from None
        if saved != self.config:
            difference = config_difference(saved, self.config)
            raise CheckpointError(f"{path}: written by a different configuration ({difference})")
        if saved_world != self.world:
            raise CheckpointError(
                f"{path}: written by {saved_world} process(es); resume it with the same "
                f"number (this run has {self.world})"
            )
        try:  # everything is checked before anything of the trainer changes
            step_array = np.asarray(state["step"])
            if step_array.shape != () or step_array.dtype.kind not in "iu":
                raise ValueError(f"step must be an integer; got {step_array!r}")
            step = int(step_array)
            if not 0 <= step <= self.total:
                raise ValueError(f"step {step} is outside this run's 0..{self.total}")
            for name in ("losses", "accs"):
                if np.shape(state[name]) != (step,) or state[name].dtype.kind != "f":
                    raise ValueError(f"{name} must hold {step} numbers; got {state[name]!r}")
            evals = json.loads(str(state["evals"]))
            if not isinstance(evals, list) or not all(isinstance(e, dict) for e in evals):
                raise ValueError("evals must be a list of evaluations")
            before = self.model.state_dict()
            self.model.load_state_dict(
                {k[6:]: v for k, v in state.items() if k.startswith("model/")}
            )
            try:
                self.opt.load_state_dict(
                    {k[6:]: v for k, v in state.items() if k.startswith("optim/")}
                )
            except ValueError:
                self.model.load_state_dict(before)  # the model as it was
                raise
        except (KeyError, ValueError, TypeError) as exc:
            raise CheckpointError(f"{path}: does not fit this run ({exc})") from None
        self.losses[:step] = state["losses"]
        self.accs[:step] = state["accs"]
        self.step, self.evals = step, evals

    # -- the loop ----------------------------------------------------------
    def batch_indices(self, step: int) -> np.ndarray:
        """Indices into the training split of the global batch of training step ``step``
        (0-based): epoch ``e`` visits the images in ``default_rng([seed, e])``'s order."""
        epoch, k = divmod(step, self.steps_per_epoch)
        if epoch != self._perm_epoch:
            rng = np.random.default_rng([self.config.seed, epoch])
            self._perm, self._perm_epoch = rng.permutation(len(self.train_split)), epoch
        bs = self.config.batch_size
        return self._perm[k * bs : (k + 1) * bs]

    def population_batches(self) -> list[np.ndarray]:
        """The training mini-batches population statistics are taken over: the first
        ``population_batches`` of epoch 0 (this rank's slice of each, under MPI); made once."""
        if self._population_batches is not None:
            return self._population_batches
        cfg = self.config
        bs = cfg.batch_size
        count = min(cfg.population_batches, self.steps_per_epoch)
        order = np.random.default_rng([cfg.seed, 0]).permutation(len(self.train_split))
        batches = [order[k * bs : (k + 1) * bs] for k in range(count)]
        if self.comm is not None:
            batches = [np.array_split(idx, self.world)[self.rank] for idx in batches]
        self._population_batches = [self.train_split.x[idx] for idx in batches]
        return self._population_batches

    def uses_population_statistics(self) -> bool:
        return self.config.eval_stats == "population" and bool(batch_norm_layers(self.model))

    def inference_statistics(self):
        """A context in which eval mode normalizes as ``eval_stats`` says: the population
        statistics of the weights as they are now, or the running averages."""
        if not self.uses_population_statistics():
            return contextlib.nullcontext(self.model)
        stats = population_statistics(self.model, self.population_batches())
        return using_statistics(self.model, stats)

    def _evaluate(self) -> None:
        split = self.eval_split
        row = {"step": self.step}
        if self.uses_population_statistics():  # what the running averages would give
            row[f"{self.eval_key}_running"] = accuracy(self.model, split.x, split.y)
            if hasattr(self.probe, "running_averages"):
                row |= self.probe.running_averages(self.step, self.model)
        with self.inference_statistics():
            row[self.eval_key] = accuracy(self.model, split.x, split.y)
            if self.probe is not None:
                row |= self.probe(self.step, self.model)
        self.evals.append(row)

    def run(self) -> RunResult:
        """Train from ``self.step`` to the last step, checkpointing on the way; then write
        ``metrics.csv`` and ``model.npz``. Raises :class:`TrainingDiverged` on NaN/Inf."""
        cfg = self.config
        bar = progress_bar(
            total=self.total,
            initial=self.step,
            desc=self.label,
            enabled=self.progress,
            **self.bar_options,
        )
        try:
            with bar, self._signals_stop_the_run(), blas_threads(self.blas_threads):
                if self.step == 0 and not self.evals:
                    self._evaluate()  # the starting point of every curve
                shown = self.step  # the step the bar shows
                while self.step < self.total:
                    self._note_where(f"step {self.step + 1}")
                    loss, acc = self.train_step(self.step)
                    self.losses[self.step] = loss
                    self.accs[self.step] = acc
                    self.step += 1
                    if (
                        self.step % cfg.eval_every == 0
                        or self.step == self.total
                        or self.step in self.extra_eval_steps
                    ):
                        self._evaluate()
                    if self.step % cfg.checkpoint_every == 0 or self.step == self.total:
                        self.save_checkpoint()
                    if self.step % cfg.log_every == 0 or self.step == self.total:
                        bar.update(self.step - shown)
                        shown = self.step
                        last = self.evals[-1][self.eval_key]
                        bar.set_postfix({"loss": f"{loss:.3f}", self.eval_key: f"{last:.3f}"})
                    if self._stop_requested() and self.step < self.total:
                        if self.step % cfg.checkpoint_every:  # not saved at this step yet
                            self.save_checkpoint()
                        raise TrainingInterrupted(
                            self._signal or signal.SIGINT, self.step, self.total,
                            self.checkpoint_path,
                        )  # fmt: skip
        except TrainingDiverged as exc:
            exc.checkpoint_kept = self.checkpoint_path.exists()
            raise
        with blas_threads(self.blas_threads):
            self.write_outputs()
        return RunResult(self.step, self.evals[-1][self.eval_key], self.eval_name,
                         self.metrics_rows())  # fmt: skip

    def _note_where(self, where: str) -> None:
        """Tell a watched communicator (``--rank-timeout``) what this rank is doing."""
        if hasattr(self.comm, "where"):
            self.comm.where = where

    @contextlib.contextmanager
    def _signals_stop_the_run(self):
        """With ``stop_on_signals`` (main thread only): SIGINT and SIGTERM set a flag the loop
        reads after each step; a second signal gets the previous handler at once."""
        if not self.stop_on_signals or threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

        def note(signum, frame):
            self._signal = signum
            for s, handler in previous.items():  # the next signal is not deferred
                signal.signal(s, handler)

        for s in previous:
            signal.signal(s, note)
        try:
            yield
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)

    def _stop_requested(self) -> bool:
        """Whether to stop after this step: this rank's signal, or over MPI any rank's (the
        flag rides in the step's gradient sum, so every rank stops at the same step)."""
        if self.comm is None:
            return self._signal is not None
        return self._stop_agreed

    def train_step(self, step: int) -> tuple[float, float]:
        """One optimizer step on the global batch of training step ``step``; returns the
        batch's mean loss and accuracy. Does not record them or advance ``self.step``
        (:meth:`run` does); raises :class:`TrainingDiverged` on a NaN/Inf loss."""
        idx = self.batch_indices(step)
        if self.comm is not None:
            idx = np.array_split(idx, self.world)[self.rank]  # this rank's slice
        x, y = self.train_split.x[idx], self.train_split.y[idx]
        # A batch whose statistics are NaN/Inf (the norm layers then keep their running
        # statistics and warn) ends the run as a NaN/Inf loss does; so do running statistics
        # made non-finite by a layer built with skip_nonfinite=False.
        with warnings.catch_warnings():
            warnings.simplefilter("error", NonFiniteStatisticsWarning)
            try:
                scores = self.model.forward(x)
            except NonFiniteStatisticsWarning as exc:
                raise TrainingDiverged(f"at step {step + 1}, {exc}") from None
        bad = _nonfinite_buffer(self.model)
        if bad:
            raise TrainingDiverged(f"running statistic {bad} became NaN/Inf at step {step + 1}")
        if len(idx):
            loss, dscores = softmax_cross_entropy(scores, y)
        else:  # a rank with no samples this step still takes part in every collective
            loss, dscores = 0.0, np.zeros_like(scores)
        correct = float((scores.argmax(axis=1) == y).sum())
        if self.comm is not None:
            # The loss is the mean over the global batch: weight this slice by its share.
            dscores *= len(idx) / self.config.batch_size
        self.model.backward(dscores)
        if self.comm is not None:
            loss, correct = self._allreduce_gradients(loss * len(idx), correct)
            loss /= self.config.batch_size
            n = self.config.batch_size
        else:
            n = len(idx)
        if not math.isfinite(loss):
            raise TrainingDiverged(f"the loss became {loss} at step {step + 1}; try a smaller --lr")
        self.opt.step()
        return float(loss), correct / n

    def _allreduce_gradients(self, loss_sum: float, correct: float) -> tuple[float, float]:
        """Sum every gradient (and the loss and hit count) over the ranks: one collective."""
        grads = self.model.gradients()
        stop = float(self._signal is not None)  # how many ranks were asked to stop
        send = np.concatenate(
            [g.ravel().astype(np.float64) for g in grads.values()] + [[loss_sum, correct, stop]]
        )
        recv = np.empty_like(send)
        self.comm.Allreduce(send, recv)
        start = 0
        for g in grads.values():
            g[...] = recv[start : start + g.size].reshape(g.shape)
            start += g.size
        self._stop_agreed = bool(recv[-1] > 0)
        return recv[-3], recv[-2]

    # -- outputs -----------------------------------------------------------
    def metrics_rows(self) -> list[dict]:
        """Rows every ``log_every`` steps (means over the interval) and at evaluations."""
        every = self.config.log_every
        evals = {e["step"]: e for e in self.evals}
        steps = sorted(set(range(every, self.step + 1, every)) | set(evals) | {self.step})
        rows = []
        for s in steps:
            lo = max(0, s - every)
            row = {"step": s}
            if s > 0:
                row["loss"] = float(self.losses[lo:s].mean())
                row["train_acc"] = float(self.accs[lo:s].mean())
            row |= {k: v for k, v in evals.get(s, {}).items() if k != "step"}
            rows.append(row)
        return rows

    def write_outputs(self) -> None:
        """``metrics.csv`` and ``model.npz``, each written atomically (rank 0 only)."""
        if self.uses_population_statistics():
            # The model a user evaluates is the one the run was evaluated as (Algorithm 2);
            # every rank takes part: synchronized batch norm runs collectives.
            recompute_population_statistics(self.model, self.population_batches())
        with self.rank_0_writes():
            if self.rank == 0:
                self._write_metrics_and_model()

    def _write_metrics_and_model(self) -> None:
        rows = self.metrics_rows()
        fields = ["step", "loss", "train_acc", self.eval_key]
        fields += sorted({k for r in rows for k in r} - set(fields))
        text = io.StringIO(newline="")
        writer = csv.DictWriter(text, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
        kept = "the checkpoint is kept"
        with self.writing(self.out / "metrics.csv", kept):
            atomic_write(self.out / "metrics.csv", text.getvalue())
        model = self.model.state_dict() | {MODEL_CONFIG: np.array(self.config.to_json())}
        with self.writing(self.out / "model.npz", kept):
            save_atomic(self.out / "model.npz", model)


def config_difference(a: TrainConfig, b: TrainConfig, labels: tuple[str, str] = ("", "")) -> str:
    """The settings where ``a`` and ``b`` differ, as ``--steps 30 vs 20, ...`` (with
    ``labels``: ``--steps 30 (label a) vs 20 (label b)``)."""
    da, db = asdict(a), asdict(b)
    la, lb = (f" ({label})" if label else "" for label in labels)
    diffs = [f"--{k.replace('_', '-')} {da[k]}{la} vs {db[k]}{lb}" for k in da if da[k] != db[k]]
    return ", ".join(diffs) or "no setting differs"


def stored_config(state: dict[str, np.ndarray], path: Path) -> TrainConfig | None:
    """The configuration a checkpoint or model file holds (under its checksum), or None
    for a file written before files held one; CheckpointError if it cannot be read."""
    if MODEL_CONFIG not in state:
        return None
    try:
        return TrainConfig.from_json(str(state[MODEL_CONFIG]))
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"{path}: its stored configuration is unreadable ({exc})") from None


def read_config(run_dir: str | Path) -> TrainConfig:
    """The ``config.json`` of a run directory, validated; CheckpointError (saying what is
    wrong) if there is none, or it is empty, not JSON, or not a valid configuration."""
    path = Path(run_dir) / "config.json"
    if not Path(run_dir).is_dir():
        raise CheckpointError(f"{run_dir}: no such run directory")
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise CheckpointError(f"{run_dir}: no config.json; not a normgrad training run") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path}: unreadable ({exc})") from None
    try:
        config = TrainConfig.from_json(text)
        config.validate()
    except (ValueError, TypeError) as exc:  # ConfigError says what; TypeError: a bad value
        raise CheckpointError(f"{path}: not a valid training configuration: {exc}") from None
    return config


def load_model(run_dir: str | Path) -> tuple[FullyConnectedNet, TrainConfig, Dataset]:
    """The model saved in ``run_dir`` (model.npz), its config and dataset.

    The configuration comes from model.npz itself (checked by its checksum); config.json,
    its readable copy, must agree with it, or a CheckpointError names the settings that
    differ. A model.npz from before models held their configuration uses config.json.
    """
    run_dir = Path(run_dir)
    model_path = run_dir / "model.npz"
    if not run_dir.is_dir():
        raise CheckpointError(f"{run_dir}: no such run directory")
    if not model_path.exists():
        if (run_dir / "config.json").exists():
            raise CheckpointError(
                f"{run_dir}: no model.npz; its training has not finished "
                f"(normgrad train --resume {run_dir})"
            )
        raise CheckpointError(
            f"{run_dir}: no config.json or model.npz; not a normgrad training run"
        )
    state = load_verified(model_path)
    config = stored_config(state, model_path)
    state.pop(MODEL_CONFIG, None)
    try:
        copy = read_config(run_dir)
    except CheckpointError:
        if config is None:
            raise
        copy = config  # config.json is only a copy; the model's own is under its checksum
    if config is None:
        config = copy
    elif copy != config:
        raise CheckpointError(
            f"{run_dir / 'config.json'} does not match the configuration stored in "
            f"{model_path} ({config_difference(copy, config)}); the model was trained with the "
            "stored one: restore config.json"
        )
    try:
        config.validate()
    except ValueError as exc:
        raise CheckpointError(f"{model_path}: {exc}") from None
    data = load_dataset(config.dataset, config.data_dir)
    model = build_model(config, data)
    try:
        model.load_state_dict(state)
    except ValueError as exc:
        raise CheckpointError(f"{model_path}: {exc}") from None
    return model, config, data
