"""The normalization layers against PyTorch's modules, step by step in train and eval mode:
y, dx, dgamma, dbeta and the running statistics."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from normgrad.gradcheck import assert_close
from normgrad.nn import BatchNorm, InstanceNorm, LayerNorm, RMSNorm

torch = pytest.importorskip("torch")

TOL = {np.float64: 1e-10, np.float32: 1e-5}


def _ours(layer, x, dy):
    """y, dx, dgamma, dbeta of one pass of our layer (None for a missing parameter)."""
    y = layer(x)
    dx = layer.backward(dy)
    return y, dx, *(layer.grads[k].copy() if k in layer.grads else None for k in ("gamma", "beta"))


def _theirs(module, x, dy):
    """The same for a torch module (weight and bias are PyTorch's gamma and beta)."""
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)  # the reference
    y = module(xt)
    y.backward(torch.tensor(dy, dtype=xt.dtype))
    grads = []
    for p in (module.weight, getattr(module, "bias", None)):
        grads.append(None if p is None else p.grad.numpy().copy())
        if p is not None:
            p.grad = None
    return y.detach().numpy(), xt.grad.numpy(), *grads


def _share_parameters(layer, module, rng):
    """Random gamma/beta, the same in both (so the affine path is really tested)."""
    # torch.nn.RMSNorm has no bias attribute at all
    for ours, theirs in (("gamma", module.weight), ("beta", getattr(module, "bias", None))):
        if ours in layer.params:
            value = rng.standard_normal(layer.params[ours].shape) + (ours == "gamma")
            layer.params[ours][...] = value
            with torch.no_grad():
                theirs.copy_(torch.tensor(value, dtype=theirs.dtype))
        else:
            assert theirs is None


def _dx_scale(layer, dy) -> float:
    """dx is a difference of terms of size |dy| * gamma * inv_std, which cancel when a group
    holds few values; its rounding error is relative to them, not to dx itself."""
    _op, cache = layer._op_cache
    gamma = layer.params.get("gamma")
    g = 1.0 if gamma is None else float(np.abs(gamma).max(initial=1.0))
    return float(np.abs(dy).max()) * g * float(cache.inv_std.max())


def _compare(ours, theirs, dtype, what, dx_scale=0.0):
    tol = TOL[dtype]
    for name, a, b in zip(("y", "dx", "dgamma", "dbeta"), ours, theirs, strict=True):
        if b is None:
            assert a is None, f"{what}: {name} should be None"
            continue
        assert a.dtype == dtype, f"{what}: {name} has dtype {a.dtype}"
        scale = max(1.0, float(np.max(np.abs(b), initial=0.0)))
        if name == "dx":
            scale = max(scale, dx_scale)
        assert_close(a, b, rtol=tol, atol=tol * scale, name=f"{what}: {name}")


def _compare_running(layer, module, dtype, what):
    if getattr(module, "running_mean", None) is None:
        assert layer.buffers() == {}
        return
    for name in ("running_mean", "running_var"):
        assert_close(
            layer.buffers()[name], getattr(module, name).numpy(), rtol=TOL[dtype],
            atol=TOL[dtype], name=f"{what}: {name}",
        )  # fmt: skip


def _side_by_side(layer, module, shape, dtype, seed, train_steps=3, eval_steps=2):
    """Train both for a few steps, then evaluate both, comparing every pass."""
    rng = np.random.default_rng(seed)
    _share_parameters(layer, module, rng)
    for step in range(train_steps + eval_steps):
        if step == train_steps:
            layer.eval()
            module.eval()
        mode = "train" if step < train_steps else "eval"
        x = (rng.standard_normal(shape) * 3 + 2).astype(dtype)
        dy = rng.standard_normal(shape).astype(dtype)
        what = f"{mode} step {step}"
        ours = _ours(layer, x, dy)
        _compare(ours, _theirs(module, x, dy), dtype, what, _dx_scale(layer, dy))
        _compare_running(layer, module, dtype, what)


def _torch_dtype(dtype):
    """PyTorch runs in float64 whatever our dtype: it is the reference. In float32 its CPU
    kernels round the mean before subtracting it, an error of the size of the tolerance
    that ours avoid (docs/design.md §10); our float32 results are held to float32's
    tolerance against PyTorch's float64 answer on the same (float32-rounded) inputs."""
    return torch.float64


@st.composite
def instance_cases(draw):
    spatial = tuple(draw(st.lists(st.integers(1, 4), min_size=1, max_size=3)))
    if np.prod(spatial) < 2:  # one value per instance has no variance (PyTorch refuses it)
        spatial = (*spatial[:-1], 2)
    shape = (draw(st.integers(1, 4)), draw(st.integers(1, 3)), *spatial)
    momentum = draw(st.sampled_from([0.1, 0.5, 1.0, 0.0]))
    return shape, momentum, draw(st.booleans()), draw(st.booleans())


