"""Second derivatives: the closed-form double backward of every op against central
differences of the backward (1e-8 relative, float64), against the autodiff engine's
differentiable backward, and against PyTorch's double backward."""

import importlib.util

import numpy as np
import pytest

import normgrad as ng
from normgrad.autodiff import Tensor, norm
from normgrad.gradcheck import assert_close, check_gradients

CASES = [
    ("batch_norm", (5, 3), {}),
    ("batch_norm", (3, 2, 4), {}),
    ("batch_norm", (2, 3, 2, 2), {}),
    ("batch_norm", (3, 2, 2, 3), {"channel_axis": -1}),
    ("layer_norm", (4, 5), {}),
    ("layer_norm", (2, 3, 4), {"normalized_ndim": 2}),
    ("group_norm", (2, 4, 3), {"num_groups": 2}),
    ("instance_norm", (2, 3, 4), {}),
    ("rms_norm", (4, 5), {}),
    ("rms_norm", (2, 2, 3), {"normalized_ndim": 2}),
]


def _variants():
    for name, shape, option in CASES:
        spec = ng.get_op(name)
        for bessel in (False, True) if spec.bessel_allowed else (False,):
            yield name, shape, option, {"bessel": bessel}
        if spec.running_stats:
            yield name, shape, option, {"training": False}


def _ids(v):
    name, shape, option, kw = v
    extra = ",".join(f"{k}={val}" for k, val in {**option, **kw}.items())
    return f"{name}{list(shape)}{extra}"


def _problem(name, shape, option, kw, seed=0):
    rng = np.random.default_rng(seed)
    spec = ng.get_op(name)
    p = spec.param_shape(shape, **option)
    data = {
        "x": rng.standard_normal(shape) * 1.5 + 0.5,
        "gamma": rng.standard_normal(p) + 1.0,
        "beta": rng.standard_normal(p) if spec.has_beta else None,
        "dy": rng.standard_normal(shape),
        "ddx": rng.standard_normal(shape),
        "ddgamma": rng.standard_normal(p),
        "ddbeta": rng.standard_normal(p) if spec.has_beta else None,
    }
    kwargs = dict(option, **kw)
    if kw.get("training") is False:
        kwargs |= {"running_mean": rng.standard_normal(p), "running_var": rng.uniform(0.5, 2, p)}
    return spec, data, kwargs


@pytest.mark.parametrize("variant", list(_variants()), ids=_ids)
def test_double_backward_equals_central_differences_of_the_backward(variant):
    spec, d, kwargs = _problem(*variant)

    def backward_of(x, gamma, dy):
        """(dx, dgamma, dbeta) as one vector: the function whose derivative is checked."""
        _, cache = spec.forward(x, gamma, d["beta"], **kwargs)
        grads = spec.backward(dy, cache)
        return np.concatenate([g.ravel() for g in grads if g is not None])

    cotangent = np.concatenate(
        [d[k].ravel() for k in ("ddx", "ddgamma", "ddbeta") if d[k] is not None]
    )
    _, cache = spec.forward(d["x"], d["gamma"], d["beta"], **kwargs)
    gx, ggamma, gdy = spec.double_backward(d["dy"], cache, d["ddx"], d["ddgamma"], d["ddbeta"])
    check_gradients(
        backward_of, {"x": d["x"], "gamma": d["gamma"], "dy": d["dy"]}, cotangent,
        {"x": gx, "gamma": ggamma, "dy": gdy}, rtol=1e-8,
    )  # fmt: skip


@pytest.mark.parametrize("variant", [v for v in _variants() if "training" not in v[3]], ids=_ids)
def test_double_backward_equals_the_autodiff_engine_differentiated_twice(variant):
    spec, d, kwargs = _problem(*variant, seed=1)
    _, cache = spec.forward(d["x"], d["gamma"], d["beta"], **kwargs)
    expected = spec.double_backward(d["dy"], cache, d["ddx"], d["ddgamma"], d["ddbeta"])
    x, gamma, dy = Tensor(d["x"]), Tensor(d["gamma"]), Tensor(d["dy"])
    beta = None if d["beta"] is None else Tensor(d["beta"])
    norm(spec, x, gamma, beta, **kwargs).backward(dy, create_graph=True)
    second = (x.grad * d["ddx"]).sum() + (gamma.grad * d["ddgamma"]).sum()
    if beta is not None:
        second = second + (beta.grad * d["ddbeta"]).sum()
    second.backward()
    for name, got, want in zip(("x", "gamma", "dy"), (x.grad, gamma.grad, dy.grad), expected,
                               strict=True):  # fmt: skip
        assert_close(got, want, rtol=1e-12, name=f"d2/d{name}")


