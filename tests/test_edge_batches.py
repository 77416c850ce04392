"""Batches pipelines really produce: empty ones, ones with NaN/Inf, huge magnitudes; eval
mode given what it does not use; the trainer stopping on non-finite running statistics."""

import warnings

import numpy as np
import pytest

import normgrad as ng
from normgrad.data import Split
from normgrad.errors import NonFiniteStatisticsWarning
from normgrad.nn import BatchNorm, GroupNorm, InstanceNorm, LayerNorm, RMSNorm
from normgrad.train import TrainConfig, Trainer, TrainingDiverged

RNG = np.random.default_rng(12)

_EMPTY_CASES = [
    ("batch_norm", (0, 3), {}),
    ("batch_norm", (0, 3, 4), {}),
    ("batch_norm", (2, 3, 0), {}),
    ("batch_norm", (0, 4, 3), {"channel_axis": -1}),
    ("layer_norm", (0, 5), {}),
    ("group_norm", (0, 4, 3), {"num_groups": 2}),
    ("instance_norm", (0, 3, 4), {}),
    ("instance_norm", (2, 3, 0), {}),
    ("rms_norm", (0, 5), {}),
]


@pytest.mark.parametrize(("name", "shape", "option"), _EMPTY_CASES)
def test_an_empty_batch_gives_an_empty_output_and_zero_parameter_gradients(name, shape, option):
    spec = ng.get_op(name)
    x = np.zeros(shape)
    pshape = spec.param_shape(shape, **option)
    gamma, beta = RNG.standard_normal(pshape), RNG.standard_normal(pshape)
    kwargs = dict(option)
    if spec.running_stats:
        rm, rv = np.full(pshape, 0.5), np.full(pshape, 2.0)
        kwargs |= {"running_mean": rm, "running_var": rv}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "mean of empty slice", no division by zero
        y, cache = spec.forward(x, gamma, beta if spec.has_beta else None, **kwargs)
        dx, dgamma, dbeta = spec.backward(np.zeros(shape), cache)
        staged = spec.backward_staged(np.zeros(shape), cache)
    assert y.shape == shape and dx.shape == shape and y.dtype == x.dtype
    np.testing.assert_array_equal(dgamma, np.zeros(pshape))
    assert dbeta is None if not spec.has_beta else np.array_equal(dbeta, np.zeros(pshape))
    np.testing.assert_array_equal(staged[1], np.zeros(pshape))
    if spec.running_stats:  # untouched, as PyTorch leaves them
        np.testing.assert_array_equal(rm, 0.5)
        np.testing.assert_array_equal(rv, 2.0)


@pytest.mark.parametrize(
    "layer",
    [
        lambda: BatchNorm(3),
        lambda: BatchNorm(3, momentum=None),
        lambda: InstanceNorm(3, track_running_stats=True, affine=True),
        lambda: GroupNorm(1, 3),
    ],
)
def test_an_empty_batch_is_not_counted_by_a_layer(layer):
    layer = layer()
    layer(RNG.standard_normal((4, 3, 2)))
    before = {k: v.copy() for k, v in layer.state_dict().items()}
    y = layer(np.zeros((0, 3, 2)))
    dx = layer.backward(np.zeros((0, 3, 2)))
    assert y.shape == dx.shape == (0, 3, 2)
    for k, v in layer.state_dict().items():
        np.testing.assert_array_equal(v, before[k], err_msg=k)
    for g in layer.grads.values():
        np.testing.assert_array_equal(g, 0.0)


def test_empty_batches_match_pytorch():
    pytest.importorskip("torch")
    from normgrad.reference.pytorch import reference

    for name, shape, option in _EMPTY_CASES:
        spec = ng.get_op(name)
        pshape = spec.param_shape(shape, **option)
        x, dy = np.zeros(shape), np.zeros(shape)
        # PyTorch 2.13's instance_norm with a weight fails at N = 0 (IndexError in
        # select()), so there the weight is left out and only the shapes are compared.
        no_weight = name == "instance_norm" and shape[0] == 0
        gamma = None if no_weight else RNG.standard_normal(pshape)
        y, cache = spec.forward(x, gamma, None, **option)
        dx, dgamma, _ = spec.backward(dy, cache)
        y_t, dx_t, dgamma_t, _ = reference(spec, x, gamma, None, dy, **option)
        assert y_t.shape == y.shape and dx_t.shape == dx.shape, name
        if gamma is not None:
            np.testing.assert_array_equal(dgamma_t, dgamma, err_msg=name)


def test_eval_mode_accepts_an_unused_momentum_and_read_only_running_arrays():
    x = RNG.standard_normal((5, 3))
    rm, rv = RNG.standard_normal(3), RNG.random(3) + 0.5
    rm.flags.writeable = rv.flags.writeable = False
    y_ref, _ = ng.batch_norm_forward(x, None, None, training=False, running_mean=rm.copy(),
                                     running_var=rv.copy())  # fmt: skip
    for momentum in (5.0, -1.0, 0.1):
        y, cache = ng.batch_norm_forward(x, None, None, training=False, running_mean=rm,
                                         running_var=rv, momentum=momentum)  # fmt: skip
        np.testing.assert_array_equal(y, y_ref)
    # training still refuses both: it would use the momentum and write the arrays
    with pytest.raises(ValueError, match=r"momentum must be in \[0, 1\]; got 5.0"):
        ng.batch_norm_forward(x, None, None, running_mean=rm.copy(), running_var=rv.copy(),
                              momentum=5.0)  # fmt: skip
    with pytest.raises(ValueError, match="running_mean must be writeable"):
        ng.batch_norm_forward(x, None, None, running_mean=rm, running_var=rv.copy())


