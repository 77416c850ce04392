"""Learner code that would stop a grader: a backward that never returns, one that calls
sys.exit(), one that raises KeyboardInterrupt, and a layer-norm forward still the
course's stub (it returns None). The grader stops or catches each, and reports the rest.
"""

import sys

from course_2019_tuple import batchnorm_forward  # noqa: F401

EXPECTED = {
    "batchnorm_forward": ("pass", None),
    "batchnorm_backward": ("timed out", "stopped at runaway.py:2"),
    "batchnorm_backward_alt": ("crashed", "SystemExit"),
    "layernorm_forward": ("not implemented", None),
    "layernorm_backward": ("depends", None),
    "spatial_batchnorm_forward": ("crashed", "KeyboardInterrupt"),
}


def batchnorm_backward(dout, cache):
    dx = dout.copy()
    while True:
        dx = dx * 1.0  # never returns
    return dx, None, None


def batchnorm_backward_alt(dout, cache):
    sys.exit("not done yet")


def layernorm_forward(x, gamma, beta, ln_param):
    out, cache = None, None
    # TODO: implement
    return out, cache


def layernorm_backward(dout, cache):
    dx, dgamma, dbeta = None, None, None
    return dx, dgamma, dbeta


def spatial_batchnorm_forward(x, gamma, beta, bn_param):
    raise KeyboardInterrupt
