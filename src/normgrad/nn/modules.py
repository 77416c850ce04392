"""The layers and networks under their first module name, ``normgrad.nn.modules``.

They now live in :mod:`normgrad.nn.module` (the base class and its model contract,
Sequential), :mod:`normgrad.nn.layers`, :mod:`normgrad.nn.norms`, :mod:`normgrad.nn.losses`
and :mod:`normgrad.nn.models`; this module keeps ``from normgrad.nn.modules import ...``
working.
"""

from normgrad.nn.layers import Dropout, Linear, ReLU, Sigmoid, init_std
from normgrad.nn.losses import softmax_cross_entropy
from normgrad.nn.models import FullyConnectedNet
from normgrad.nn.module import Module, Sequential
from normgrad.nn.norms import BatchNorm, GroupNorm, InstanceNorm, LayerNorm, RMSNorm

__all__ = [
    "BatchNorm",
    "Dropout",
    "FullyConnectedNet",
    "GroupNorm",
    "InstanceNorm",
    "LayerNorm",
    "Linear",
    "Module",
    "RMSNorm",
    "ReLU",
    "Sequential",
    "Sigmoid",
    "init_std",
    "softmax_cross_entropy",
]
