"""Every op, layout and variance convention: staged == closed form == numerical gradient."""

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from _cases import Call, error_scales, norm_calls
from normgrad.core.table import OPS
from normgrad.gradcheck import assert_close, check_gradients


def _dy(call: Call, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(call.x.shape).astype(call.x.dtype)


@given(norm_calls())
def test_staged_equals_closed_form(call: Call):
    dy = _dy(call)
    y, cache = call.forward()
    closed = call.backward(dy, cache)
    staged = call.staged(dy, cache)
    scales = error_scales(call.x, call.gamma, dy, cache)
    for name, a, b in zip(("dx", "dgamma", "dbeta"), staged, closed, strict=True):
        assert_close(a, b, rtol=1e-10, atol=1e-12 * scales[name], name=f"staged {name}")


@given(norm_calls())
def test_closed_form_equals_numerical_gradient(call: Call):
    dy = _dy(call)
    y, cache = call.forward()
    std = np.sqrt(cache.var + cache.eps)
    # Central differences are an oracle only where they are well conditioned: the step
    # must be small against the normalization's length scale sqrt(var + eps), and rounding
    # in x - mu grows with |x| / std. Groups whose values nearly coincide are left to the
    # comparisons that need no finite differences (staged, PyTorch).
    assume(np.min(std) >= 0.02 * np.max(np.abs(call.x)))
    h = 1e-5 * float(np.min(std))
    closed = call.backward(dy, cache)

    def f(x, gamma, beta):
        return call.forward(x, gamma, beta)[0]

    inputs = {"x": call.x, "gamma": call.gamma, "beta": call.beta}
    analytic = dict(zip(("x", "gamma", "beta"), closed, strict=True))
    scales = error_scales(call.x, call.gamma, dy, cache)
    check_gradients(f, inputs, dy, analytic, h=h, rtol=1e-8, atol={"x": 1e-9 * scales["dx"]})


@given(norm_calls(affine=False))
def test_no_affine_gives_none_gradients(call: Call):
    y, cache = call.forward()
    dx, dgamma, dbeta = call.backward(_dy(call), cache)
    assert dgamma is None and dbeta is None
    assert dx.shape == call.x.shape


@given(norm_calls(affine=True), st.sampled_from([np.float32, np.float16]))
def test_low_precision_matches_float64(call: Call, dtype):
    """float32 and float16 results equal the float64 computation on the same data."""
    if call.spec.default_eps is None:  # RMS norm's default eps follows the dtype: pin it
        call.kwargs["eps"] = float(np.finfo(dtype).eps)
    low = call.astype(dtype)
    high = low.astype(np.float64)
    dy = _dy(call).astype(dtype)
    y_lo, c_lo = low.forward()
    y_hi, c_hi = high.forward()
    g_lo = low.backward(dy, c_lo)
    g_hi = high.backward(dy.astype(np.float64), c_hi)
    assert y_lo.dtype == dtype and g_lo[0].dtype == dtype
    # float16 output is rounded to 11 significant bits; computation itself is float32.
    tol = 1e-5 if dtype == np.float32 else 2.0**-9
    # Computing in float32 costs ~6e-8 of each error yardstick (see error_scales);
    # u = 1e-6 leaves a margin.
    u = 1e-6
    scales = error_scales(high.x, high.gamma, dy.astype(np.float64), c_hi)
    assert_close(y_lo, y_hi, rtol=tol, atol=u * scales["y"], name="y")
    atols = {"dx": (tol + u) * scales["dx"], "dgamma": u * scales["dgamma"], "dbeta": 0.0}
    for name, a, b in zip(("dx", "dgamma", "dbeta"), g_lo, g_hi, strict=True):
        assert_close(a, b, rtol=tol * 10, atol=atols[name], name=name)


@pytest.mark.parametrize("op", OPS)
def test_staged_steps_are_reported_in_graph_order(op):
    """The staged backward visits the op's graph nodes from the last down to step 0, the
    input, adding gradients where two paths meet: at xmu (step 2) and x for the ops that
    centre, at x alone for RMS norm."""
    spec = OPS[op]
    x = np.random.default_rng(0).standard_normal((4, 2, 3))
    options = {"num_groups": 2} if spec.option == "num_groups" else {}
    call = Call(op, x, np.ones(spec.param_shape(x.shape, **options)), None, options)
    y, cache = call.forward()
    dx, dgamma, dbeta, steps = call.staged(np.ones_like(x), cache, return_steps=True)
    assert [s.number for s in steps] == [n.step for n in reversed(spec.nodes())] + [0]
    assert steps[-1].grads["dx"] is not None
    np.testing.assert_array_equal(steps[-1].grads["dx"].reshape(x.shape), dx)
    meets = [s.number for s in steps if s.meets]
    assert meets == ([2, 0] if spec.centered else [0])


def test_eval_mode_staged_has_only_the_affine_path():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 3))
    y, cache = Call("batch_norm", x, np.ones(3), np.zeros(3),
                    {"training": False, "running_mean": np.zeros(3), "running_var": np.ones(3)}
                    ).forward()  # fmt: skip
    *_, steps = Call("batch_norm", x, None, None).staged(np.ones_like(x), cache, return_steps=True)
    assert [s.number for s in steps] == [9, 8, 7, 2, 0]