@given(instance_cases(), st.sampled_from([np.float64, np.float32]), st.integers(0, 2**16))
def test_instance_norm_matches_pytorch(case, dtype, seed):
    shape, momentum, affine, track = case
    torch_class = {3: torch.nn.InstanceNorm1d, 4: torch.nn.InstanceNorm2d}.get(
        len(shape), torch.nn.InstanceNorm3d
    )
    kwargs = {"momentum": momentum, "affine": affine, "track_running_stats": track}
    module = torch_class(shape[1], **kwargs, dtype=_torch_dtype(dtype))
    layer = InstanceNorm(shape[1], **kwargs, dtype=dtype)
    _side_by_side(layer, module, shape, dtype, seed)


@pytest.mark.parametrize("track", [True, False])
def test_instance_norm_2d_matches_pytorch_over_several_steps(track):
    module = torch.nn.InstanceNorm2d(3, affine=True, track_running_stats=track).double()
    layer = InstanceNorm(3, affine=True, track_running_stats=track)
    _side_by_side(layer, module, (4, 3, 5, 6), np.float64, seed=0, train_steps=5, eval_steps=3)


@given(
    st.lists(st.integers(1, 4), min_size=1, max_size=3),
    st.lists(st.integers(1, 3), min_size=0, max_size=2),
    st.sampled_from([None, 1e-6, 0.1]),
    st.booleans(),
    st.sampled_from([np.float64, np.float32]),
    st.integers(0, 2**16),
)
def test_rms_norm_matches_pytorch(normalized, leading, eps, affine, dtype, seed):
    normalized = tuple(normalized)
    # eps=None means the machine epsilon of the layer's dtype; the float64 reference must
    # use the same number, not float64's own.
    torch_eps = float(np.finfo(dtype).eps) if eps is None else eps
    module = torch.nn.RMSNorm(
        normalized, eps=torch_eps, elementwise_affine=affine, dtype=_torch_dtype(dtype)
    )
    layer = RMSNorm(normalized, eps=eps, elementwise_affine=affine, dtype=dtype)
    _side_by_side(layer, module, (*leading, *normalized), dtype, seed, 2, 1)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("elementwise_affine", [True, False])
@pytest.mark.parametrize(("normalized", "shape"), [(5, (4, 5)), ((3, 2), (2, 4, 3, 2))])
def test_layer_norm_matches_pytorch(normalized, shape, elementwise_affine, bias):
    kwargs = {"elementwise_affine": elementwise_affine, "bias": bias}
    module = torch.nn.LayerNorm(normalized, **kwargs).double()
    layer = LayerNorm(normalized, **kwargs)
    expected = ({"gamma", "beta"} if bias else {"gamma"}) if elementwise_affine else set()
    assert set(layer.params) == expected
    _side_by_side(layer, module, shape, np.float64, seed=1, train_steps=2, eval_steps=1)


def test_frozen_batch_norm_is_pytorchs_eval_mode_batch_norm_in_a_training_model():
    module = torch.nn.BatchNorm2d(3).double()
    layer = BatchNorm(3)
    _side_by_side(layer, module, (4, 3, 2, 2), np.float64, seed=2, train_steps=3, eval_steps=0)
    # Frozen: PyTorch's recipe is bn.eval() while the rest of the model trains.
    layer.freeze_running_stats().train()
    module.eval()
    _side_by_side(layer.train(), module, (4, 3, 2, 2), np.float64, seed=3, train_steps=0)
    assert int(layer.buffers()["num_batches_tracked"]) == int(module.num_batches_tracked) == 3


def test_track_running_stats_switched_off_at_runtime_as_pytorch():
    """Training then uses batch statistics without updating; eval still uses the running."""
    module = torch.nn.BatchNorm1d(4).double()
    layer = BatchNorm(4)
    _side_by_side(layer, module, (6, 4), np.float64, seed=4, train_steps=2, eval_steps=0)
    layer.track_running_stats = False
    module.track_running_stats = False
    _side_by_side(layer, module, (6, 4), np.float64, seed=5, train_steps=2, eval_steps=2)
    assert int(layer.buffers()["num_batches_tracked"]) == int(module.num_batches_tracked) == 2


@pytest.mark.parametrize("momentum", [0.1, None])
def test_batch_norm_running_statistics_match_pytorch(momentum):
    module = torch.nn.BatchNorm1d(3, momentum=momentum).double()
    layer = BatchNorm(3, momentum=momentum)
    _side_by_side(layer, module, (5, 3, 4), np.float64, seed=6, train_steps=4, eval_steps=1)
    assert int(layer.buffers()["num_batches_tracked"]) == int(module.num_batches_tracked)
