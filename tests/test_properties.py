"""Properties that always hold (docs/design.md §7) and the precision claims (§10)."""

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

import normgrad as ng
from _cases import Call, norm_calls
from normgrad.core.table import OPS
from normgrad.gradcheck import assert_close


def _sum_r(a, cache):
    return np.sum(a.reshape(cache.layout.work_shape), axis=cache.layout.reduce_axes)


# Every op of the table, each drawn on its own so that none goes unchecked in a run.
each_op = pytest.mark.parametrize("op", OPS)


@each_op
@given(data=st.data())
def test_dx_sums_to_zero_and_is_orthogonal_to_xhat(op, data):
    """Biased variance: per group sum(dx * xhat) = 0 (the gradient ignores scalings of x,
    up to eps), and for the ops that centre sum(dx) = 0 (it ignores shifts too)."""
    call: Call = data.draw(norm_calls(ops=(op,), allow_eval=False))
    call.kwargs["bessel"] = False
    y, cache = call.forward()
    dy = np.random.default_rng(0).standard_normal(call.x.shape)
    dx, _, _ = call.backward(dy, cache)
    xhat = cache.xhat.reshape(call.x.shape)
    scale = float(np.sum(np.abs(dy))) * float(np.max(cache.inv_std)) * 2
    if call.spec.centered:
        assert np.max(np.abs(_sum_r(dx, cache))) <= 1e-12 * scale
    # sum(dx * xhat) = r * eps/(var+eps) * sum(dxhat * xhat) / M: zero up to eps (var is
    # RMS norm's mean square).
    eps_term = cache.eps / (np.min(cache.var) + cache.eps)
    assert np.max(np.abs(_sum_r(dx * xhat, cache))) <= (1e-12 + eps_term) * scale * 10


@each_op
@given(data=st.data(), a=st.floats(0.1, 10.0), c=st.floats(-100, 100))
def test_invariant_to_positive_scale_and_shift(op, data, a, c):
    """norm(a*x + c) = norm(x) for a > 0, up to eps (which does not scale with x); RMS norm,
    which does not centre, is invariant to the scale only."""
    call: Call = data.draw(norm_calls(ops=(op,), allow_eval=False, affine=False))
    assume(call.count >= 2)  # with one value per group the output is 0 whatever x is
    if not call.spec.centered:
        c = 0.0
    eps = 1e-12
    x2 = a * call.x + c
    y, cache = call.forward(eps=eps)
    y2, cache2 = call.forward(x=x2, eps=eps)
    # Bounds: eps shifts xhat by ~eps / (2 var) relatively; rounding in x - mu costs
    # ~1e-16 * |x| / std, the cancellation in centring a shifted input.
    min_var = min(float(np.min(cache.var)), float(np.min(cache2.var)))
    cond = max(float(np.max(np.abs(x2))), float(np.max(np.abs(call.x)))) / np.sqrt(min_var)
    assert_close(y2, y, rtol=eps / min_var + 1e-14 * cond + 1e-13)


@each_op
@given(data=st.data())
def test_output_has_zero_mean_and_variance_var_over_var_plus_eps(op, data):
    """With gamma = 1 and no shift, each group of the output has mean 0 and variance
    var / (var + eps); RMS norm's has mean square ms / (ms + eps)."""
    call: Call = data.draw(norm_calls(ops=(op,), allow_eval=False, affine=False))
    call.kwargs["bessel"] = False
    y, cache = call.forward()
    yw = y.reshape(cache.layout.work_shape)
    axes = cache.layout.reduce_axes
    if call.spec.centered:
        mean = yw.mean(axis=axes, keepdims=True)
        assert np.max(np.abs(mean)) <= 1e-12 * max(
            1.0, float(np.max(np.abs(call.x))) * np.max(cache.inv_std)
        )
        second = yw.var(axis=axes, keepdims=True)
    else:
        second = np.mean(yw**2, axis=axes, keepdims=True)
    expected = cache.var / (cache.var + cache.eps)
    assert np.max(np.abs(second - expected)) <= 1e-10


def test_bessel_output_has_unbiased_variance_one():
    x = np.random.default_rng(0).standard_normal((9, 4)) * 5
    y, _ = ng.batch_norm_forward(x, None, None, bessel=True, eps=1e-12)
    np.testing.assert_allclose(y.var(axis=0, ddof=1), 1.0, rtol=1e-10)


@pytest.mark.parametrize(
    ("dtype", "mean", "n"), [(np.float64, 1e6, 4096), (np.float32, 1e3, 2**20)]
)
def test_large_mean_keeps_unit_std(dtype, mean, n):
    """The variance survives a mean that dwarfs the spread (PyTorch's float32 CPU kernel
    gives std 0.249 on the float32 case, docs/design.md §10)."""
    x = (mean + np.random.default_rng(0).standard_normal((n, 2))).astype(dtype)
    for channel_axis, xin in ((1, x), (-1, x[:, None, :])):
        y, _ = ng.batch_norm_forward(xin, None, None, channel_axis=channel_axis)
        std = y.astype(np.float64).reshape(-1, 2).std(axis=0)
        assert np.all(np.abs(std - 1) < 1e-3), std
    y, _ = ng.layer_norm_forward(x.T.copy(), None, None)
    assert np.all(np.abs(y.astype(np.float64).std(axis=1) - 1) < 1e-3)


