"""The gradient checker's tolerance model: correct gradients pass on PyTorch's own test
data (``_test_batchnorm_grad`` in PyTorch's test_nn.py), wrong ones still fail, per dtype;
Chainer's all-inputs directional check."""

import numpy as np
import pytest

import normgrad as ng
from normgrad import gradcheck as gc


def _pytorch_batchnorm_grad_data():
    """PyTorch's ``_test_batchnorm_grad``: arange input (4, 5, 6), weight 1..5, bias 0..4,
    running_mean 1 - arange(5), running_var 2 * arange(5) (a zero variance in channel 0),
    eps 1e-4, momentum 0.1, in eval and training mode."""
    x = np.arange(120, dtype=np.float64).reshape(4, 5, 6)
    weight, bias = np.arange(1, 6, dtype=np.float64), np.arange(5, dtype=np.float64)
    running = (1 - np.arange(5, dtype=np.float64), 2 * np.arange(5, dtype=np.float64))
    return x, weight, bias, running


def _batch_norm(training, running):
    """``(f, y_only)``: the forward with the test's settings, and the same returning y."""

    def f(x, gamma, beta):
        rm, rv = (r.copy() for r in running)
        return ng.batch_norm_forward(x, gamma, beta, training=training, running_mean=rm,
                                     running_var=rv, eps=1e-4)  # fmt: skip

    return f, lambda **inputs: f(**inputs)[0]


def _cases():
    x, w, b, running = _pytorch_batchnorm_grad_data()
    for training in (False, True):
        for draw in range(20):
            dy = np.random.default_rng(draw).standard_normal(x.shape)
            yield training, x, w, b, running, dy


def test_correct_gradients_pass_on_pytorchs_batchnorm_grad_data():
    """40 upstream gradients; rtol=1e-7 without the rounding allowance fails some."""
    failed_without_allowance = 0
    for training, x, w, b, running, dy in _cases():
        f, y_of = _batch_norm(training, running)
        y, cache = f(x, w, b)
        dx, dgamma, dbeta = ng.batch_norm_backward(dy, cache)
        inputs = {"x": x, "gamma": w, "beta": b}
        analytic = {"x": dx, "gamma": dgamma, "beta": dbeta}
        results = gc.check_gradients(y_of, inputs, dy, analytic)  # raises if any fails
        assert all(r.passed for r in results)
        bare = gc.check_gradients(y_of, inputs, dy, analytic, rounding=False,
                                  raise_on_failure=False)  # fmt: skip
        failed_without_allowance += not all(r.passed for r in bare)
        gc.check_directional(y_of, inputs, dy, analytic, seed=len(dy))
    assert failed_without_allowance >= 1  # the allowance is what makes them pass


def _wrong_gradients(training, dy, cache, x):
    """``{mistake: (gradients, structural)}``: plausible mistakes, none below 1e-5 relative;
    the structural ones are large enough for the all-inputs directional check too."""
    dx, dgamma, dbeta = ng.batch_norm_backward(dy, cache)
    xhat = np.asarray(cache.xhat)
    gamma, inv_std = np.asarray(cache.gamma), np.asarray(cache.inv_std)
    m = cache.count
    axes = (0, 2)
    wrong = {
        "dbeta scaled by 1 + 1e-5": ({"beta": dbeta * (1 + 1e-5)}, False),
        "dgamma with one channel's sign flipped": ({"gamma": dgamma * [1, 1, -1, 1, 1]}, True),
        "dx with one element off by 1e-5 of its scale": (
            {"x": dx + (np.arange(dx.size) == 17).reshape(dx.shape) * 1e-5 * np.abs(dx).max()},
            False,
        ),
    }
    if training:
        dxhat = dy * gamma
        sum_dxhat = dxhat.sum(axes, keepdims=True)
        sum_dxhat_xhat = (dxhat * xhat).sum(axes, keepdims=True)
        wrong["dx without the mean's path"] = (
            {"x": inv_std / m * (m * dxhat - xhat * sum_dxhat_xhat)}, True
        )  # fmt: skip
        wrong["dx with Bessel's n/(n-1)"] = (
            {"x": inv_std / m * (m * dxhat - sum_dxhat - m / (m - 1) * xhat * sum_dxhat_xhat)},
            True,
        )
    else:
        _, train_cache = ng.batch_norm_forward(x, cache.gamma.ravel(), None, eps=1e-4)
        wrong["dx of training mode in eval mode"] = (
            {"x": ng.batch_norm_backward(dy, train_cache)[0]}, True
        )  # fmt: skip
    return wrong


