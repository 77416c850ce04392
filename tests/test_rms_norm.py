"""RMS norm three ways (closed form, staged graph, autodiff), numerically, on both backends,
and against ``torch.nn.functional.rms_norm``; over shapes, dtypes and memory layouts."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import normgrad as ng
from normgrad import autodiff
from normgrad.gradcheck import assert_close, check_gradients


def _direct(x, gamma, k, eps):
    """The definition, in float64: y = gamma * x / sqrt(mean(x^2) + eps) over the last k axes."""
    x = x.astype(np.float64)
    axes = tuple(range(x.ndim - k, x.ndim))
    rms = np.sqrt(np.mean(x * x, axis=axes, keepdims=True) + eps)
    return x / rms * (1.0 if gamma is None else gamma)


def _dx_scale(dy, gamma, cache) -> float:
    g = 1.0 if gamma is None else float(np.abs(gamma).max())
    return float(np.abs(dy).max()) * g * float(cache.inv_std.max()) + 1.0


@st.composite
def rms_inputs(draw, dtype=np.float64):
    ndim = draw(st.integers(1, 4))
    shape = tuple(draw(st.lists(st.integers(1, 4), min_size=ndim, max_size=ndim)))
    k = draw(st.integers(1, ndim))
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    kind = draw(st.sampled_from(["contiguous", "strided", "transposed"]))
    if kind == "strided":
        x = rng.standard_normal((*shape[:-1], 2 * shape[-1]))[..., ::2]
    elif kind == "transposed":
        x = rng.standard_normal(shape[::-1]).T
    else:
        x = rng.standard_normal(shape)
    x = (x * draw(st.sampled_from([1e-2, 1.0, 30.0]))).astype(dtype)
    gamma = None if draw(st.booleans()) else rng.uniform(0.5, 1.5, shape[ndim - k :]).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    return x, gamma, dy, k


@given(rms_inputs(), st.sampled_from([None, 1e-5, 0.1]))
def test_rms_norm_three_derivations_and_numerical(args, eps):
    x, gamma, dy, k = args
    y, cache = ng.rms_norm_forward(x, gamma, eps=eps, normalized_ndim=k, backend="numpy")
    eps_used = np.finfo(x.dtype).eps if eps is None else eps
    assert_close(y, _direct(x, gamma, k, eps_used), rtol=1e-12, atol=1e-12, name="y")

    dx, dgamma = ng.rms_norm_backward(dy, cache)
    dx_s, dgamma_s = ng.rms_norm_backward_staged(dy, cache)
    xt = autodiff.Tensor(x)
    gt = None if gamma is None else autodiff.Tensor(gamma)
    autodiff.rms_norm(xt, gt, normalized_ndim=k, eps=eps).backward(dy)
    # dx is a difference of terms of size |dy| * gamma * inv_std, which sets its rounding.
    scale = _dx_scale(dy, gamma, cache)
    assert_close(dx_s, dx, rtol=1e-10, atol=1e-12 * scale, name="staged dx")
    assert_close(xt.grad, dx, rtol=1e-10, atol=1e-12 * scale, name="autodiff dx")
    if gamma is not None:
        assert_close(dgamma_s, dgamma, rtol=1e-10, atol=1e-12, name="staged dgamma")
        assert_close(gt.grad, dgamma, rtol=1e-10, atol=1e-12, name="autodiff dgamma")

    if eps is not None:  # machine-epsilon eps makes central differences meaningless near 0
        inputs = {"x": x} | ({} if gamma is None else {"gamma": gamma})

        def f(x, gamma=None):
            return ng.rms_norm_forward(x, gamma, eps=eps, normalized_ndim=k)[0]

        # The step follows the data's scale: near |x| ~ sqrt(eps) the curvature is large,
        # and a fixed h = 1e-5 would measure the finite difference's own error.
        h = 1e-5 * min(1.0, max(float(np.sqrt(np.mean(x.astype(float) ** 2))), 1e-3))
        check_gradients(f, inputs, dy, {"x": dx, "gamma": dgamma}, h=h, rtol=1e-6, atol=1e-8)


def test_rms_norm_staged_walk_has_no_mean_steps():
    x = np.arange(12.0).reshape(3, 4) - 5
    y, cache = ng.rms_norm_forward(x, np.ones(4), eps=1e-5)
    *_, steps = ng.rms_norm_backward_staged(np.ones_like(x), cache, return_steps=True)
    assert [s.number for s in steps] == [8, 7, 6, 5, 4, 3, 0]
    assert steps[-1].meets == "dx = dxmu1 + dxmu2"
    assert steps[0].node == "out = gamma * xhat"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,k", [((512, 96), 1), ((64, 8, 80), 2), ((3, 40000), 1)])
def test_rms_norm_fused_equals_numpy(dtype, shape, k):
    pytest.importorskip("numba")
    rng = np.random.default_rng(1)
    x = (rng.standard_normal(shape) * 3 + 0.5).astype(dtype)
    gamma = rng.uniform(0.5, 1.5, shape[-k:]).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    y_np, c_np = ng.rms_norm_forward(x, gamma, normalized_ndim=k, backend="numpy")
    y_nb, c_nb = ng.rms_norm_forward(x, gamma, normalized_ndim=k, backend="numba")
    assert c_nb.backend.name == "numba" and c_np.backend.name == "numpy"
    tol = 1e-12 if dtype == np.float64 else 2e-5
    assert_close(y_nb, y_np, rtol=tol, atol=tol, name="y")
    for name, a, b in zip(
        ("dx", "dgamma"),
        ng.rms_norm_backward(dy, c_nb),
        ng.rms_norm_backward(dy, c_np),
        strict=True,
    ):
        assert_close(a, b, rtol=tol, atol=tol * (np.abs(b).max() + 1), name=name)


def test_rms_norm_float16_is_computed_in_float32():
    x = np.random.default_rng(2).standard_normal((8, 16)).astype(np.float16)
    y, cache = ng.rms_norm_forward(x, None, eps=1e-5)
    assert y.dtype == np.float16
    assert_close(y, _direct(x, None, 1, 1e-5), rtol=2e-3, atol=2e-3, name="y")


def test_rms_norm_refuses_what_it_does_not_have():
    x = np.ones((2, 3))
    with pytest.raises(TypeError, match="rms_norm has no shift"):
        ng.get_op("rms_norm").forward(x, None, np.zeros(3))
    with pytest.raises(ValueError, match="no Bessel-corrected variant"):
        ng.get_op("rms_norm").forward(x, None, bessel=True)
    with pytest.raises(ValueError, match=r"gamma must have shape \(3,\)"):
        ng.rms_norm_forward(x, np.ones(2))
    with pytest.raises(ValueError, match="cache comes from layer_norm_forward"):
        ng.rms_norm_backward(x, ng.layer_norm_forward(x, None, None)[1])


torch_params = pytest.mark.parametrize(
    "dtype,tol", [(np.float64, 1e-12), (np.float32, 1e-5)], ids=["float64", "float32"]
)


@torch_params
@given(args=rms_inputs(), eps=st.sampled_from([None, 1e-6, 0.1]))
def test_rms_norm_matches_pytorch(dtype, tol, args, eps):
    torch = pytest.importorskip("torch")
    x, gamma, dy, k = args
    x, dy = x.astype(dtype), dy.astype(dtype)
    gamma = None if gamma is None else gamma.astype(dtype)
    y, cache = ng.rms_norm_forward(x, gamma, eps=eps, normalized_ndim=k)
    dx, dgamma = ng.rms_norm_backward(dy, cache)

    xt = torch.tensor(x, requires_grad=True)
    gt = None if gamma is None else torch.tensor(gamma, requires_grad=True)
    yt = torch.nn.functional.rms_norm(xt, x.shape[x.ndim - k :], gt, eps)
    yt.backward(torch.tensor(dy))
    scale = _dx_scale(dy, gamma, cache)
    assert_close(y, yt.detach().numpy(), rtol=tol, atol=tol, name="y")
    assert_close(dx, xt.grad.numpy(), rtol=tol, atol=tol * scale, name="dx")
    if gamma is not None:
        assert_close(dgamma, gt.grad.numpy(), rtol=tol, atol=tol * scale, name="dgamma")