def test_float16_in_float16_out_computed_in_float32():
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((64, 3, 4)) * 4 + 100).astype(np.float16)
    gamma = np.ones(3, np.float16)
    beta = np.zeros(3, np.float16)
    y, cache = ng.batch_norm_forward(x, gamma, beta)
    assert y.dtype == np.float16
    assert cache.xhat.dtype == np.float32
    y64, _ = ng.batch_norm_forward(x.astype(np.float64), None, None)
    assert_close(y, y64, rtol=2.0**-10)
    dy = rng.standard_normal(x.shape).astype(np.float16)
    dx, dgamma, dbeta = ng.batch_norm_backward(dy, cache)
    assert dx.dtype == dgamma.dtype == dbeta.dtype == np.float16


@given(st.integers(1, 3), st.integers(1, 4), st.lists(st.integers(1, 3), max_size=2))
def test_layer_norm_over_c_and_spatial_equals_group_norm_with_one_group(n, c, spatial):
    rng = np.random.default_rng(n + 10 * c)
    shape = (n, c, *spatial)
    x = rng.standard_normal(shape)
    dy = rng.standard_normal(shape)
    y_ln, c_ln = ng.layer_norm_forward(x, None, None, normalized_ndim=len(shape) - 1)
    y_gn, c_gn = ng.group_norm_forward(x, None, None, 1)
    assert_close(y_ln, y_gn, rtol=1e-13)
    assert_close(
        ng.layer_norm_backward(dy, c_ln)[0], ng.group_norm_backward(dy, c_gn)[0], rtol=1e-12
    )


@given(st.integers(1, 3), st.integers(1, 4), st.lists(st.integers(1, 3), min_size=1, max_size=2))
def test_instance_norm_equals_group_norm_with_c_groups(n, c, spatial):
    shape = (n, c, *spatial)
    if np.prod(spatial) < 2:
        return
    rng = np.random.default_rng(n + 10 * c)
    x, dy = rng.standard_normal(shape), rng.standard_normal(shape)
    gamma, beta = rng.standard_normal(c), rng.standard_normal(c)
    y_in, c_in = ng.instance_norm_forward(x, gamma, beta)
    y_gn, c_gn = ng.group_norm_forward(x, gamma, beta, c)
    assert_close(y_in, y_gn, rtol=1e-13)
    for a, b in zip(
        ng.instance_norm_backward(dy, c_in), ng.group_norm_backward(dy, c_gn), strict=True
    ):
        assert_close(a, b, rtol=1e-12)


def test_channels_last_equals_channels_first():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 4, 5))
    dy = rng.standard_normal(x.shape)
    gamma, beta = rng.standard_normal(3), rng.standard_normal(3)
    y1, c1 = ng.batch_norm_forward(x, gamma, beta)
    to_last = (0, 2, 3, 1)
    y2, c2 = ng.batch_norm_forward(x.transpose(to_last), gamma, beta, channel_axis=-1)
    assert_close(y2, y1.transpose(to_last), rtol=1e-14)
    g1 = ng.batch_norm_backward(dy, c1)
    g2 = ng.batch_norm_backward(dy.transpose(to_last), c2)
    assert_close(g2[0], g1[0].transpose(to_last), rtol=1e-13)
    assert_close(g2[1], g1[1], rtol=1e-13)


@each_op
@given(data=st.data())
def test_inputs_are_never_modified(op, data):
    call: Call = data.draw(norm_calls(ops=(op,)))
    before = {k: None if v is None else v.copy() for k, v in
              {"x": call.x, "gamma": call.gamma, "beta": call.beta}.items()}  # fmt: skip
    running = {k: v.copy() for k, v in call.kwargs.items() if isinstance(v, np.ndarray)}
    dy = np.ones(call.x.shape)
    dy_before = dy.copy()
    y, cache = call.forward()
    call.backward(dy, cache)
    call.staged(dy, cache)
    for k, v in before.items():
        if v is not None:
            np.testing.assert_array_equal(getattr(call, k), v)
    for k, v in running.items():  # eval mode: running statistics are read, not written
        np.testing.assert_array_equal(call.kwargs[k], v)
    np.testing.assert_array_equal(dy, dy_before)


def test_running_statistics_update_in_place_with_pytorch_convention():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((10, 3)) * 2 + 1
    rm, rv = np.full(3, 0.5), np.full(3, 2.0)
    rm_id, rv_id = id(rm), id(rv)
    ng.batch_norm_forward(x, None, None, running_mean=rm, running_var=rv, momentum=0.25)
    assert id(rm) == rm_id and id(rv) == rv_id
    np.testing.assert_allclose(rm, 0.75 * 0.5 + 0.25 * x.mean(axis=0), rtol=1e-15)
    np.testing.assert_allclose(rv, 0.75 * 2.0 + 0.25 * x.var(axis=0, ddof=1), rtol=1e-15)


def test_eval_mode_uses_running_statistics_and_its_backward_is_affine():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((6, 4))
    rm, rv = rng.standard_normal(4), rng.uniform(0.5, 2, 4)
    gamma, beta = rng.standard_normal(4), rng.standard_normal(4)
    y, cache = ng.batch_norm_forward(
        x, gamma, beta, training=False, running_mean=rm, running_var=rv
    )
    r = 1 / np.sqrt(rv + 1e-5)
    np.testing.assert_allclose(y, (x - rm) * r * gamma + beta, rtol=1e-14)
    dy = rng.standard_normal(x.shape)
    dx, dgamma, dbeta = ng.batch_norm_backward(dy, cache)
    np.testing.assert_allclose(dx, dy * gamma * r, rtol=1e-14)
    np.testing.assert_allclose(dgamma, np.sum(dy * (x - rm) * r, axis=0), rtol=1e-13)
    np.testing.assert_allclose(dbeta, dy.sum(axis=0), rtol=1e-14)
