"""The training loop: deterministic, checkpointed, resumable to the bit.

Determinism: weights come from ``seed``; the order of the data in epoch ``e`` is
``default_rng([seed, e]).permutation(n)``, so the data position is just the step number.
A checkpoint holds the parameters, running statistics, optimizer state, step and the
per-step loss/accuracy history; resuming from it replays exactly the steps an
uninterrupted run would take, so a run killed at any point and resumed ends with the same
``model.npz``.

Files in the output directory:

- ``config.json``: the run's settings (``--resume`` reads them back);
- ``checkpoint.npz``: the latest checkpoint (atomic, verified on load);
- ``metrics.csv``: step, mean loss and batch accuracy over the last ``log_every`` steps,
  and test accuracy at evaluation steps;
- ``model.npz``: the final parameters and running statistics, by plain dotted names.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from normgrad.data import Dataset, load_dataset
from normgrad.nn import SGD, Adam, FullyConnectedNet, softmax_cross_entropy
from normgrad.train.checkpoint import CheckpointError, load_verified, save_atomic

NORMS = {"batch": "batchnorm", "layer": "layernorm", "group": "groupnorm", "none": None}


@dataclass
class TrainConfig:
    """Everything that defines a run (saved as ``config.json``)."""

    dataset: str = "digits"
    data_dir: str | None = None
    norm: str = "batch"  # batch | layer | group | none
    hidden: list[int] = field(default_factory=lambda: [100, 100, 100])
    activation: str = "relu"
    batch_size: int = 60
    steps: int | None = None
    epochs: int | None = None
    lr: float = 0.1
    optimizer: str = "sgd"  # sgd | adam
    momentum: float = 0.0
    weight_scale: float | str = "he"
    seed: int = 0
    checkpoint_every: int = 1000
    eval_every: int = 500
    log_every: int = 50
    dtype: str = "float32"

    def validate(self) -> None:
        if self.norm not in NORMS:
            raise ValueError(f"--norm must be one of {', '.join(NORMS)}; got {self.norm!r}")
        if self.optimizer not in ("sgd", "adam"):
            raise ValueError(f"--optimizer must be sgd or adam; got {self.optimizer!r}")
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"--dtype must be float32 or float64; got {self.dtype!r}")
        if (self.steps is None) == (self.epochs is None):
            raise ValueError("give exactly one of --steps and --epochs")
        for name in ("batch_size", "checkpoint_every", "eval_every", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be at least 1")
        if (self.steps or self.epochs) < 1:
            raise ValueError("--steps/--epochs must be at least 1")
        if not self.hidden or any(h < 1 for h in self.hidden):
            raise ValueError(f"--hidden must list positive sizes; got {self.hidden}")

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> TrainConfig:
        return cls(**json.loads(text))


class TrainingDiverged(Exception):
    """The loss became NaN or Inf; the last good checkpoint is left as it was."""


def build_model(config: TrainConfig, data: Dataset, comm=None) -> FullyConnectedNet:
    return FullyConnectedNet(
        data.num_features,
        config.hidden,
        data.num_classes,
        normalization=NORMS[config.norm],
        activation=config.activation,
        weight_scale=config.weight_scale,
        seed=config.seed,
        dtype=np.dtype(config.dtype),
        comm=comm,
    )


def build_optimizer(config: TrainConfig, model):
    if config.optimizer == "adam":
        return Adam(model, lr=config.lr)
    return SGD(model, lr=config.lr, momentum=config.momentum)


def accuracy(model, x: np.ndarray, y: np.ndarray, batch: int = 2000) -> float:
    """Accuracy in eval mode (running statistics); the model is put back in training mode."""
    model.eval()
    correct = sum(
        int((model.forward(x[i : i + batch]).argmax(axis=1) == y[i : i + batch]).sum())
        for i in range(0, len(x), batch)
    )
    model.train()
    return correct / len(x)


@dataclass
class RunResult:
    steps: int
    test_accuracy: float
    metrics: list[dict]


class Trainer:
    """Runs one configuration in ``out_dir``.

    ``probe(step, model) -> dict`` (optional) is called at each evaluation and its values go
    into the metrics rows (the paper reproduction records sigmoid-input percentiles so).
    ``progress`` is a tqdm-like bar factory (``None``: no bar).
    """

    def __init__(
        self,
        config: TrainConfig,
        out_dir: str | Path,
        *,
        data: Dataset | None = None,
        probe: Callable | None = None,
        progress: Callable | None = None,
        label: str = "train",
        comm=None,
    ):
        config.validate()
        self.config, self.out = config, Path(out_dir)
        # Data-parallel over MPI: every rank takes its slice of each global batch, batch
        # norm is synchronized, gradients are summed in one buffer, and rank 0 writes.
        self.comm = comm
        self.rank = 0 if comm is None else comm.Get_rank()
        self.world = 1 if comm is None else comm.Get_size()
        self.data = data if data is not None else load_dataset(config.dataset, config.data_dir)
        self.model = build_model(config, self.data, comm)
        self.opt = build_optimizer(config, self.model)
        self.probe, self.progress, self.label = probe, progress, label
        dtype = np.dtype(config.dtype)
        self.x_train = self.data.x_train.astype(dtype, copy=False)
        self.x_test = self.data.x_test.astype(dtype, copy=False)
        self.steps_per_epoch = len(self.x_train) // config.batch_size
        if self.steps_per_epoch < 1:
            raise ValueError(
                f"--batch-size {config.batch_size} is larger than the training set "
                f"({len(self.x_train)} samples)"
            )
        self.total = config.steps or config.epochs * self.steps_per_epoch
        self.step = 0
        self.losses = np.zeros(self.total)
        self.accs = np.zeros(self.total)
        self.evals: list[dict] = []  # one per evaluation: step, test_acc, probe values
        self._perm_epoch, self._perm = -1, None

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
        state["config"] = np.array(self.config.to_json())
        state["world_size"] = np.array(self.world)
        return state

    def save_checkpoint(self) -> None:
        # Every rank holds the same parameters, so every rank reaches the same verdict.
        params = self.model.parameters()
        if not all(np.all(np.isfinite(p)) for p in params.values()):
            raise TrainingDiverged(f"parameters became NaN/Inf by step {self.step}")
        if self.rank == 0:
            save_atomic(self.checkpoint_path, self._state())

    def load_checkpoint(self) -> None:
        state = load_verified(self.checkpoint_path)
        try:
            saved = TrainConfig.from_json(str(state["config"]))
            if saved != self.config:
                raise CheckpointError(
                    f"{self.checkpoint_path}: written by a different configuration"
                )
            saved_world = int(state.get("world_size", 1))
            if saved_world != self.world:
                raise CheckpointError(
                    f"{self.checkpoint_path}: written by {saved_world} process(es); resume it "
                    f"with the same number (this run has {self.world})"
                )
            self.model.load_state_dict(
                {k[6:]: v for k, v in state.items() if k.startswith("model/")}
            )
            self.opt.load_state_dict({k[6:]: v for k, v in state.items() if k.startswith("optim/")})
            self.step = int(state["step"])
            self.losses[: self.step] = state["losses"]
            self.accs[: self.step] = state["accs"]
            self.evals = json.loads(str(state["evals"]))
        except (KeyError, ValueError, TypeError) as exc:
            raise CheckpointError(
                f"{self.checkpoint_path}: does not fit this run ({exc})"
            ) from None

    # -- the loop ----------------------------------------------------------
    def _batch(self, step: int) -> np.ndarray:
        epoch, k = divmod(step, self.steps_per_epoch)
        if epoch != self._perm_epoch:
            rng = np.random.default_rng([self.config.seed, epoch])
            self._perm, self._perm_epoch = rng.permutation(len(self.x_train)), epoch
        bs = self.config.batch_size
        return self._perm[k * bs : (k + 1) * bs]

    def _evaluate(self) -> None:
        row = {"step": self.step, "test_acc": accuracy(self.model, self.x_test, self.data.y_test)}
        if self.probe is not None:
            row |= self.probe(self.step, self.model)
        self.evals.append(row)

    def run(self) -> RunResult:
        cfg = self.config
        bar = (
            self.progress(total=self.total, initial=self.step, desc=self.label)
            if self.progress
            else None
        )
        try:
            if self.step == 0 and not self.evals:
                self._evaluate()  # the starting point of every curve
            while self.step < self.total:
                loss, acc = self._train_step(self._batch(self.step))
                self.losses[self.step] = loss
                self.accs[self.step] = acc
                self.step += 1
                if self.step % cfg.eval_every == 0 or self.step == self.total:
                    self._evaluate()
                if self.step % cfg.checkpoint_every == 0 or self.step == self.total:
                    self.save_checkpoint()
                if bar is not None and (self.step % cfg.log_every == 0 or self.step == self.total):
                    bar.update(self.step - bar.n)
                    bar.set_postfix(
                        loss=f"{loss:.3f}", test_acc=f"{self.evals[-1]['test_acc']:.3f}"
                    )
        finally:
            if bar is not None:
                bar.close()
        self.write_outputs()
        return RunResult(self.step, self.evals[-1]["test_acc"], self.metrics_rows())

    def _train_step(self, idx: np.ndarray) -> tuple[float, float]:
        """One SGD step on the global batch ``idx``; returns its loss and accuracy."""
        if self.comm is not None:
            idx = np.array_split(idx, self.world)[self.rank]  # this rank's slice
        x, y = self.x_train[idx], self.data.y_train[idx]
        scores = self.model.forward(x)
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
            raise TrainingDiverged(
                f"the loss became {loss} at step {self.step + 1}; try a smaller --lr"
            )
        self.opt.step()
        return float(loss), correct / n

    def _allreduce_gradients(self, loss_sum: float, correct: float) -> tuple[float, float]:
        """Sum every gradient (and the loss and hit count) over the ranks: one collective."""
        grads = self.model.gradients()
        send = np.concatenate(
            [g.ravel().astype(np.float64) for g in grads.values()] + [[loss_sum, correct]]
        )
        recv = np.empty_like(send)
        self.comm.Allreduce(send, recv)
        start = 0
        for g in grads.values():
            g[...] = recv[start : start + g.size].reshape(g.shape)
            start += g.size
        return recv[-2], recv[-1]

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
        if self.rank != 0:
            return
        rows = self.metrics_rows()
        fields = ["step", "loss", "train_acc", "test_acc"]
        fields += sorted({k for r in rows for k in r} - set(fields))
        tmp = self.out / ".metrics.csv.tmp"
        with open(tmp, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=fields)
            writer.writeheader()
            writer.writerows(rows)
        tmp.replace(self.out / "metrics.csv")
        save_atomic(self.out / "model.npz", self.model.state_dict())


def load_model(run_dir: str | Path):
    """The model saved in ``run_dir`` (config.json + model.npz), and its config."""
    run_dir = Path(run_dir)
    try:
        config = TrainConfig.from_json((run_dir / "config.json").read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{run_dir}: no config.json; not a normgrad training run") from None
    data = load_dataset(config.dataset, config.data_dir)
    model = build_model(config, data)
    state = load_verified(run_dir / "model.npz")
    try:
        model.load_state_dict(state)
    except ValueError as exc:
        raise CheckpointError(f"{run_dir / 'model.npz'}: {exc}") from None
    return model, config, data
