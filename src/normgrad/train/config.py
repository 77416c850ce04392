"""A training run's settings, and the one place their defaults are written.

The command line reads its defaults and its ``--help`` text from :class:`TrainConfig`;
a run directory's ``config.json`` is this dataclass as JSON.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

from normgrad.core.table import get_op
from normgrad.data.datasets import DATASETS
from normgrad.errors import ConfigError
from normgrad.nn.models import FC_NORMALIZATIONS

#: ``--norm``: the canonical names of the ops a fully connected network can hold, or none.
#: The ops FullyConnectedNet can put before each activation (from the table), or none.
NORM_CHOICES = (*FC_NORMALIZATIONS, "none")

OPTIMIZERS = ("sgd", "adam")
ACTIVATIONS = ("relu", "sigmoid")
DTYPES = ("float32", "float64")
#: ``--eval-stats``: what batch norm normalizes with when a run is evaluated: the running
#: averages kept in training (momentum 0.1), or the paper's population statistics
#: (Algorithm 2: mean and unbiased variance over ``population_batches`` training batches).
EVAL_STATS = ("running", "population")
#: Named weight initializations (``--weight-scale``); a number is the std itself.
WEIGHT_SCHEMES = ("he", "kaiming", "lecun", "xavier", "glorot")
#: Groups per group norm layer: every hidden size must be a multiple.
GROUP_NORM_GROUPS = 4
#: The datasets that read IDX files from a directory (``--data-dir``); digits needs none.
IDX_DATASETS = ("fashion-mnist", "mnist")

# The JSON types of each setting (a config.json written by hand, or by something else, is
# checked against these before anything reads it; bool is refused where a number is due).
_INT_FIELDS = ("batch_size", "steps", "epochs", "seed", "checkpoint_every", "eval_every",
               "log_every")  # fmt: skip
_FLOAT_FIELDS = ("lr", "momentum")
_STR_FIELDS = ("dataset", "norm", "activation", "optimizer", "dtype")


def canonical_norm(name: str) -> str:
    """The canonical op name for a normalization, from the core's table of ops: ``"batch"``
    (the short name earlier versions stored in config.json), ``"batchnorm"`` and
    ``"batch_norm"`` all give ``"batch_norm"``; ``"none"`` stays. A name the table does not
    know comes back unchanged, for :meth:`TrainConfig.validate` or argparse to reject."""
    if name == "none" or not isinstance(name, str):
        return name
    try:
        return get_op(name).name
    except ValueError:
        return name


@dataclass
class TrainConfig:
    """Everything that defines a run (saved as ``config.json``).

    Give exactly one of ``steps`` and ``epochs``; :meth:`from_options` fills in
    ``DEFAULT_STEPS`` when a user gave neither.
    """

    #: Training steps of a run given neither ``steps`` nor ``epochs``.
    DEFAULT_STEPS: ClassVar[int] = 2000

    dataset: str = "digits"
    data_dir: str | None = None
    norm: str = "batch_norm"  # one of NORM_CHOICES; aliases are turned canonical
    hidden: list[int] = field(default_factory=lambda: [100, 100, 100])
    activation: str = "relu"
    batch_size: int = 60
    steps: int | None = None
    epochs: int | None = None
    lr: float = 0.1
    optimizer: str = "sgd"
    momentum: float = 0.0
    weight_scale: float | str = "he"  # std of the initial weights, or he | xavier | lecun
    seed: int = 0  # seeds the weights and the order of the data
    checkpoint_every: int = 1000
    eval_every: int = 500
    log_every: int = 50
    dtype: str = "float32"
    eval_stats: str = "running"  # one of EVAL_STATS
    population_batches: int = 50  # training mini-batches Algorithm 2 averages over

    def __post_init__(self) -> None:
        # Old run directories say "batch": they resume as "batch_norm".
        self.norm = canonical_norm(self.norm)

    @classmethod
    def from_options(cls, **options: Any) -> TrainConfig:
        """A config from the options a user gave; ``None`` means not given, and the
        defaults above fill in the rest (``DEFAULT_STEPS`` if neither steps nor epochs)."""
        given = {k: v for k, v in options.items() if v is not None}
        if "steps" not in given and "epochs" not in given:
            given["steps"] = cls.DEFAULT_STEPS
        return cls(**given)

    @classmethod
    def default(cls, name: str) -> Any:
        """The default of field ``name`` (``None`` for steps and epochs)."""
        for f in fields(cls):
            if f.name == name:
                return f.default_factory() if callable(f.default_factory) else f.default
        raise KeyError(name)

    def validate(self, *, data_supplied: bool = False) -> None:
        """Raise :class:`~normgrad.errors.ConfigError` naming the first bad setting.

        Checks types, ranges and the settings that contradict each other; reads nothing but
        whether an explicit ``data_dir`` exists (the dataset itself is checked when it is
        loaded). ``data_supplied``: the caller brings its own Dataset, so ``dataset`` is
        only its name and ``data_dir`` is not read."""
        self._check_types()
        if not data_supplied:
            self._check_dataset()
        if self.norm not in NORM_CHOICES:
            raise ConfigError(f"--norm must be one of {', '.join(NORM_CHOICES)}; got {self.norm!r}")
        for name, choices in (
            ("optimizer", OPTIMIZERS),
            ("activation", ACTIVATIONS),
            ("dtype", DTYPES),
            ("eval_stats", EVAL_STATS),
        ):
            if getattr(self, name) not in choices:
                flag = "--" + name.replace("_", "-")
                raise ConfigError(
                    f"{flag} must be one of {', '.join(choices)}; got {getattr(self, name)!r}"
                )
        if (self.steps is None) == (self.epochs is None):
            raise ConfigError("give exactly one of --steps and --epochs")
        for name in (
            "batch_size",
            "checkpoint_every",
            "eval_every",
            "log_every",
            "population_batches",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least 1")
        length = "steps" if self.steps is not None else "epochs"
        if getattr(self, length) < 1:
            raise ConfigError(f"--{length} must be at least 1; got {getattr(self, length)}")
        if self.norm == "batch_norm" and self.batch_size < 2:
            raise ConfigError(
                f"--norm batch_norm needs at least 2 images per batch to measure a variance; "
                f"got --batch-size {self.batch_size}"
            )
        if not self.hidden or any(h < 1 for h in self.hidden):
            raise ConfigError(f"--hidden must list positive sizes; got {self.hidden}")
        if self.norm == "group_norm" and any(h % GROUP_NORM_GROUPS for h in self.hidden):
            raise ConfigError(
                f"--norm group_norm splits each hidden layer into {GROUP_NORM_GROUPS} groups: "
                f"every --hidden size must be a multiple of {GROUP_NORM_GROUPS}; got {self.hidden}"
            )
        if isinstance(self.weight_scale, str):
            if self.weight_scale not in WEIGHT_SCHEMES:
                raise ConfigError(
                    f"--weight-scale must be a positive number or one of "
                    f"{', '.join(WEIGHT_SCHEMES)}; got {self.weight_scale!r}"
                )
        elif not 0 < self.weight_scale < math.inf:
            raise ConfigError(f"--weight-scale must be positive; got {self.weight_scale}")
        if self.seed < 0:
            raise ConfigError(f"--seed must be a non-negative integer; got {self.seed}")
        if not 0 < self.lr < math.inf:
            raise ConfigError(f"--lr must be positive; got {self.lr}")
        if not 0 <= self.momentum < 1:
            raise ConfigError(f"--momentum must be in [0, 1); got {self.momentum}")

    def _check_dataset(self) -> None:
        if self.dataset not in DATASETS:
            raise ConfigError(
                f"--dataset must be one of {', '.join(DATASETS)}; got {self.dataset!r}"
            )
        if self.data_dir is not None:
            if self.dataset not in IDX_DATASETS:
                raise ConfigError(
                    f"--data-dir is for {' and '.join(IDX_DATASETS)}; --dataset {self.dataset} "
                    f"reads no files (got --data-dir {self.data_dir})"
                )
            # An explicit directory must exist, even MNIST's (missing files are downloaded
            # into it): a typo must not start a download into a new folder.
            if not Path(self.data_dir).is_dir():
                hint = " (create it to download MNIST into it)" if self.dataset == "mnist" else ""
                raise ConfigError(f"--data-dir {self.data_dir}: no such directory{hint}")

    def _check_types(self) -> None:
        def wrong(name: str, expected: str) -> ConfigError:
            value = getattr(self, name)
            return ConfigError(
                f"--{name.replace('_', '-')} must be {expected}; got {value!r} "
                f"({type(value).__name__})"
            )

        for name in _INT_FIELDS:
            value = getattr(self, name)
            if value is None and name in ("steps", "epochs"):
                continue
            if isinstance(value, bool) or not isinstance(value, int):
                raise wrong(name, "an integer")
        for name in _FLOAT_FIELDS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise wrong(name, "a number")
        for name in _STR_FIELDS:
            if not isinstance(getattr(self, name), str):
                raise wrong(name, "a name")
        if self.data_dir is not None and not isinstance(self.data_dir, str):
            raise wrong("data_dir", "a directory name")
        if not isinstance(self.hidden, list) or any(
            isinstance(h, bool) or not isinstance(h, int) for h in self.hidden
        ):
            raise wrong("hidden", "a list of integers")
        scale = self.weight_scale
        if isinstance(scale, bool) or not isinstance(scale, int | float | str):
            raise wrong("weight_scale", "a number or a name")

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    def fingerprint(self) -> str:
        """SHA-256 of the settings (MPI ranks compare it before the first step)."""
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()

    @classmethod
    def from_json(cls, text: str) -> TrainConfig:
        """The config of a ``config.json`` text, validated; ConfigError (saying what is
        wrong) for text that is not JSON, not an object, has keys TrainConfig does not know,
        or settings out of range."""
        try:
            data = json.loads(text)
        except ValueError as exc:
            what = "empty" if not text.strip() else f"not JSON ({exc})"
            raise ConfigError(f"the training configuration is {what}") from None
        if not isinstance(data, dict):
            raise ConfigError(
                f"the training configuration must be a JSON object; got {type(data).__name__}"
            )
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(
                f"the training configuration has unknown settings {', '.join(unknown)}"
            )
        config = cls(**data)
        config._check_types()
        return config
