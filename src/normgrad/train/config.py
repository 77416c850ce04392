"""A training run's settings, and the one place their defaults are written.

The command line reads its defaults and its ``--help`` text from :class:`TrainConfig`;
a run directory's ``config.json`` is this dataclass as JSON.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar

from normgrad.core.table import get_op
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


def canonical_norm(name: str) -> str:
    """The canonical op name for a normalization, from the core's table of ops: ``"batch"``
    (the short name earlier versions stored in config.json), ``"batchnorm"`` and
    ``"batch_norm"`` all give ``"batch_norm"``; ``"none"`` stays. A name the table does not
    know comes back unchanged, for :meth:`TrainConfig.validate` or argparse to reject."""
    if name == "none":
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

    def validate(self) -> None:
        """Raise :class:`~normgrad.errors.ConfigError` naming the first bad setting."""
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
        if (self.steps or self.epochs) < 1:
            raise ConfigError("--steps/--epochs must be at least 1")
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
        if not 0 < self.lr < math.inf:
            raise ConfigError(f"--lr must be positive; got {self.lr}")
        if not 0 <= self.momentum < 1:
            raise ConfigError(f"--momentum must be in [0, 1); got {self.momentum}")

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> TrainConfig:
        return cls(**json.loads(text))
