"""Reverse-mode automatic differentiation over NumPy arrays, and the norms built from it.

>>> from normgrad.autodiff import Tensor, batch_norm
>>> x = Tensor(np.random.randn(4, 3))
>>> y = batch_norm(x, np.ones(3), np.zeros(3))
>>> y.backward(np.ones((4, 3)))
>>> x.grad.shape
(4, 3)
"""

from normgrad.autodiff.engine import Tensor, unbroadcast
from normgrad.autodiff.norms import (
    batch_norm,
    group_norm,
    instance_norm,
    layer_norm,
    norm,
    normalize,
    rms_norm,
)

__all__ = [
    "Tensor",
    "batch_norm",
    "group_norm",
    "instance_norm",
    "layer_norm",
    "norm",
    "normalize",
    "rms_norm",
    "unbroadcast",
]
