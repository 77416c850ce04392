"""Folding an eval-mode batch norm into the preceding linear or convolution layer."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import normgrad as ng
from normgrad.gradcheck import assert_close


def _bn_params(rng, c):
    return {
        "running_mean": rng.standard_normal(c),
        "running_var": rng.uniform(0.2, 3.0, c),
        "gamma": rng.standard_normal(c),
        "beta": rng.standard_normal(c),
    }


def _bn_eval(z, p, channel_axis=1, eps=1e-5):
    y, _ = ng.batch_norm_forward(
        z, p["gamma"], p["beta"], training=False, running_mean=p["running_mean"],
        running_var=p["running_var"], channel_axis=channel_axis, eps=eps,
    )  # fmt: skip
    return y


@given(st.integers(1, 6), st.integers(1, 5), st.integers(1, 5), st.integers(0, 1000))
def test_fold_into_linear_pytorch_layout(n, d_in, d_out, seed):
    rng = np.random.default_rng(seed)
    x, w, b = (
        rng.standard_normal((n, d_in)),
        rng.standard_normal((d_out, d_in)),
        rng.standard_normal(d_out),
    )
    p = _bn_params(rng, d_out)
    w2, b2 = ng.fold_batch_norm(w, b, **p)
    assert_close(x @ w2.T + b2, _bn_eval(x @ w.T + b, p), rtol=1e-13)


def test_fold_into_linear_course_layout_without_bias_or_affine():
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((5, 4)), rng.standard_normal((4, 3))  # y = x @ W
    p = _bn_params(rng, 3) | {"gamma": None, "beta": None}
    w2, b2 = ng.fold_batch_norm(w, None, **p, out_axis=1)
    assert_close(x @ w2 + b2, _bn_eval(x @ w, p), rtol=1e-13)


def _conv2d(x, w, b):
    """Valid cross-correlation, (N, C, H, W) * (O, C, kh, kw) -> (N, O, H', W')."""
    kh, kw = w.shape[2:]
    windows = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(2, 3))
    return np.einsum("nchwij,ocij->nohw", windows, w) + b[None, :, None, None]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_fold_into_conv(dtype):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 6, 5)).astype(dtype)
    w = rng.standard_normal((4, 3, 3, 2)).astype(dtype)
    b = rng.standard_normal(4).astype(dtype)
    p = _bn_params(rng, 4)
    w2, b2 = ng.fold_batch_norm(w, b, **p, eps=1e-3)
    assert w2.dtype == dtype and b2.dtype == dtype
    tol = 1e-12 if dtype == np.float64 else 1e-5
    assert_close(_conv2d(x, w2, b2), _bn_eval(_conv2d(x, w, b), p, eps=1e-3), rtol=tol)


def test_fold_does_not_modify_its_inputs():
    rng = np.random.default_rng(2)
    w, b = rng.standard_normal((3, 2)), rng.standard_normal(3)
    p = _bn_params(rng, 3)
    copies = [w.copy(), b.copy(), *(v.copy() for v in p.values())]
    ng.fold_batch_norm(w, b, **p)
    for a, c in zip([w, b, *p.values()], copies, strict=True):
        np.testing.assert_array_equal(a, c)
