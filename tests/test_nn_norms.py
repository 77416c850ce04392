"""The normalization layers' own behaviour: frozen and reset running statistics, refused
inputs that leave the state untouched, inputs that do not fit the layer, bad arguments.
(Against PyTorch: test_nn_torch.py; gradients: test_nn.py.)"""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from normgrad.nn import (
    SGD,
    BatchNorm,
    FullyConnectedNet,
    GroupNorm,
    InstanceNorm,
    LayerNorm,
    RMSNorm,
    softmax_cross_entropy,
)

RNG = np.random.default_rng(0)


def _state(layer):
    return {k: v.copy() for k, v in layer.state_dict().items()}


def _assert_same_state(a, b):
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
        assert a[k].dtype == b[k].dtype


# --------------------------------------------------------------------------- frozen


def test_frozen_batch_norm_normalizes_with_running_stats_and_keeps_them():
    bn = BatchNorm(3)
    for _ in range(3):
        bn(RNG.standard_normal((8, 3)) * 2 + 1)
    bn.params["gamma"][...] = [0.5, 1.5, 2.0]
    frozen_state = _state(bn)
    x, dy = RNG.standard_normal((8, 3)) * 2 + 1, RNG.standard_normal((8, 3))
    y_eval, dx_eval = bn.eval()(x), bn.backward(dy)

    bn.freeze_running_stats()
    bn.train()  # freezing survives the switch back to training mode
    assert bn.training and bn.running_stats_frozen
    np.testing.assert_array_equal(bn(x), y_eval)
    np.testing.assert_array_equal(bn.backward(dy), dx_eval)
    # dx is the affine-only path: mean and variance are constants
    inv_std = 1 / np.sqrt(frozen_state["running_var"] + 1e-5)
    np.testing.assert_allclose(dx_eval, dy * bn.params["gamma"] * inv_std)
    _assert_same_state(_state(bn), frozen_state)
    xhat = (x - frozen_state["running_mean"]) * inv_std
    np.testing.assert_allclose(bn.grads["gamma"], (dy * xhat).sum(0))
    np.testing.assert_allclose(bn.grads["beta"], dy.sum(0))

    bn.unfreeze_running_stats()
    bn(x)
    assert int(bn.buffers()["num_batches_tracked"]) == 4
    assert not np.allclose(bn.buffers()["running_mean"], frozen_state["running_mean"])


def test_a_network_with_frozen_batch_norms_still_trains_gamma_and_beta():
    net = FullyConnectedNet(4, [6, 6], 3, normalization="batch_norm", seed=0, weight_scale="he")
    x, y = RNG.standard_normal((10, 4)), RNG.integers(0, 3, 10)
    net(x)  # running statistics away from their start
    norms = [m for m in net.modules() if isinstance(m, BatchNorm)]
    assert len(norms) == 2
    for bn in norms:
        bn.freeze_running_stats()
    buffers = {k: v.copy() for k, v in net.buffers().items()}
    gammas = {k: v.copy() for k, v in net.parameters().items() if k.endswith(("gamma", "beta"))}
    opt = SGD(net.train(), lr=0.1)
    for _ in range(3):
        net.backward(softmax_cross_entropy(net(x), y)[1])
        opt.step()
    _assert_same_state(net.buffers(), buffers)
    for k, before in gammas.items():
        assert not np.array_equal(net.parameters()[k], before), k


def test_freezing_needs_running_statistics():
    for layer in (BatchNorm(3, track_running_stats=False), InstanceNorm(3)):
        with pytest.raises(ValueError, match="no running statistics to freeze"):
            layer.freeze_running_stats()
        with pytest.raises(ValueError, match="built with track_running_stats=False"):
            layer.track_running_stats = True


def test_frozen_instance_norm_uses_running_stats_in_training():
    layer = InstanceNorm(2, track_running_stats=True)
    layer(RNG.standard_normal((3, 2, 5)) + 1)
    x = RNG.standard_normal((3, 2, 5))
    expected = layer.eval()(x)
    state = _state(layer)
    np.testing.assert_array_equal(layer.freeze_running_stats().train()(x), expected)
    _assert_same_state(_state(layer), state)


# --------------------------------------------------------------------------- reset


@pytest.mark.parametrize(
    ("make", "shape"),
    [
        (lambda: BatchNorm(3), (5, 3)),
        (lambda: InstanceNorm(3, affine=True, track_running_stats=True), (2, 3, 4)),
    ],
)
def test_reset_running_stats_and_parameters_in_place(make, shape):
    layer = make()
    buffers = layer.buffers()
    for _ in range(2):
        layer(RNG.standard_normal(shape) + 3)
    layer.params["gamma"][...] = 2.0
    layer.params["beta"][...] = -1.0
    layer.reset_running_stats()
    assert layer.buffers() == buffers  # the same arrays, written in place
    np.testing.assert_array_equal(buffers["running_mean"], 0)
    np.testing.assert_array_equal(buffers["running_var"], 1)
    assert int(buffers["num_batches_tracked"]) == 0
    np.testing.assert_array_equal(layer.params["gamma"], 2.0)  # parameters kept

    layer(RNG.standard_normal(shape) + 3)
    layer.reset_parameters()
    np.testing.assert_array_equal(layer.params["gamma"], 1)
    np.testing.assert_array_equal(layer.params["beta"], 0)
    np.testing.assert_array_equal(buffers["running_mean"], 0)
    assert int(buffers["num_batches_tracked"]) == 0


@pytest.mark.parametrize(
    "layer", [LayerNorm(4), LayerNorm(4, bias=False), RMSNorm(4), GroupNorm(2, 4)]
)
def test_reset_parameters_of_layers_without_running_stats(layer):
    gamma = layer.params["gamma"]
    for p in layer.params.values():
        p[...] = 7.0
    layer.reset_parameters()
    assert layer.params["gamma"] is gamma
    np.testing.assert_array_equal(gamma, 1)
    if "beta" in layer.params:
        np.testing.assert_array_equal(layer.params["beta"], 0)