def test_wrong_gradients_still_fail_on_the_same_data():
    for training, x, w, b, running, dy in list(_cases())[::5]:
        f, y_of = _batch_norm(training, running)
        y, cache = f(x, w, b)
        inputs = {"x": x, "gamma": w, "beta": b}
        right = dict(zip(("x", "gamma", "beta"), ng.batch_norm_backward(dy, cache), strict=True))
        for what, (grads, structural) in _wrong_gradients(training, dy, cache, x).items():
            results = gc.check_gradients(y_of, inputs, dy, grads, raise_on_failure=False)
            assert not all(r.passed for r in results), (what, training)
            if structural:
                with pytest.raises(gc.GradcheckError):
                    gc.check_directional(y_of, inputs, dy, right | grads)


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("op", ["batch_norm", "layer_norm", "group_norm"])
def test_the_model_per_dtype_passes_right_and_fails_wrong_low_precision_gradients(op, dtype):
    rng = np.random.default_rng(3)
    spec = ng.get_op(op)
    option = {"num_groups": 2} if op == "group_norm" else {}
    shape = (6, 4, 5)
    pshape = spec.param_shape(shape, **option)
    x = (rng.standard_normal(shape) * 2 + 1).astype(dtype)
    gamma = (rng.standard_normal(pshape) + 1.5).astype(dtype)
    beta = rng.standard_normal(pshape).astype(dtype)
    dy = rng.standard_normal(shape)

    def f(x, gamma, beta):
        return spec.forward(x, gamma, beta, **option)[0]

    dx, dgamma, dbeta = spec.backward(dy.astype(dtype), spec.forward(x, gamma, beta, **option)[1])
    inputs = {"x": x, "gamma": gamma, "beta": beta}
    results = gc.check_gradients(f, inputs, dy, {"x": dx, "gamma": dgamma, "beta": dbeta})
    h, rtol = gc.DTYPE_DEFAULTS[np.dtype(dtype)]
    assert {r.h for r in results} == {h} and {r.rtol for r in results} == {rtol}
    # a wrong gradient well above the dtype's noise: 3% in float32, a wrong sign in float16
    factor = -1.0 if dtype == np.float16 else 1.03
    for name, grad in (("x", dx), ("gamma", dgamma), ("beta", dbeta)):
        wrong = grad.astype(np.float64) * factor
        (result,) = gc.check_gradients(f, inputs, dy, {name: wrong}, raise_on_failure=False)
        assert not result.passed, (name, result.report())


def test_the_report_shows_the_rounding_allowance_and_tiny_steps_are_refused():
    x = np.arange(6.0).reshape(2, 3) * 1e3
    dout = np.ones_like(x)
    (result,) = gc.check_gradients(lambda x: x * 2, {"x": x}, dout, {"x": 2 * dout})
    assert "rounding allowance" in result.report()
    assert result.allowance == pytest.approx(
        gc.ROUNDING_SAFETY * np.finfo(np.float64).eps * np.sum(2 * x) / (2 * 1e-5)
    )
    with pytest.raises(ValueError, match=r"h=1e-09 is below the resolution of float32"):
        gc.numerical_gradient(lambda x: x, {"x": x.astype(np.float32)}, "x", dout, h=1e-9)
