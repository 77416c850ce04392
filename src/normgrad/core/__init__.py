"""The functional core: pure functions over NumPy arrays (see :mod:`normgrad.core.ops`)."""

from normgrad.core.fold import fold_batch_norm
from normgrad.core.layout import NormLayout
from normgrad.core.normalize import NormCache
from normgrad.core.ops import (
    batch_norm_backward,
    batch_norm_backward_staged,
    batch_norm_forward,
    group_norm_backward,
    group_norm_backward_staged,
    group_norm_forward,
    instance_norm_backward,
    instance_norm_backward_staged,
    instance_norm_forward,
    layer_norm_backward,
    layer_norm_backward_staged,
    layer_norm_forward,
)
from normgrad.core.staged import Step, staged_backward

__all__ = [
    "NormCache",
    "NormLayout",
    "Step",
    "batch_norm_backward",
    "batch_norm_backward_staged",
    "batch_norm_forward",
    "fold_batch_norm",
    "group_norm_backward",
    "group_norm_backward_staged",
    "group_norm_forward",
    "instance_norm_backward",
    "instance_norm_backward_staged",
    "instance_norm_forward",
    "layer_norm_backward",
    "layer_norm_backward_staged",
    "layer_norm_forward",
    "staged_backward",
]
