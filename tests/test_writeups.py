"""The three published derivations (docs/sources.md) against the library.

The staged backward (Kratzert's nine-step graph) and the closed form (Thorey) must equal the
library; the Bessel-corrected formula must equal the Bessel-corrected gradient and miss the
biased one, by the amount docs/design.md §5 predicts.
"""

import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import normgrad as ng
from _cases import error_scales
from normgrad.gradcheck import assert_close, check_gradients, max_rel_error
from normgrad.reference import writeups

shapes = st.tuples(st.integers(3, 9), st.integers(1, 6))
GRADS = ("dx", "dgamma", "dbeta")


def _data(shape, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape) * 2 + 1
    return (
        x,
        rng.standard_normal(shape[1]) + 1,
        rng.standard_normal(shape[1]),
        rng.standard_normal(shape),
    )


@given(shapes, st.integers(0, 10_000))
def test_graph_walk_forward_and_staged_backward_equal_the_library(shape, seed):
    x, gamma, beta, dy = _data(shape, seed)
    out, walk_cache = writeups.graph_walk_forward(x, gamma, beta, 1e-5)
    y, cache = ng.batch_norm_forward(x, gamma, beta)
    assert_close(out, y, rtol=1e-14)
    scales = error_scales(x, gamma, dy, cache)
    ours = ng.batch_norm_backward_staged(dy, cache)
    for name, a, b in zip(GRADS, writeups.graph_walk_backward(dy, walk_cache), ours, strict=True):
        assert_close(a, b, rtol=1e-12, atol=1e-13 * scales[name], name=name)


@given(shapes, st.integers(0, 10_000))
def test_closed_form_equals_the_library(shape, seed):
    x, gamma, beta, dy = _data(shape, seed)
    _, walk_cache = writeups.graph_walk_forward(x, gamma, beta, 1e-5)
    _, cache = ng.batch_norm_forward(x, gamma, beta)
    scales = error_scales(x, gamma, dy, cache)
    ours = ng.batch_norm_backward(dy, cache)
    for name, a, b in zip(GRADS, writeups.closed_form_backward(dy, walk_cache), ours, strict=True):
        assert_close(a, b, rtol=1e-12, atol=1e-13 * scales[name], name=name)


@given(shapes, st.integers(0, 10_000))
def test_bessel_formula_is_the_bessel_gradient_not_the_biased_one(shape, seed):
    """The Bessel-corrected formula's write-up normalizes with the biased variance, but its
    final formula carries n/(n-1): it is exactly the gradient of the Bessel-corrected batch
    norm, and not of the biased one."""
    x, gamma, beta, dy = _data(shape, seed)
    eps = 1e-5
    dx_bessel_formula = writeups.bessel_formula_backward(dy, x, gamma, eps, variance="bessel")[0]
    dx_biased_formula = writeups.bessel_formula_backward(dy, x, gamma, eps, variance="biased")[0]

    _, c_bessel = ng.batch_norm_forward(x, gamma, beta, eps=eps, bessel=True)
    _, c_biased = ng.batch_norm_forward(x, gamma, beta, eps=eps)
    scale = error_scales(x, gamma, dy, c_bessel)["dx"]
    assert_close(
        dx_bessel_formula, ng.batch_norm_backward(dy, c_bessel)[0], rtol=1e-12, atol=1e-13 * scale
    )
    # With the biased variance the formula is off by exactly the surplus of its variance
    # term, (n/(n-1) - 1) * (r/n) * xhat * sum(dxhat * xhat) = r / (n (n-1)) * ...: an
    # error of the formula, far above rounding whenever that sum is not zero.
    dx_biased = ng.batch_norm_backward(dy, c_biased)[0]
    xhat, r = c_biased.xhat, c_biased.inv_std
    dxhat = dy * gamma
    n = shape[0]
    predicted = -(r / (n * (n - 1))) * xhat * (dxhat * xhat).sum(axis=0)
    scale = error_scales(x, gamma, dy, c_biased)["dx"]
    assert_close(dx_biased_formula - dx_biased, predicted, rtol=1e-8, atol=1e-13 * scale)
    assert max_rel_error(dx_biased_formula, dx_biased) > 1e-8


def test_bessel_formula_against_numerical_gradients():
    """The check of docs/design.md §5, float64 N=7 D=5: the Bessel reading matches central
    differences; the biased reading misses them by far more than rounding."""
    x, gamma, beta, dy = _data((7, 5), 0)

    def bn(x, bessel):
        return ng.batch_norm_forward(x, gamma, beta, bessel=bessel)[0]

    dx = writeups.bessel_formula_backward(dy, x, gamma, 1e-5, variance="bessel")[0]
    check_gradients(lambda x: bn(x, True), {"x": x}, dy, {"x": dx}, rtol=1e-8)
    dx_biased = writeups.bessel_formula_backward(dy, x, gamma, 1e-5, variance="biased")[0]
    results = check_gradients(
        lambda x: bn(x, False), {"x": x}, dy, {"x": dx_biased}, raise_on_failure=False
    )
    assert results[0].max_rel_error > 0.01


def test_bessel_formula_rejects_unknown_variance():
    x, gamma, _, dy = _data((4, 2), 0)
    with pytest.raises(ValueError, match="variance"):
        writeups.bessel_formula_backward(dy, x, gamma, 1e-5, variance="unbiased")


def test_reference_modules_import_without_torch():
    """normgrad.reference may be imported anywhere: torch is imported only when asked for."""
    code = (
        "import sys, normgrad.reference.writeups, normgrad.reference.pytorch; "
        "sys.exit(1 if 'torch' in sys.modules else 0)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
