"""normgrad against PyTorch's autograd: forward, backward, running statistics, every layout."""

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from _cases import Call, error_scales, norm_calls
from normgrad.core.table import OPS
from normgrad.gradcheck import assert_close

torch = pytest.importorskip("torch")
from normgrad.reference.pytorch import reference  # noqa: E402  (after the skip)

TOL = {np.float64: 1e-12, np.float32: 1e-5}


def _compare(call: Call, dtype, seed=3):
    # PyTorch's group_norm refuses N * (C/G) * spatial == 1 (normgrad returns beta there).
    assume(not (call.op == "group_norm" and call.x.size // call.kwargs["num_groups"] <= 1))
    dy = np.random.default_rng(seed).standard_normal(call.x.shape).astype(dtype)
    y, cache = call.forward()
    grads = call.backward(dy, cache)
    ref = reference(call.op, call.x, call.gamma, call.beta, dy, **call.reference_kwargs())
    tol = TOL[dtype]
    scales = error_scales(call.x, call.gamma, dy, cache)
    assert_close(y, ref[0], rtol=tol, atol=tol * scales["y"], name="y")
    for name, ours, theirs in zip(("dx", "dgamma", "dbeta"), grads, ref[1:], strict=True):
        atol = tol * scales[name]
        assert_close(ours, theirs, rtol=tol, atol=atol, name=name)


# Every op of the table, each drawn on its own so that none goes unchecked in a run.
@pytest.mark.parametrize("op", OPS)
@given(data=st.data())
def test_forward_backward_match_pytorch_float64(op, data):
    _compare(data.draw(norm_calls(dtype=np.float64, ops=(op,))), np.float64)


@pytest.mark.parametrize("op", OPS)
@given(data=st.data())
def test_forward_backward_match_pytorch_float32(op, data):
    _compare(data.draw(norm_calls(dtype=np.float32, ops=(op,))), np.float32)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize(
    ("shape", "channel_axis"),
    [((16, 5), 1), ((4, 3, 7), 1), ((2, 3, 4, 5), 1), ((2, 2, 3, 4, 5), 1), ((2, 4, 5, 3), -1)],
)
@pytest.mark.parametrize("momentum", [0.1, 0.5, 1.0])
def test_running_statistics_match_pytorch_after_several_steps(dtype, shape, channel_axis, momentum):
    import normgrad as ng

    rng = np.random.default_rng(0)
    c = shape[channel_axis]
    ours_mean, ours_var = np.zeros(c, dtype), np.ones(c, dtype)
    ref_mean, ref_var = ours_mean.copy(), ours_var.copy()
    gamma, beta = rng.standard_normal(c).astype(dtype), rng.standard_normal(c).astype(dtype)
    for step in range(4):
        x = (rng.standard_normal(shape) * (step + 1) + step).astype(dtype)
        dy = rng.standard_normal(shape).astype(dtype)
        y, cache = ng.batch_norm_forward(
            x, gamma, beta, running_mean=ours_mean, running_var=ours_var,
            momentum=momentum, channel_axis=channel_axis,
        )  # fmt: skip
        ref = reference(
            "batch_norm", x, gamma, beta, dy, running_mean=ref_mean, running_var=ref_var,
            momentum=momentum, channel_axis=channel_axis,
        )  # fmt: skip
        assert_close(y, ref[0], rtol=TOL[dtype], name=f"y at step {step}")
        assert_close(ours_mean, ref_mean, rtol=TOL[dtype], name=f"running_mean at step {step}")
        assert_close(ours_var, ref_var, rtol=TOL[dtype], name=f"running_var at step {step}")
    # Eval mode with the accumulated statistics, forward and backward.
    x = rng.standard_normal(shape).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    y, cache = ng.batch_norm_forward(
        x, gamma, beta, training=False, running_mean=ours_mean, running_var=ours_var,
        channel_axis=channel_axis,
    )  # fmt: skip
    grads = ng.batch_norm_backward(dy, cache)
    ref = reference(
        "batch_norm", x, gamma, beta, dy, training=False, running_mean=ref_mean,
        running_var=ref_var, channel_axis=channel_axis,
    )  # fmt: skip
    for name, ours, theirs in zip(("y", "dx", "dgamma", "dbeta"), (y, *grads), ref, strict=True):
        assert_close(ours, theirs, rtol=TOL[dtype], name=f"eval {name}")


@given(st.integers(1, 4), st.integers(1, 3), st.integers(2, 5))
def test_group_norm_with_one_group_per_channel_is_instance_norm_in_pytorch_too(n, c, length):
    import normgrad as ng

    x = np.random.default_rng(n * 100 + c).standard_normal((n, c, length))
    y_gn, _ = ng.group_norm_forward(x, None, None, c)
    y_in = torch.nn.functional.instance_norm(torch.from_numpy(x)).numpy()
    assert_close(y_gn, y_in, rtol=1e-12)
