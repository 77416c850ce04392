"""Population statistics (the paper's Algorithm 2) and batch norm's small 2-D training step."""

from __future__ import annotations

import numpy as np
import pytest

import normgrad as ng
from normgrad.nn import BatchNorm, FullyConnectedNet, batch_norm_2d
from normgrad.nn.population import (
    load_statistics,
    population_statistics,
    recompute_population_statistics,
    using_statistics,
)


def _net(dtype=np.float64, seed=0):
    return FullyConnectedNet(12, [7, 5], 3, normalization="batch_norm", activation="sigmoid",
                             weight_scale=0.5, seed=seed, dtype=dtype)  # fmt: skip


def _batches(sizes, features=12, seed=1):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((m, features)) * 2 + 0.5 for m in sizes]


def _direct(net, batches):
    """Algorithm 2 written out: the training network by hand, per batch; then the averages."""
    per_layer = {}
    for x in batches:
        h = x
        for name, layer in net:
            p = layer.params
            if name.startswith("fc"):
                h = h @ p["weight"] + p["bias"]
            elif name.startswith("norm"):
                mu, var = h.mean(axis=0), h.var(axis=0)
                per_layer.setdefault(name, []).append((mu, var, len(h)))
                h = (h - mu) / np.sqrt(var + layer.eps) * p["gamma"] + p["beta"]
            else:
                h = 1 / (1 + np.exp(-h))
    out = {}
    for name, stats in per_layer.items():
        mean = np.mean([mu for mu, _, _ in stats], axis=0)
        var = np.mean([v * m / (m - 1) for _, v, m in stats], axis=0)
        out[name] = (mean, var)
    return out


def test_population_statistics_equal_a_direct_computation_over_the_same_batches():
    net = _net()
    for x in _batches([20] * 5, seed=3):  # train a little so the layers are not at init
        net.backward(ng.nn.softmax_cross_entropy(net.forward(x), np.arange(20) % 3)[1])
        for k, g in net.gradients().items():
            net.parameters()[k] -= 0.5 * g
    batches = _batches([16] * 9)
    got = population_statistics(net, batches)
    want = _direct(net, batches)
    assert set(got) == set(want) == {"norm1", "norm2"}
    for name in want:
        np.testing.assert_allclose(got[name][0], want[name][0], rtol=1e-12, atol=1e-13)
        np.testing.assert_allclose(got[name][1], want[name][1], rtol=1e-12, atol=1e-13)
    # and they are not the running averages (which a momentum of 0.1 leaves near init)
    assert not np.allclose(got["norm1"][1], net["norm1"].buffers()["running_var"], rtol=0.1)


def test_unequal_batch_sizes_average_each_batch_unbiased_variance():
    net = _net()
    batches = _batches([4, 9, 30])
    got, want = population_statistics(net, batches), _direct(net, batches)
    for name in want:
        np.testing.assert_allclose(got[name][1], want[name][1], rtol=1e-12)


def test_population_statistics_leave_the_model_as_it_was():
    net = _net()
    net.forward(_batches([10])[0])  # one training step's running update
    net.eval()
    before = net.state_dict()
    population_statistics(net, _batches([8, 8]))
    assert not net.training and not net["norm1"].training
    after = net.state_dict()
    assert all(np.array_equal(before[k], after[k]) for k in before)
    assert net["norm1"].track_running_stats


def test_recompute_loads_them_and_eval_mode_uses_them():
    net = _net()
    batches = _batches([16] * 4)
    stats = recompute_population_statistics(net, batches)
    buf = net["norm2"].buffers()
    np.testing.assert_allclose(buf["running_mean"], stats["norm2"][0])
    np.testing.assert_allclose(buf["running_var"], stats["norm2"][1])


