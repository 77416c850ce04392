"""normgrad: batch, layer, group, instance and RMS normalization, forward and backward.

The functional API lives at the top level (arrays in, arrays out)::

    y, cache = normgrad.batch_norm_forward(x, gamma, beta)
    dx, dgamma, dbeta = normgrad.batch_norm_backward(dy, cache)          # closed form
    dx, dgamma, dbeta = normgrad.batch_norm_backward_staged(dy, cache)   # the staged graph

Every op is described once in the table ``normgrad.OPS`` (``normgrad.get_op(name)``).
Submodules: :mod:`normgrad.cs231n` (the course's API), :mod:`normgrad.gradcheck`
(numerical gradients), :mod:`normgrad.reference` (the source write-ups, as code).
Only NumPy is imported here; optional dependencies are imported where they are used.
"""

from normgrad.core import *  # noqa: F403
from normgrad.core import __all__ as _core_all

__version__ = "0.1.0"
__all__ = [*_core_all, "__version__"]
