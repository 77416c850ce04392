"""normgrad: batch, layer, group and instance normalization, forward and backward.

The functional API lives at the top level (arrays in, arrays out)::

    y, cache = normgrad.batch_norm_forward(x, gamma, beta)
    dx, dgamma, dbeta = normgrad.batch_norm_backward(dy, cache)          # closed form
    dx, dgamma, dbeta = normgrad.batch_norm_backward_staged(dy, cache)   # seed 002's graph

Submodules: :mod:`normgrad.cs231n` (the course's API), :mod:`normgrad.gradcheck`
(numerical gradients), :mod:`normgrad.seeds` (the three source write-ups, as code).
Only NumPy is imported here; optional dependencies are imported where they are used.
"""

from normgrad.core import *  # noqa: F403
from normgrad.core import __all__ as _core_all

__version__ = "0.1.0"
__all__ = [*_core_all, "__version__"]
