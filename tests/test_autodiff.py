"""The autodiff engine: every primitive by the one checker; the norms against the core."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from _cases import Call, error_scales, norm_calls
from normgrad.autodiff import Tensor, normalize, unbroadcast
from normgrad.gradcheck import assert_close, check_gradients

RNG = np.random.default_rng(0)
A = RNG.standard_normal((3, 4))
B = RNG.standard_normal((3, 4))
ROW = RNG.standard_normal((1, 4))
POS = RNG.uniform(0.5, 2.0, (3, 4))

PRIMITIVES = {
    "add": (lambda a, b: a + b, {"a": A, "b": B}),
    "add broadcast": (lambda a, b: a + b, {"a": A, "b": ROW}),
    "radd const": (lambda a: 2.0 + a, {"a": A}),
    "sub broadcast": (lambda a, b: a - b, {"a": A, "b": ROW}),
    "rsub const": (lambda a: 1.0 - a, {"a": A}),
    "neg": (lambda a: -a, {"a": A}),
    "mul broadcast": (lambda a, b: a * b, {"a": A, "b": ROW}),
    "rmul const": (lambda a: 3.0 * a, {"a": A}),
    "div": (lambda a, b: a / b, {"a": A, "b": POS}),
    "rdiv const": (lambda b: 1.0 / b, {"b": POS}),
    "pow 2": (lambda a: a**2, {"a": A}),
    "pow -0.5": (lambda b: b**-0.5, {"b": POS}),
    "matmul": (lambda a, b: a @ b, {"a": A, "b": B.T.copy()}),
    "sum all": (lambda a: a.sum(), {"a": A}),
    "sum axis 0": (lambda a: a.sum(axis=0), {"a": A}),
    "sum keepdims": (lambda a: a.sum(axis=(0, 1), keepdims=True), {"a": A}),
    "mean axis 1": (lambda a: a.mean(axis=1), {"a": A}),
    "mean keepdims": (lambda a: a.mean(axis=-1, keepdims=True), {"a": A}),
    "sqrt": (lambda b: b.sqrt(), {"b": POS}),
    "exp": (lambda a: a.exp(), {"a": A}),
    "log": (lambda b: b.log(), {"b": POS}),
    "relu": (lambda a: a.relu(), {"a": A}),
    "sigmoid": (lambda a: a.sigmoid(), {"a": A}),
    "tanh": (lambda a: a.tanh(), {"a": A}),
    "reshape": (lambda a: a.reshape(2, 6), {"a": A}),
    "transpose": (lambda a: a.transpose(), {"a": A}),
    "T": (lambda a: a.T, {"a": A}),
    "shared input": (lambda a: a * a + a, {"a": A}),
}


@pytest.mark.parametrize("name", list(PRIMITIVES))
def test_primitive_gradient(name):
    f, inputs = PRIMITIVES[name]
    tensors = {k: Tensor(v) for k, v in inputs.items()}
    out = f(**tensors)
    dout = np.random.default_rng(1).standard_normal(out.shape)
    out.backward(dout)
    check_gradients(
        lambda **arrays: f(**{k: Tensor(v) for k, v in arrays.items()}).data,
        inputs,
        dout,
        {k: t.grad for k, t in tensors.items()},
    )


def test_parents_are_kept_in_order_and_constants_get_no_gradient():
    a, b = Tensor(A), Tensor(B)
    out = b - a
    assert out.parents == (b, a)
    c = 2.0 * a
    assert c.parents[0].is_const and c.parents[1] is a
    c.backward(np.ones(A.shape))
    assert c.parents[0].grad is None


def test_backward_twice_gives_the_same_gradient():
    a = Tensor(A)
    out = (a * a).sum()
    out.backward()
    first = a.grad.copy()
    out.backward()
    np.testing.assert_array_equal(a.grad, first)


def test_backward_needs_grad_for_non_scalars():
    with pytest.raises(ValueError, match=r"backward\(\) needs grad for a tensor of shape \(3, 4\)"):
        (Tensor(A) * 2).backward()
    with pytest.raises(ValueError, match=r"grad must have shape \(3, 4\)"):
        (Tensor(A) * 2).backward(np.ones(3))


def test_deep_graphs_do_not_hit_the_recursion_limit():
    x = Tensor(np.ones(2))
    y = x
    for _ in range(5000):
        y = y + 1.0
    y.backward(np.ones(2))
    np.testing.assert_array_equal(x.grad, np.ones(2))


def test_unbroadcast():
    g = np.ones((2, 3, 4))
    assert unbroadcast(g, (3, 1)).tolist() == [[8.0]] * 3
    assert unbroadcast(g, ()).shape == ()


def _autodiff_grads(call: Call, dy):
    x = Tensor(call.x)
    gamma = None if call.gamma is None else Tensor(call.gamma)
    beta = None if call.beta is None else Tensor(call.beta)
    _, cache = call.forward()
    out = normalize(x, gamma, beta, cache.layout, eps=cache.eps, bessel=cache.bessel)
    out.backward(dy)
    return out.data, (x.grad, gamma and gamma.grad, beta and beta.grad), cache


@given(norm_calls(allow_eval=False))
def test_autodiff_norms_equal_closed_form_and_staged(call: Call):
    dy = np.random.default_rng(2).standard_normal(call.x.shape)
    y_auto, grads_auto, cache = _autodiff_grads(call, dy)
    y, _ = call.forward()
    closed = call.backward(dy, cache)
    staged = call.staged(dy, cache)
    scales = error_scales(call.x, call.gamma, dy, cache)
    assert_close(y_auto, y, rtol=1e-10, atol=1e-12 * scales["y"])
    for name, a, c, s in zip(("dx", "dgamma", "dbeta"), grads_auto, closed, staged, strict=True):
        atol = 1e-12 * scales[name]
        assert_close(a, c, rtol=1e-10, atol=atol, name=f"autodiff vs closed {name}")
        assert_close(a, s, rtol=1e-10, atol=atol, name=f"autodiff vs staged {name}")


@given(st.sampled_from([True, False]))
def test_batch_norm_graph_carries_the_staged_step_numbers(bessel):
    from normgrad.autodiff import batch_norm

    out = batch_norm(Tensor(A), Tensor(np.ones(4)), Tensor(np.zeros(4)), bessel=bessel)
    steps = {n.name: n.step for n in out.topological_order() if n.step is not None}
    assert steps["mu"] == 1 and steps["xmu"] == 2 and steps["sq"] == 3 and steps["var"] == 4
    assert steps["sqrtvar"] == 5 and steps["ivar"] == 6 and steps["xhat"] == 7
    assert steps["gammax"] == 8 and steps["out"] == 9