def test_layer_norm_without_affine_checks_its_normalized_shape_as_pytorch():
    torch = pytest.importorskip("torch")
    x = RNG.standard_normal((4, 6))
    with pytest.raises(RuntimeError):
        torch.nn.LayerNorm(5, elementwise_affine=False)(torch.tensor(x))
    for layer in (LayerNorm(5, elementwise_affine=False), RMSNorm(5, elementwise_affine=False)):
        with pytest.raises(ValueError, match=r"normalized_shape=\(5,\).*ends in \(6,\)"):
            layer(x)


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")  # NumPy on inf - inf
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_a_non_finite_batch_leaves_the_running_statistics_and_warns(bad):
    x = RNG.standard_normal((6, 3))
    x[2, 1] = bad
    rm, rv = np.zeros(3), np.ones(3)
    with pytest.warns(NonFiniteStatisticsWarning, match=r"not updated.*NaN/Inf \(channels 1\)"):
        y, _ = ng.batch_norm_forward(x, None, None, running_mean=rm, running_var=rv)
    np.testing.assert_array_equal(rm, 0.0)
    np.testing.assert_array_equal(rv, 1.0)
    assert np.all(np.isfinite(y[:, [0, 2]]))  # the other channels are normalized as ever
    # skip_nonfinite=False: PyTorch's behaviour, the running statistics are poisoned
    with warnings.catch_warnings():
        warnings.simplefilter("error", NonFiniteStatisticsWarning)
        ng.batch_norm_forward(x, None, None, running_mean=rm, running_var=rv,
                              skip_nonfinite=False)  # fmt: skip
    assert not np.isfinite(rv[1]) and np.isfinite(rv[0])


def test_pytorch_poisons_its_running_statistics_where_normgrad_keeps_them():
    torch = pytest.importorskip("torch")
    x = RNG.standard_normal((6, 3))
    x[0, 0] = np.nan
    module = torch.nn.BatchNorm1d(3).double()
    module(torch.tensor(x))
    assert torch.isnan(module.running_mean[0])  # PyTorch: NaN for good
    layer = BatchNorm(3)
    with pytest.warns(NonFiniteStatisticsWarning):
        layer(x)
    np.testing.assert_array_equal(layer.buffers()["running_mean"], 0.0)
    assert int(layer.buffers()["num_batches_tracked"]) == 0  # a skipped batch is not counted
    layer(x[1:])
    assert int(layer.buffers()["num_batches_tracked"]) == 1


def test_a_float32_running_variance_beyond_float32_is_not_written():
    x = (RNG.standard_normal((8, 2)) * 1e30).astype(np.float32)
    rm, rv = np.zeros(2, np.float32), np.ones(2, np.float32)
    with pytest.warns(NonFiniteStatisticsWarning, match=r"beyond the range of float32"):
        y, _ = ng.batch_norm_forward(x, None, None, running_mean=rm, running_var=rv)
    np.testing.assert_array_equal(rv, 1.0)
    np.testing.assert_allclose(y.std(axis=0), 1.0, rtol=1e-5)
    layer = InstanceNorm(2, track_running_stats=True, dtype=np.float32)
    with pytest.warns(NonFiniteStatisticsWarning):
        layer(x.reshape(2, 2, 4))
    np.testing.assert_array_equal(layer.buffers()["running_var"], 1.0)
    assert int(layer.buffers()["num_batches_tracked"]) == 0


@pytest.mark.parametrize("scale", [1e20, 1e30, 1e37])
@pytest.mark.parametrize("name", ["batch_norm", "layer_norm", "group_norm", "rms_norm"])
def test_float32_squares_beyond_float32_do_not_zero_the_output(name, scale):
    """|x - mu| > 1.8e19 squares to more than float32 holds; the variance must not be Inf."""
    x = (RNG.standard_normal((16, 4, 3)) * scale).astype(np.float32)
    option = {"num_groups": 2} if name == "group_norm" else {}
    spec = ng.get_op(name)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y, cache = spec.forward(x, None, None, backend="numpy", **option)
        dx, *_ = spec.backward(np.ones_like(x), cache)
    ref, _ = spec.forward(x.astype(np.float64), None, None, **option)
    assert y.dtype == np.float32 and dx.dtype == np.float32
    np.testing.assert_allclose(y, ref, atol=1e-5)


def test_float32_inputs_whose_difference_leaves_float32_still_normalize():
    x = np.array([[3e38], [-3e38], [3e38], [3e38]], np.float32)
    y, _ = ng.batch_norm_forward(x, None, None, backend="numpy")
    np.testing.assert_allclose(y.ravel(), [1 / 3**0.5, -(3**0.5), 1 / 3**0.5, 1 / 3**0.5], 1e-6)


def test_the_trainer_stops_on_non_finite_running_statistics(tmp_path):
    cfg = TrainConfig(dataset="digits", steps=10, norm="batch_norm")
    trainer = Trainer(cfg, tmp_path)
    huge = trainer.train_split.x * np.float32(1e30)  # finite, but its variance is not float32
    trainer.train_split = Split(huge, trainer.train_split.y)
    before = {k: v.copy() for k, v in trainer.model.buffers().items()}
    with pytest.raises(TrainingDiverged, match=r"at step 1, running statistics not updated"):
        trainer.train_step(0)
    for k, v in trainer.model.buffers().items():
        np.testing.assert_array_equal(v, before[k], err_msg=k)
    # A layer told to update regardless gets Inf; the trainer refuses that too.
    for module in trainer.model.modules():
        if isinstance(module, BatchNorm):
            module.skip_nonfinite = False
    with pytest.raises(TrainingDiverged, match=r"running statistic .*running_var became NaN/Inf"):
        trainer.train_step(0)