@pytest.mark.parametrize("variant", list(_variants()), ids=_ids)
def test_double_backward_equals_pytorchs(variant):
    pytest.importorskip("torch")
    from normgrad.reference.pytorch import double_backward_reference

    spec, d, kwargs = _problem(*variant, seed=2)
    _, cache = spec.forward(d["x"], d["gamma"], d["beta"], **kwargs)
    ours = spec.double_backward(d["dy"], cache, d["ddx"], d["ddgamma"], d["ddbeta"])
    theirs = double_backward_reference(
        spec, *(d[k] for k in ("x", "gamma", "beta", "dy", "ddx", "ddgamma", "ddbeta")), **kwargs
    )
    for name, a, b in zip(("x", "gamma", "dy"), ours, theirs, strict=True):
        assert_close(a, b, rtol=1e-12, name=f"d2/d{name} vs PyTorch")


def test_partial_cotangents_and_refused_ones():
    spec, d, kwargs = _problem("group_norm", (2, 4, 3), {"num_groups": 2}, {})
    _, cache = spec.forward(d["x"], d["gamma"], d["beta"], **kwargs)
    full = spec.double_backward(d["dy"], cache, d["ddx"], None, None)
    parts = [spec.double_backward(d["dy"], cache, None, d["ddgamma"], None),
             spec.double_backward(d["dy"], cache, None, None, d["ddbeta"])]  # fmt: skip
    both = spec.double_backward(d["dy"], cache, d["ddx"], d["ddgamma"], d["ddbeta"])
    for i in range(3):  # linear in the cotangents
        np.testing.assert_allclose(both[i], full[i] + parts[0][i] + parts[1][i], atol=1e-12)
    np.testing.assert_array_equal(parts[1][0], 0.0)  # dbeta = sum(dy) does not depend on x
    _, no_gamma = spec.forward(d["x"], None, None, **kwargs)
    gx, ggamma, gdy = ng.group_norm_double_backward(d["dy"], no_gamma, d["ddx"])
    assert ggamma is None and gx.shape == gdy.shape == d["x"].shape
    with pytest.raises(ValueError, match="ddgamma given, but the forward had no gamma"):
        ng.double_backward(d["dy"], no_gamma, None, d["ddgamma"])
    with pytest.raises(ValueError, match=r"ddx must have shape \(2, 4, 3\); got shape \(4, 3\)"):
        ng.double_backward(d["dy"], cache, np.ones((4, 3)))
    with pytest.raises(ValueError, match="cache comes from group_norm_forward"):
        ng.batch_norm_double_backward(d["dy"], cache)


def test_the_engine_differentiates_its_own_backward():
    x = Tensor(np.array([0.5, -1.0, 2.0]))
    ((x**3).sum() + x.tanh().sum()).backward(create_graph=True)
    t = np.tanh(x.data)
    np.testing.assert_allclose(x.grad.data, 3 * x.data**2 + 1 - t**2)
    x.grad.sum().backward()
    np.testing.assert_allclose(x.grad, 6 * x.data - 2 * t * (1 - t**2))
    # sum(z z^T) has gradient G = 2 J z (J all ones), so d/dz sum(G^2) = 8 J J z
    z = Tensor(np.array([[1.0, 2.0], [3.0, 4.0]]))
    (z @ z.T).sum().backward(create_graph=True)
    assert isinstance(z.grad, Tensor)
    (z.grad * z.grad).sum().backward()
    j = np.ones((2, 2))
    np.testing.assert_allclose(z.grad, 8 * j @ j @ z.data)


def test_verify_reports_second_derivatives_and_pytorchs_failures():
    from normgrad.verify import second_derivative_rows

    torch_there = importlib.util.find_spec("torch") is not None
    rows = second_derivative_rows(np.random.default_rng(0), use_torch=torch_there)
    assert rows and all(r.passed for r in rows), [r.label for r in rows if not r.passed]
    for row in rows:
        assert row.errors["numeric"][0] <= 1e-8
        if torch_there:  # PyTorch agrees, or its own failure is named
            assert "torch" in row.errors or row.note.startswith("PyTorch raises"), row.label