# --------------------------------------------------------------------------- refused inputs

_BAD_BATCH_NORM_INPUTS = {
    "wrong channels": np.ones((4, 5)),
    "one value per channel": np.ones((1, 3)),
    "integers": np.ones((4, 3), dtype=np.int64),
    "one dimension": np.ones(3),
}


@given(
    st.lists(st.sampled_from(sorted(_BAD_BATCH_NORM_INPUTS)), min_size=1, max_size=4),
    st.sampled_from([None, 0.1]),
)
def test_a_refused_batch_leaves_batch_norm_untouched(bad_inputs, momentum):
    bn = BatchNorm(3, momentum=momentum)
    good = [RNG.standard_normal((6, 3)) + i for i in range(2)]
    bn(good[0])
    state = _state(bn)
    for name in bad_inputs:
        with pytest.raises((ValueError, TypeError)):
            bn(_BAD_BATCH_NORM_INPUTS[name])
        _assert_same_state(_state(bn), state)
    bn(good[1])
    assert int(bn.buffers()["num_batches_tracked"]) == 2
    if momentum is None:  # the cumulative average counts only the accepted batches
        np.testing.assert_allclose(
            bn.buffers()["running_mean"], np.mean([g.mean(0) for g in good], axis=0)
        )


def test_a_refused_batch_leaves_instance_norm_untouched():
    layer = InstanceNorm(3, track_running_stats=True)
    layer(RNG.standard_normal((2, 3, 4)))
    state = _state(layer)
    for bad in (np.ones((2, 3, 1)), np.ones((2, 4, 4)), np.ones((2, 3))):
        with pytest.raises(ValueError):
            layer(bad)
        _assert_same_state(_state(layer), state)


def test_instance_norm_running_statistics_by_hand():
    layer = InstanceNorm(2, momentum=0.3, track_running_stats=True)
    x = RNG.standard_normal((4, 2, 3, 5)) * 2 + 1
    layer(x)
    mean = x.mean(axis=(2, 3)).mean(axis=0)
    var = x.var(axis=(2, 3), ddof=1).mean(axis=0)  # unbiased per instance, then averaged
    np.testing.assert_allclose(layer.buffers()["running_mean"], 0.3 * mean)
    np.testing.assert_allclose(layer.buffers()["running_var"], 0.7 + 0.3 * var)

    cumulative = InstanceNorm(2, momentum=None, track_running_stats=True)
    batches = [RNG.standard_normal((3, 2, 4)) + i for i in range(3)]
    for b in batches:
        cumulative(b)
    np.testing.assert_allclose(
        cumulative.buffers()["running_mean"], np.mean([b.mean(axis=(0, 2)) for b in batches], 0)
    )
    assert int(cumulative.buffers()["num_batches_tracked"]) == 3


def test_instance_norm_without_running_stats_is_the_same_in_eval():
    layer = InstanceNorm(2)
    x = RNG.standard_normal((3, 2, 6))
    np.testing.assert_array_equal(layer(x), layer.eval()(x))
    assert layer.buffers() == {} and layer.params == {}


# --------------------------------------------------------------------------- inputs that do not fit


@pytest.mark.parametrize(
    ("layer", "x_shape", "message"),
    [
        (LayerNorm(5, elementwise_affine=False), (4, 6), r"LayerNorm\(normalized_shape=\(5,\)\)"),
        (LayerNorm((3, 2), elementwise_affine=False), (4, 2, 3), r"ends in \(2, 3\)"),
        (LayerNorm((3, 2)), (4, 2, 3), r"ends in \(2, 3\)"),
        (RMSNorm(5, elementwise_affine=False), (4, 6), r"RMSNorm\(normalized_shape=\(5,\)\)"),
        (BatchNorm(3, affine=False, track_running_stats=False), (4, 5), "has 5 channels"),
        (BatchNorm(3, channel_axis=-1), (4, 3, 5), r"x.shape\[-1\], channel_axis=-1"),
        (InstanceNorm(3), (2, 4, 5), r"InstanceNorm\(num_features=3\).*has 4 channels"),
        (GroupNorm(2, 4, affine=False), (2, 6, 3), r"GroupNorm\(num_channels=4\)"),
    ],
)
def test_an_input_that_does_not_fit_the_layer_is_refused(layer, x_shape, message):
    with pytest.raises(ValueError, match=message):
        layer(np.ones(x_shape))


def test_layer_norm_over_too_few_dimensions_is_refused():
    with pytest.raises(ValueError, match="at least normalized_ndim=2"):
        LayerNorm((3, 2))(np.ones(2))


@pytest.mark.parametrize(
    ("make", "error", "message"),
    [
        (lambda: BatchNorm(0), ValueError, "num_features must be a positive int"),
        (lambda: BatchNorm(3, eps=0), ValueError, "eps must be a positive"),
        (lambda: BatchNorm(3, momentum=1.5), ValueError, r"momentum must be in \[0, 1\]"),
        (lambda: InstanceNorm(3, momentum="0.1"), TypeError, "momentum must be a number"),
        (lambda: GroupNorm(3, 4), ValueError, "num_groups=3 must divide num_channels=4"),
        (lambda: LayerNorm(()), ValueError, "at least one dimension"),
        (lambda: LayerNorm((3, 0)), ValueError, "normalized_shape must be a positive int"),
        (lambda: RMSNorm(3, eps=-1.0), ValueError, "eps must be a positive"),
    ],
)
def test_bad_constructor_arguments(make, error, message):
    with pytest.raises(error, match=message):
        make()