def test_using_statistics_puts_the_running_averages_back_bit_for_bit():
    net = _net(np.float32)
    net.forward(_batches([10])[0].astype(np.float32))
    before = net.state_dict()
    stats = population_statistics(net, [b.astype(np.float32) for b in _batches([16] * 3)])
    x = _batches([5], seed=9)[0].astype(np.float32)
    net.eval()
    with using_statistics(net, stats):
        inside = net.forward(x)
        assert np.allclose(net["norm1"].buffers()["running_mean"], stats["norm1"][0])
    assert all(np.array_equal(before[k], v) for k, v in net.state_dict().items())
    assert not np.allclose(inside, net.forward(x))


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="no batch norm layer"):
        population_statistics(FullyConnectedNet(4, [3], 2, seed=0), _batches([4], features=4))
    with pytest.raises(ValueError, match="at least one mini-batch"):
        population_statistics(_net(), [])
    with pytest.raises(ValueError, match="more than 1 value"):
        population_statistics(_net(), _batches([1]))
    with pytest.raises(KeyError, match="fc1"):
        load_statistics(_net(), {"fc1": (np.zeros(7), np.ones(7))})


# -- the small 2-D training step ----------------------------------------------------------


def _op_path(layer, x, dy):
    """The generic op on the same layer state (what BatchNorm ran before the small step)."""
    bufs = {k: v.copy() for k, v in layer.buffers().items()}
    g, b = layer.params["gamma"], layer.params["beta"]
    y, cache = ng.batch_norm_forward(x, g, b, running_mean=bufs["running_mean"],
                                     running_var=bufs["running_var"], momentum=layer.momentum,
                                     eps=layer.eps, backend="numpy")  # fmt: skip
    dx, dg, db = ng.batch_norm_backward(dy, cache)
    return y, dx, dg, db, bufs


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("fused", [False, True])
def test_small_step_equals_the_op(dtype, fused, monkeypatch):
    if fused and not batch_norm_2d.fused_available():
        pytest.skip("needs numba")
    monkeypatch.setenv("NORMGRAD_BACKEND", "auto" if fused else "numpy")
    rng = np.random.default_rng(0)
    layer = BatchNorm(6, dtype=dtype)
    layer.params["gamma"][...] = rng.standard_normal(6)
    layer.params["beta"][...] = rng.standard_normal(6)
    x = (rng.standard_normal((9, 6)) * 3 + 100).astype(dtype)  # a mean that dwarfs the spread
    dy = rng.standard_normal((9, 6)).astype(dtype)
    y_op, dx_op, dg_op, db_op, bufs = _op_path(layer, x, dy)
    y = layer.forward(x)
    dx = layer.backward(dy)
    got = (y, dx, layer.grads["gamma"], layer.grads["beta"],
           layer.buffers()["running_mean"], layer.buffers()["running_var"])  # fmt: skip
    want = (y_op, dx_op, dg_op, db_op, bufs["running_mean"], bufs["running_var"])
    for a, b in zip(got, want, strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape
        if fused:  # the same float64 sums, added in another order
            tol = 1e-5 if dtype == np.float32 else 1e-12
            np.testing.assert_allclose(a, b, rtol=tol, atol=tol)
        else:  # the same NumPy operations in the same order: the same bits
            np.testing.assert_array_equal(a, b)
    assert int(layer.buffers()["num_batches_tracked"]) == 1
    mean, var, m = layer.last_batch_statistics()
    np.testing.assert_allclose(mean, x.astype(np.float64).mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(var, x.astype(np.float64).var(axis=0), rtol=1e-4)
    assert m == 9


def test_small_step_checks_dout_and_leaves_other_inputs_to_the_op():
    layer = BatchNorm(4)
    layer.forward(np.ones((3, 4)) * np.arange(3)[:, None])
    with pytest.raises(ValueError, match="dout must have the shape"):
        layer.backward(np.ones((3, 5)))
    with pytest.raises(ValueError, match="channels"):  # the op's own message
        layer.forward(np.ones((3, 5)))
    layer.eval()
    with pytest.raises(RuntimeError, match="running statistics"):
        layer.forward(np.ones((3, 4)))
        layer.last_batch_statistics()
