"""A course sibling of layers.py: the course's layer_utils.py imports the layers; this
one also gives layers.py a helper, as some students' files use one, and prints while it
is imported, as the course's fast_layers.py does."""

import numpy as np  # noqa: F401 - layers.py gets np through its import *

# as the course's fast_layers.py does when its Cython extension is not built
print("run the following from the cs231n directory and try again:")


def mean_and_var(x, axes):
    """Mean and biased variance over ``axes``, with keepdims."""
    mu = x.mean(axis=axes, keepdims=True)
    return mu, ((x - mu) ** 2).mean(axis=axes, keepdims=True)
