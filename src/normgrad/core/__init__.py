"""The functional core: the table of ops, layouts, caches, the staged backward, the API."""

from normgrad.core.cache import InputModifiedError, NormCache
from normgrad.core.double_backward import (
    batch_norm_double_backward,
    double_backward,
    group_norm_double_backward,
    instance_norm_double_backward,
    layer_norm_double_backward,
    rms_norm_double_backward,
)
from normgrad.core.fold import fold_batch_norm
from normgrad.core.layout import NormLayout
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
    rms_norm_backward,
    rms_norm_backward_staged,
    rms_norm_forward,
)
from normgrad.core.staged import Step, staged_backward
from normgrad.core.table import OPS, OpSpec, get_op

__all__ = [
    "OPS",
    "InputModifiedError",
    "NormCache",
    "NormLayout",
    "OpSpec",
    "Step",
    "batch_norm_backward",
    "batch_norm_backward_staged",
    "batch_norm_double_backward",
    "batch_norm_forward",
    "double_backward",
    "fold_batch_norm",
    "get_op",
    "group_norm_backward",
    "group_norm_backward_staged",
    "group_norm_double_backward",
    "group_norm_forward",
    "instance_norm_backward",
    "instance_norm_backward_staged",
    "instance_norm_double_backward",
    "instance_norm_forward",
    "layer_norm_backward",
    "layer_norm_backward_staged",
    "layer_norm_double_backward",
    "layer_norm_forward",
    "rms_norm_backward",
    "rms_norm_backward_staged",
    "rms_norm_double_backward",
    "rms_norm_forward",
    "staged_backward",
]
