"""normgrad.nn: every layer's gradients by the one checker, calling, printing, training
behaviour, state. The normalization layers against PyTorch are in test_nn_norms.py, the
state dict's checks in test_nn_state.py."""

import numpy as np
import pytest

from normgrad.gradcheck import check_gradients
from normgrad.nn import (
    SGD,
    Adam,
    BatchNorm,
    Dropout,
    FullyConnectedNet,
    GroupNorm,
    InstanceNorm,
    LayerNorm,
    Linear,
    Module,
    ReLU,
    RMSNorm,
    Sequential,
    Sigmoid,
    softmax_cross_entropy,
)

RNG = np.random.default_rng(0)


def _trained(layer):
    """``layer`` after two training steps: running statistics away from their start."""
    rng = np.random.default_rng(5)
    shape = (4, layer.num_features) + (3,) * isinstance(layer, InstanceNorm)
    for _ in range(2):
        layer.forward(rng.standard_normal(shape) * 2 + 1)
    return layer


def _check_layer(layer, x):
    """Gradients wrt the input and every parameter, by central differences."""
    out = layer.forward(x)
    dout = np.random.default_rng(1).standard_normal(out.shape)
    dx = layer.backward(dout)
    params = layer.parameters()

    def f(x, **p):
        saved = {k: v.copy() for k, v in params.items()}
        for k, v in p.items():
            params[k][...] = v
        try:
            return layer.forward(x)
        finally:
            for k, v in saved.items():
                params[k][...] = v

    inputs = {"x": x} | {k: v.copy() for k, v in params.items()}
    analytic = {"x": dx} | {k: v.copy() for k, v in layer.gradients().items()}
    # A bias right before a batch norm has zero gradient: central differences then show
    # only their rounding floor, ~1e-16 * |L| / h ~ 1e-10 here, far below the O(1) gradients.
    check_gradients(f, inputs, dout, analytic, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize(
    ("make", "shape"),
    [
        (lambda: Linear(5, 3, rng=np.random.default_rng(0), weight_scale=0.5), (4, 5)),
        (lambda: BatchNorm(5), (6, 5)),
        (lambda: BatchNorm(3, channel_axis=-1), (2, 4, 3)),
        (lambda: BatchNorm(3, affine=False), (4, 3, 2)),
        (lambda: LayerNorm(5), (4, 5)),
        (lambda: LayerNorm((3, 2)), (4, 3, 2)),
        (lambda: GroupNorm(2, 4), (3, 4, 2)),
        (lambda: InstanceNorm(3, affine=True), (2, 3, 4)),
        (lambda: InstanceNorm(3, affine=True, track_running_stats=True), (2, 3, 2, 3)),
        (
            lambda: _trained(InstanceNorm(3, affine=True, track_running_stats=True)).eval(),
            (2, 3, 4),
        ),
        (lambda: LayerNorm((3, 2), bias=False), (4, 3, 2)),
        (lambda: LayerNorm(5, elementwise_affine=False), (4, 5)),
        (lambda: RMSNorm(5), (4, 5)),
        (lambda: RMSNorm((3, 2), eps=1e-3), (4, 3, 2)),
        (lambda: _trained(BatchNorm(3)).eval(), (4, 3)),
        (lambda: _trained(BatchNorm(3)).freeze_running_stats(), (4, 3)),
        (lambda: ReLU(), (4, 5)),
        (lambda: Sigmoid(), (4, 5)),
        (
            lambda: Sequential(
                Linear(5, 4, rng=np.random.default_rng(0), weight_scale=0.5),
                BatchNorm(4),
                Sigmoid(),
                Linear(4, 3, rng=np.random.default_rng(1), weight_scale=0.5),
            ),
            (6, 5),
        ),
    ],
)
def test_layer_gradients(make, shape):
    layer = make()
    x = RNG.standard_normal(shape) * 2 + 0.5
    if isinstance(layer, ReLU):
        x = x + np.sign(x) * 0.1  # keep away from the kink
    _check_layer(layer, x)


@pytest.mark.parametrize("norm", [None, "batchnorm", "layernorm"])
@pytest.mark.parametrize("activation", ["relu", "sigmoid"])
def test_network_gradients_including_the_loss(norm, activation):
    net = FullyConnectedNet(6, [5, 4], 3, normalization=norm, activation=activation,
                            weight_scale=0.5, seed=2)  # fmt: skip
    net["fc1"].input_grad = True  # check dx too
    x = RNG.standard_normal((7, 6))
    y = np.array([0, 1, 2, 0, 1, 2, 0])

    def loss(x, **p):
        saved = net.state_dict()
        for k, v in p.items():
            net.parameters()[k][...] = v
        out = softmax_cross_entropy(net.forward(x), y)[0]
        net.load_state_dict(saved)
        return np.array(out)

    scores = net.forward(x)
    _, dscores = softmax_cross_entropy(scores, y)
    dx = net.backward(dscores)
    inputs = {"x": x} | {k: v.copy() for k, v in net.parameters().items()}
    analytic = {"x": dx} | {k: v.copy() for k, v in net.gradients().items()}
    # Central differences of a loss of size ~1 carry ~1e-16 / h = 1e-11 of rounding; biases
    # before a batch norm have exactly zero gradient, so they see only that floor.
    check_gradients(loss, inputs, np.array(1.0), analytic, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("norm", [None, "batchnorm", "layernorm"])
def test_small_network_overfits_50_samples(norm):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((50, 20))
    y = rng.integers(0, 10, 50)
    net = FullyConnectedNet(20, [100, 100], 10, normalization=norm, weight_scale="he", seed=0)
    opt = Adam(net, lr=5e-3)
    for _ in range(300):
        _, d = softmax_cross_entropy(net.forward(x), y)
        net.backward(d)
        opt.step()
    net.eval()
    assert (net.forward(x).argmax(axis=1) == y).mean() == 1.0


def test_batchnorm_train_and_eval_differ_and_running_stats_follow_pytorch():
    bn = BatchNorm(3, momentum=0.2)
    x = RNG.standard_normal((8, 3)) * 3 + 2
    y_train = bn.forward(x)
    np.testing.assert_allclose(bn.buffers()["running_mean"], 0.2 * x.mean(axis=0))
    np.testing.assert_allclose(bn.buffers()["running_var"], 0.8 + 0.2 * x.var(axis=0, ddof=1))
    y_eval = bn.eval().forward(x)
    assert not np.allclose(y_train, y_eval)
    r = 1 / np.sqrt(bn.buffers()["running_var"] + 1e-5)
    np.testing.assert_allclose(y_eval, (x - bn.buffers()["running_mean"]) * r)


def test_batchnorm_cumulative_average_and_untracked_stats():
    bn = BatchNorm(2, momentum=None)
    batches = [RNG.standard_normal((5, 2)) + i for i in range(3)]
    for b in batches:
        bn.forward(b)
    np.testing.assert_allclose(
        bn.buffers()["running_mean"], np.mean([b.mean(0) for b in batches], 0)
    )
    assert int(bn.buffers()["num_batches_tracked"]) == 3
    free = BatchNorm(2, track_running_stats=False).eval()
    y = free.forward(batches[0])
    np.testing.assert_allclose(y.mean(axis=0), 0, atol=1e-12)  # batch statistics in eval too
    assert free.buffers() == {}


def test_dropout_train_and_eval():
    d = Dropout(0.5, rng=np.random.default_rng(0))
    x = np.ones((1000, 10))
    y = d.forward(x)
    assert set(np.unique(y)) == {0.0, 2.0} and abs(y.mean() - 1) < 0.05
    np.testing.assert_array_equal(d.backward(x), y)
    assert d.eval().forward(x) is x


def test_state_dict_round_trip_and_mismatches():
    a = FullyConnectedNet(4, [3], 2, normalization="batchnorm", seed=0)
    b = FullyConnectedNet(4, [3], 2, normalization="batchnorm", seed=1)
    a.forward(RNG.standard_normal((5, 4)))  # move the running statistics
    state = a.state_dict()
    assert set(state) == {"fc1.weight", "fc1.bias", "norm1.gamma", "norm1.beta",
                          "norm1.running_mean", "norm1.running_var", "norm1.num_batches_tracked",
                          "fc2.weight", "fc2.bias"}  # fmt: skip
    b.load_state_dict(state)
    x = RNG.standard_normal((3, 4))
    np.testing.assert_array_equal(a.eval().forward(x), b.eval().forward(x))
    with pytest.raises(ValueError, match=r"missing \['fc2.bias'\]"):
        b.load_state_dict({k: v for k, v in state.items() if k != "fc2.bias"})
    with pytest.raises(ValueError, match=r"state\['fc1.weight'\] has shape \(2, 2\)"):
        b.load_state_dict(state | {"fc1.weight": np.zeros((2, 2))})


def test_optimizers_state_round_trip():
    for make in (lambda m: SGD(m, lr=0.1, momentum=0.9), lambda m: Adam(m, lr=0.01)):
        net = FullyConnectedNet(4, [3], 2, seed=0)
        opt = make(net)
        x, y = RNG.standard_normal((5, 4)), np.array([0, 1, 0, 1, 1])
        for _ in range(3):
            net.backward(softmax_cross_entropy(net.forward(x), y)[1])
            opt.step()
        twin = FullyConnectedNet(4, [3], 2, seed=0)
        twin.load_state_dict(net.state_dict())
        twin_opt = make(twin)
        twin_opt.load_state_dict(opt.state_dict())
        for m, o in ((net, opt), (twin, twin_opt)):
            m.backward(softmax_cross_entropy(m.forward(x), y)[1])
            o.step()
        for k, v in net.parameters().items():
            np.testing.assert_array_equal(v, twin.parameters()[k])


def test_bad_arguments():
    with pytest.raises(ValueError, match="normalization must be"):
        FullyConnectedNet(4, [3], 2, normalization="instancenorm")
    with pytest.raises(ValueError, match="num_groups=4 must divide hidden size 3"):
        FullyConnectedNet(4, [3], 2, normalization="groupnorm")
    with pytest.raises(ValueError, match="unknown weight init 'uniform'"):
        FullyConnectedNet(4, [3], 2, weight_scale="uniform")
    with pytest.raises(ValueError, match="learning rate must be positive"):
        SGD(FullyConnectedNet(4, [3], 2), lr=0)


def test_float32_networks_train_in_float32():
    net = FullyConnectedNet(4, [3], 2, normalization="batchnorm", dtype=np.float32)
    out = net.forward(RNG.standard_normal((5, 4)).astype(np.float32))
    assert out.dtype == np.float32
    assert all(v.dtype == np.float32 for v in net.parameters().values())


# --------------------------------------------------------------------------- calling


def _every_layer():
    """One of each layer, with an input it takes."""
    rng = np.random.default_rng(0)
    return [
        (Linear(5, 3, rng=rng), (4, 5)),
        (ReLU(), (4, 5)),
        (Sigmoid(), (4, 5)),
        (Dropout(0.5, rng=np.random.default_rng(0)).eval(), (4, 5)),
        (BatchNorm(5), (4, 5)),
        (InstanceNorm(3, affine=True), (2, 3, 4)),
        (GroupNorm(2, 4), (3, 4, 2)),
        (LayerNorm(5), (4, 5)),
        (RMSNorm(5), (4, 5)),
        (Sequential(Linear(5, 4, rng=rng), BatchNorm(4), ReLU()), (6, 5)),
        (FullyConnectedNet(5, [4], 3, normalization="rms_norm"), (6, 5)),
    ]


def _layer_id(value):
    return type(value).__name__ if isinstance(value, Module) else str(value)


@pytest.mark.parametrize(("layer", "shape"), _every_layer(), ids=_layer_id)
def test_layers_are_callable(layer, shape):
    x = RNG.standard_normal(shape)
    np.testing.assert_array_equal(layer(x), layer.forward(x))


def test_calling_the_base_class_says_what_is_missing():
    with pytest.raises(NotImplementedError, match="Module does not define forward"):
        Module()(np.zeros(2))


@pytest.mark.parametrize(("layer", "shape"), _every_layer(), ids=_layer_id)
def test_backward_before_forward_is_a_clear_error(layer, shape):
    # A container's backward starts at its last layer: that is the one named.
    last = [layer, *layer.children()][-1]
    with pytest.raises(RuntimeError, match=rf"{type(last).__name__}\.backward\(\) was called"):
        layer.backward(np.ones(shape))


# --------------------------------------------------------------------------- printing


def test_repr_reads_as_pytorch():
    assert repr(BatchNorm(100)) == (
        "BatchNorm(100, eps=1e-05, momentum=0.1, affine=True, track_running_stats=True)"
    )
    assert repr(BatchNorm(3, momentum=None, channel_axis=-1)) == (
        "BatchNorm(3, eps=1e-05, momentum=None, affine=True, track_running_stats=True, "
        "channel_axis=-1)"
    )
    assert repr(InstanceNorm(3)) == (
        "InstanceNorm(3, eps=1e-05, momentum=0.1, affine=False, track_running_stats=False)"
    )
    assert repr(LayerNorm(5)) == "LayerNorm((5,), eps=1e-05, elementwise_affine=True)"
    assert repr(LayerNorm((3, 2), bias=False)) == (
        "LayerNorm((3, 2), eps=1e-05, elementwise_affine=True, bias=False)"
    )
    assert repr(RMSNorm(4)) == "RMSNorm((4,), eps=None, elementwise_affine=True)"
    assert repr(GroupNorm(2, 4)) == "GroupNorm(2, 4, eps=1e-05, affine=True)"
    assert repr(ReLU()) == "ReLU()"
    assert repr(Dropout(0.25, rng=None)) == "Dropout(p=0.25)"


def test_containers_print_their_children_indented():
    net = FullyConnectedNet(4, [3], 2, normalization="batch_norm")
    assert repr(net) == (
        "FullyConnectedNet(\n"
        "  (fc1): Linear(in_features=4, out_features=3, input_grad=False)\n"
        "  (norm1): BatchNorm(3, eps=1e-05, momentum=0.1, affine=True, track_running_stats=True)\n"
        "  (act1): ReLU()\n"
        "  (fc2): Linear(in_features=3, out_features=2)\n"
        ")"
    )
    nested = Sequential(ReLU(), Sequential(("inner", Sigmoid())))
    assert repr(nested) == (
        "Sequential(\n  (0): ReLU()\n  (1): Sequential(\n    (inner): Sigmoid()\n  )\n)"
    )
    assert [name for name, _ in nested.named_modules()] == ["", "0", "1", "1.inner"]


# --------------------------------------------------------------------------- the network


@pytest.mark.parametrize(
    ("given", "canonical", "layer"),
    [
        ("batchnorm", "batch_norm", BatchNorm),
        ("batch_norm", "batch_norm", BatchNorm),
        ("layernorm", "layer_norm", LayerNorm),
        ("layer_norm", "layer_norm", LayerNorm),
        ("groupnorm", "group_norm", GroupNorm),
        ("group_norm", "group_norm", GroupNorm),
        ("rms_norm", "rms_norm", RMSNorm),
        (None, None, None),
    ],
)
def test_network_normalization_names(given, canonical, layer):
    net = FullyConnectedNet(4, [8, 8], 2, normalization=given)
    assert net.normalization == canonical
    names = [name for name, _ in net]
    if layer is None:
        assert names == ["fc1", "act1", "fc2", "act2", "fc3"]
    else:
        assert names == ["fc1", "norm1", "act1", "fc2", "norm2", "act2", "fc3"]
        assert type(net["norm1"]) is layer
    assert net(RNG.standard_normal((5, 4))).shape == (5, 2)


def test_course_and_canonical_names_build_the_same_checkpoint():
    old = FullyConnectedNet(4, [8], 2, normalization="batchnorm", seed=3).state_dict()
    new = FullyConnectedNet(4, [8], 2, normalization="batch_norm", seed=3).state_dict()
    assert list(old) == list(new)
    for k in old:
        np.testing.assert_array_equal(old[k], new[k])


def test_relu_gives_exact_zeros_for_negative_and_infinite_inputs():
    x = np.array([-np.inf, -1.0, -0.0, 0.0, 2.0, np.inf])
    y = ReLU()(x)
    np.testing.assert_array_equal(y, [0.0, 0.0, 0.0, 0.0, 2.0, np.inf])
    assert not np.signbit(y).any()  # no -0.0, as max(x, 0) in PyTorch
    assert ReLU()(x.astype(np.float32)).dtype == np.float32
