"""The course API: its semantics, and the checks of the course's notebooks, unchanged."""

import numpy as np
import pytest

from normgrad import cs231n
from normgrad.gradcheck import max_rel_error, rel_error


def eval_numerical_gradient_array(f, x, df, h=1e-5):
    """The course's own numerical gradient (cs231n/gradient_check.py), verbatim in effect."""
    grad = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"], op_flags=["readwrite"])
    while not it.finished:
        ix = it.multi_index
        oldval = x[ix]
        x[ix] = oldval + h
        pos = f(x).copy()
        x[ix] = oldval - h
        neg = f(x).copy()
        x[ix] = oldval
        grad[ix] = np.sum((pos - neg) * df) / (2 * h)
        it.iternext()
    return grad


def test_notebook_batchnorm_forward_train_statistics():
    np.random.seed(231)
    N, D1, D2, D3 = 200, 50, 60, 3
    X = np.random.randn(N, D1)
    W1, W2 = np.random.randn(D1, D2), np.random.randn(D2, D3)
    a = np.maximum(0, X.dot(W1)).dot(W2)
    a_norm, _ = cs231n.batchnorm_forward(a, np.ones(D3), np.zeros(D3), {"mode": "train"})
    np.testing.assert_allclose(a_norm.mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(a_norm.std(axis=0), 1, atol=1e-6)
    gamma, beta = np.asarray([1.0, 2.0, 3.0]), np.asarray([11.0, 12.0, 13.0])
    a_norm, _ = cs231n.batchnorm_forward(a, gamma, beta, {"mode": "train"})
    np.testing.assert_allclose(a_norm.mean(axis=0), beta, atol=1e-10)
    np.testing.assert_allclose(a_norm.std(axis=0), gamma, atol=1e-5)


def test_notebook_batchnorm_test_time_after_training():
    np.random.seed(231)
    N, D1, D2, D3 = 200, 50, 60, 3
    W1, W2 = np.random.randn(D1, D2), np.random.randn(D2, D3)
    bn_param = {"mode": "train"}
    gamma, beta = np.ones(D3), np.zeros(D3)
    for _ in range(50):
        X = np.random.randn(N, D1)
        a = np.maximum(0, X.dot(W1)).dot(W2)
        cs231n.batchnorm_forward(a, gamma, beta, bn_param)
    bn_param["mode"] = "test"
    X = np.random.randn(N, D1)
    a = np.maximum(0, X.dot(W1)).dot(W2)
    a_norm, _ = cs231n.batchnorm_forward(a, gamma, beta, bn_param)
    # The notebook expects means near 0 and stds near 1 "with some noise".
    assert np.all(np.abs(a_norm.mean(axis=0)) < 0.15)
    assert np.all(np.abs(a_norm.std(axis=0) - 1) < 0.15)


@pytest.mark.parametrize("backward", [cs231n.batchnorm_backward, cs231n.batchnorm_backward_alt])
def test_notebook_batchnorm_gradient_check(backward):
    np.random.seed(231)
    N, D = 4, 5
    x = 5 * np.random.randn(N, D) + 12
    gamma, beta = np.random.randn(D), np.random.randn(D)
    dout = np.random.randn(N, D)
    bn_param = {"mode": "train"}
    dx_num = eval_numerical_gradient_array(
        lambda x: cs231n.batchnorm_forward(x, gamma, beta, bn_param)[0], x, dout
    )
    da_num = eval_numerical_gradient_array(
        lambda a: cs231n.batchnorm_forward(x, a, beta, bn_param)[0], gamma.copy(), dout
    )
    db_num = eval_numerical_gradient_array(
        lambda b: cs231n.batchnorm_forward(x, gamma, b, bn_param)[0], beta.copy(), dout
    )
    _, cache = cs231n.batchnorm_forward(x, gamma, beta, bn_param)
    dx, dgamma, dbeta = backward(dout, cache)
    # The notebook: "You should expect to see relative errors between 1e-13 and 1e-8".
    assert rel_error(dx_num, dx) < 1e-8
    assert rel_error(da_num, dgamma) < 1e-8
    assert rel_error(db_num, dbeta) < 1e-8


def test_notebook_backward_alt_equals_backward():
    np.random.seed(231)
    N, D = 100, 500
    x = 5 * np.random.randn(N, D) + 12
    gamma, beta = np.random.randn(D), np.random.randn(D)
    dout = np.random.randn(N, D)
    _, cache = cs231n.batchnorm_forward(x, gamma, beta, {"mode": "train"})
    dx1, dgamma1, dbeta1 = cs231n.batchnorm_backward(dout, cache)
    dx2, dgamma2, dbeta2 = cs231n.batchnorm_backward_alt(dout, cache)
    assert rel_error(dx1, dx2) < 1e-10
    assert rel_error(dgamma1, dgamma2) < 1e-12 and rel_error(dbeta1, dbeta2) < 1e-12


def test_notebook_layernorm_forward_and_gradient():
    np.random.seed(231)
    N, D1, D2, D3 = 4, 50, 60, 3
    X = np.random.randn(N, D1)
    W1, W2 = np.random.randn(D1, D2), np.random.randn(D2, D3)
    a = np.maximum(0, X.dot(W1)).dot(W2)
    a_norm, _ = cs231n.layernorm_forward(a, np.ones(D3), np.zeros(D3), {"mode": "train"})
    np.testing.assert_allclose(a_norm.mean(axis=1), 0, atol=1e-12)
    np.testing.assert_allclose(a_norm.std(axis=1), 1, atol=1e-4)

    np.random.seed(231)  # the notebook re-seeds before its gradient check
    N, D = 4, 5
    x = 5 * np.random.randn(N, D) + 12
    gamma, beta = np.random.randn(D), np.random.randn(D)
    dout = np.random.randn(N, D)
    ln_param = {}
    dx_num = eval_numerical_gradient_array(
        lambda x: cs231n.layernorm_forward(x, gamma, beta, ln_param)[0], x, dout
    )
    _, cache = cs231n.layernorm_forward(x, gamma, beta, ln_param)
    dx, dgamma, dbeta = cs231n.layernorm_backward(dout, cache)
    assert rel_error(dx_num, dx) < 1e-8
    assert dgamma.shape == (D,) and dbeta.shape == (D,)


def test_notebook_spatial_batchnorm():
    np.random.seed(231)
    N, C, H, W = 2, 3, 4, 5
    x = 4 * np.random.randn(N, C, H, W) + 10
    gamma, beta = np.asarray([3.0, 4.0, 5.0]), np.asarray([6.0, 7.0, 8.0])
    out, _ = cs231n.spatial_batchnorm_forward(x, gamma, beta, {"mode": "train"})
    np.testing.assert_allclose(out.mean(axis=(0, 2, 3)), beta, atol=1e-10)
    np.testing.assert_allclose(out.std(axis=(0, 2, 3)), gamma, atol=1e-4)

    np.random.seed(231)  # the notebook's gradient-check data
    x = 5 * np.random.randn(N, C, H, W) + 12
    gamma, beta = np.random.randn(C), np.random.randn(C)
    dout = np.random.randn(N, C, H, W)
    bn_param = {"mode": "train"}
    dx_num = eval_numerical_gradient_array(
        lambda x: cs231n.spatial_batchnorm_forward(x, gamma, beta, bn_param)[0], x, dout
    )
    _, cache = cs231n.spatial_batchnorm_forward(x, gamma, beta, bn_param)
    dx, dgamma, dbeta = cs231n.spatial_batchnorm_backward(dout, cache)
    # The notebook expects a dx error of order 1e-7 here: the course's elementwise measure
    # is dominated by dx entries near zero, where the numerical gradient's own rounding
    # shows. Normwise, the analytic gradient agrees with it to 1e-9.
    assert rel_error(dx_num, dx) < 1e-6
    assert max_rel_error(dx, dx_num) < 1e-9
    assert dgamma.shape == (C,)


def test_notebook_spatial_groupnorm():
    np.random.seed(231)
    N, C, H, W, G = 2, 6, 4, 5, 2
    x = 5 * np.random.randn(N, C, H, W) + 12
    gamma, beta = np.random.randn(1, C, 1, 1), np.random.randn(1, C, 1, 1)
    dout = np.random.randn(N, C, H, W)
    gn_param = {}
    fx = lambda x: cs231n.spatial_groupnorm_forward(x, gamma, beta, G, gn_param)[0]  # noqa: E731
    dx_num = eval_numerical_gradient_array(fx, x, dout)
    _, cache = cs231n.spatial_groupnorm_forward(x, gamma, beta, G, gn_param)
    dx, dgamma, dbeta = cs231n.spatial_groupnorm_backward(dout, cache)
    assert rel_error(dx_num, dx) < 1e-7
    assert dgamma.shape == (1, C, 1, 1) and dbeta.shape == (1, C, 1, 1)
    dg_num = eval_numerical_gradient_array(
        lambda g: cs231n.spatial_groupnorm_forward(x, g, beta, G, gn_param)[0], gamma.copy(), dout
    )
    assert rel_error(dg_num, dgamma) < 1e-8


def test_course_running_statistics_semantics():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 3)) * 2 + 5
    old_mean, old_var = np.full(3, 1.0), np.full(3, 2.0)
    bn_param = {"mode": "train", "momentum": 0.8, "running_mean": old_mean, "running_var": old_var}
    cs231n.batchnorm_forward(x, np.ones(3), np.zeros(3), bn_param)
    # momentum weights the OLD value; the variance is the biased one
    np.testing.assert_allclose(bn_param["running_mean"], 0.8 * 1.0 + 0.2 * x.mean(axis=0))
    np.testing.assert_allclose(bn_param["running_var"], 0.8 * 2.0 + 0.2 * x.var(axis=0))
    # new arrays are stored back; the ones the caller put there are untouched
    np.testing.assert_array_equal(old_mean, 1.0)
    np.testing.assert_array_equal(old_var, 2.0)
    # defaults: momentum 0.9, running statistics start from zeros
    p = {"mode": "train"}
    cs231n.batchnorm_forward(x, np.ones(3), np.zeros(3), p)
    np.testing.assert_allclose(p["running_mean"], 0.1 * x.mean(axis=0))
    # test mode uses them
    out, _ = cs231n.batchnorm_forward(x, np.ones(3), np.zeros(3), dict(p, mode="test"))
    np.testing.assert_allclose(out, (x - p["running_mean"]) / np.sqrt(p["running_var"] + 1e-5))


def test_course_api_errors():
    x = np.ones((4, 3))
    with pytest.raises(ValueError, match=r'bn_param must contain "mode"'):
        cs231n.batchnorm_forward(x, np.ones(3), np.zeros(3), {})
    with pytest.raises(ValueError, match=r'Invalid forward batchnorm mode "eval"'):
        cs231n.batchnorm_forward(x, np.ones(3), np.zeros(3), {"mode": "eval"})
    with pytest.raises(ValueError, match=r"x must have shape \(N, D\)"):
        cs231n.batchnorm_forward(np.ones((2, 3, 4)), np.ones(3), np.zeros(3), {"mode": "train"})
    with pytest.raises(ValueError, match=r"gamma must have shape \(1, 6, 1, 1\)"):
        cs231n.spatial_groupnorm_forward(np.ones((2, 6, 2, 2)), np.ones(6), None, 2, {})
    with pytest.raises(TypeError, match=r"bn_param must be a dict"):
        cs231n.batchnorm_forward(x, np.ones(3), np.zeros(3), "train")
