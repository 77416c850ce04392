"""Networks built from the layers: the course's fully connected net."""

from __future__ import annotations

import itertools

import numpy as np

from normgrad.core import validate
from normgrad.core.table import get_op
from normgrad.nn.layers import Linear, ReLU, Sigmoid
from normgrad.nn.module import Sequential
from normgrad.nn.norms import BatchNorm, GroupNorm, LayerNorm, RMSNorm

#: The normalizations a fully connected net can put before each activation, by op name.
FC_NORMALIZATIONS = ("batch_norm", "layer_norm", "group_norm", "rms_norm")


def _normalization_name(normalization: object) -> str | None:
    """The canonical op name for ``normalization`` (a name or alias of the table of ops, as
    the course's ``"batchnorm"``), or None; ValueError for anything else."""
    if normalization is None:
        return None
    try:
        name = get_op(normalization).name
    except ValueError:
        name = None
    if name not in FC_NORMALIZATIONS:
        raise ValueError(
            f"normalization must be None or one of {', '.join(map(repr, FC_NORMALIZATIONS))} "
            f"(or the course's 'batchnorm', 'layernorm', 'groupnorm'); got {normalization!r}"
        )
    return name


class FullyConnectedNet(Sequential):
    """The course's network: ``{affine - [norm] - activation} x L - affine - softmax``.

    x is ``(N, input_dim)``; the output is ``(N, num_classes)`` scores. Layer names:
    ``fc1, norm1, act1, ..., fc{L+1}``; parameters ``fc1.weight``, ``norm1.gamma``,
    buffers ``norm1.running_mean``, and so on (checkpoints rely on these names).

    Args:
        input_dim, hidden_dims, num_classes: layer sizes.
        normalization: None, or the op before each activation: ``"batch_norm"``,
            ``"layer_norm"``, ``"group_norm"`` (``num_groups`` groups of features) or
            ``"rms_norm"``; any alias of the table of ops is accepted, such as the course's
            ``"batchnorm"``, ``"layernorm"``, ``"groupnorm"``, and the canonical name is
            kept in ``self.normalization``. Batch norm keeps running statistics with
            PyTorch's momentum convention (momentum 0.1 weights the new batch).
        activation: ``"relu"`` or ``"sigmoid"``.
        weight_scale: the std of the Gaussian weights, or ``"he"``, ``"xavier"``, ...
        seed: seeds the weights.
        dtype: of parameters and buffers (float32 trains several times faster than float64
            on a CPU; float64 is for gradient checks).
        num_groups: groups per group-norm layer; must divide every hidden size.
        comm: an mpi4py communicator; batch norm layers synchronize over it.
    """

    def __init__(
        self,
        input_dim: int,
        hidden_dims,
        num_classes: int,
        *,
        normalization: str | None = None,
        activation: str = "relu",
        weight_scale=1e-2,
        seed: int = 0,
        dtype=np.float64,
        num_groups: int = 4,
        comm=None,
    ):
        normalization = _normalization_name(normalization)
        validate.check_positive_int("input_dim", input_dim)
        validate.check_positive_int("num_classes", num_classes)
        hidden_dims = list(hidden_dims)
        for i, h in enumerate(hidden_dims):
            validate.check_positive_int(f"hidden_dims[{i}]", h)
        if activation not in ("relu", "sigmoid"):
            raise ValueError(f"activation must be 'relu' or 'sigmoid'; got {activation!r}")
        make_norm = {
            "batch_norm": lambda d: BatchNorm(d, dtype=dtype, comm=comm),
            "layer_norm": lambda d: LayerNorm(d, dtype=dtype),
            "group_norm": lambda d: GroupNorm(num_groups, d, dtype=dtype),
            "rms_norm": lambda d: RMSNorm(d, dtype=dtype),
        }
        rng = np.random.default_rng(seed)
        layers = []
        dims = [input_dim, *hidden_dims, num_classes]
        last = len(dims) - 1
        for i, (d_in, d_out) in enumerate(itertools.pairwise(dims), start=1):
            # the first layer's input is data: no gradient is needed for it
            fc = Linear(
                d_in, d_out, rng=rng, weight_scale=weight_scale, dtype=dtype, input_grad=i > 1
            )
            layers.append((f"fc{i}", fc))
            if i == last:
                break
            if normalization == "group_norm" and d_out % num_groups:
                raise ValueError(f"num_groups={num_groups} must divide hidden size {d_out}")
            if normalization is not None:
                layers.append((f"norm{i}", make_norm[normalization](d_out)))
            layers.append((f"act{i}", ReLU() if activation == "relu" else Sigmoid()))
        super().__init__(*layers)
        self.normalization = normalization
        self.num_hidden = len(hidden_dims)
